"""Marvell: the optimised gradient perturbation of Li et al., "Label Leakage and Protection in
Two-party Split Learning" (ICLR 2022), Section 4.2, and the bound on any attacker's leak AUC
that it minimises.

Model (the paper's): within a batch, the gradients of the two classes are Gaussian,
``g | y=1 ~ N(m1, v I)`` and ``g | y=0 ~ N(m0, u I)`` in ``d`` dimensions, with ``p`` the share
of positives. The label party adds class-dependent Gaussian noise ``N(0, S_y)`` and chooses the
covariances that minimise the symmetrised KL divergence of the two perturbed distributions,

    sumKL = KL(P~1 || P~0) + KL(P~0 || P~1),

under a power budget ``p tr(S_1) + (1 - p) tr(S_0) <= power``. The optimum has the form
``S_y = a_y e e^T + b_y (I - e e^T)`` with ``e`` the unit vector of ``m1 - m0`` (the paper's
Theorem 2), so the problem has four scalars. With ``q = ||m1 - m0||^2``::

    2 sumKL + 2d = (d-1) [ (u+b0)/(v+b1) + (v+b1)/(u+b0) ]
                 + (u+a0+q)/(v+a1) + (v+a1+q)/(u+a0)

:func:`solve` minimises it: the orthogonal directions only need the two classes' variances made
equal (the ratio term is 2 then, its minimum), so the noise goes to the smaller-variance class
there, and the rest of the budget goes along ``e``; a bounded 1-D search over the split between
the two, and one over the split along ``e`` between the classes, give the optimum (the solver is
ours; the objective and the form of the solution are the paper's).

The bound: for any scoring function ``r`` of a perturbed gradient, the leak AUC
``P(r(G1) > r(G0))`` satisfies ``2 AUC - 1 <= TV(P~1 x P~0, P~0 x P~1) <=
sqrt(KL(P~1 x P~0 || P~0 x P~1) / 2) = sqrt(sumKL / 2)`` (the event ``r(a) > r(b)`` has
probability AUC under the first product and 1 - AUC under the second; Pinsker's inequality),
so ``AUC <= 1/2 + sqrt(sumKL / 8)`` (:func:`auc_bound`). It holds for one example's gradient
under the Gaussian model above; it does not bound an attacker who pools the same example's
gradients over several steps (each epoch's gradient of a sample is perturbed afresh).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.optimize import minimize_scalar


@dataclass(frozen=True)
class MarvellNoise:
    """The per-class noise covariances ``S_y = along_y e e^T + across_y (I - e e^T)`` and the
    sumKL they leave."""

    along0: float
    across0: float
    along1: float
    across1: float
    sum_kl: float

    def power(self, p: float, d: int) -> float:
        """``p tr(S_1) + (1 - p) tr(S_0)``."""
        return (p * (self.along1 + (d - 1) * self.across1)
                + (1 - p) * (self.along0 + (d - 1) * self.across0))


def sum_kl(u: float, v: float, d: int, q: float, along0: float, across0: float, along1: float,
           across1: float) -> float:
    """sumKL of ``N(m0, u I + S_0)`` and ``N(m1, v I + S_1)`` with ``||m1 - m0||^2 = q``
    (module docstring)."""
    a0, a1, b0, b1 = u + along0, v + along1, u + across0, v + across1
    if min(a0, a1) <= 0 or (d > 1 and min(b0, b1) <= 0):
        return math.inf
    across = (d - 1) * (b0 / b1 + b1 / b0) if d > 1 else 0.0
    return 0.5 * (across + (a0 + q) / a1 + (a1 + q) / a0) - d


def _along(u: float, v: float, q: float, p: float, budget: float):
    """The best split of ``budget`` along ``e``: ``(along0, along1)`` with
    ``(1 - p) along0 + p along1 = budget``."""
    if budget <= 0:
        return 0.0, 0.0

    def objective(along0: float) -> float:
        along1 = max((budget - (1 - p) * along0) / p, 0.0)
        a0, a1 = u + along0, v + along1
        if a0 <= 0 or a1 <= 0:
            return math.inf
        return (a0 + q) / a1 + (a1 + q) / a0

    top = budget / (1 - p)
    best = minimize_scalar(objective, bounds=(0.0, top), method="bounded",
                           options={"xatol": 1e-9 * max(top, 1e-30)})
    candidates = [0.0, top, float(best.x)]
    along0 = min(candidates, key=objective)
    return along0, max((budget - (1 - p) * along0) / p, 0.0)


def solve(u: float, v: float, d: int, q: float, p: float, power: float) -> MarvellNoise:
    """The noise that minimises sumKL under the power budget (module docstring).

    Args:
        u, v: per-coordinate gradient variance of the negatives and of the positives.
        d: the gradient's dimension.
        q: ``||m1 - m0||^2``, the squared distance of the class means.
        p: the share of positives, in (0, 1).
        power: the budget ``p tr(S_1) + (1 - p) tr(S_0)``.

    Raises:
        ValueError: an argument out of range.
    """
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if min(u, v, q, power) < 0 or d < 1:
        raise ValueError(f"u, v, q, power must be >= 0 and d >= 1, got {u, v, q, power, d}")
    # Across e: equalising the variances (noise on the smaller side) is all that helps.
    gap = abs(v - u)
    share = (1 - p) if u < v else p  # the weight of the class that gets the noise
    full = share * (d - 1) * gap  # the power that equalises them completely

    def split(spent: float):
        fill = spent / (share * (d - 1)) if d > 1 and share > 0 else 0.0
        across0, across1 = (fill, 0.0) if u < v else (0.0, fill)
        along0, along1 = _along(u, v, q, p, power - spent)
        return along0, across0, along1, across1

    def objective(spent: float) -> float:
        return sum_kl(u, v, d, q, *split(spent))

    top = min(full, power) if d > 1 else 0.0
    if top > 0:
        best = minimize_scalar(objective, bounds=(0.0, top), method="bounded",
                               options={"xatol": 1e-9 * top})
        spent = min([0.0, top, float(best.x)], key=objective)
    else:
        spent = 0.0
    along0, across0, along1, across1 = split(spent)
    return MarvellNoise(along0, across0, along1, across1,
                        sum_kl(u, v, d, q, along0, across0, along1, across1))


def auc_bound(sum_kl_value: float) -> float:
    """The largest leak AUC any scoring function can reach: ``1/2 + sqrt(sumKL / 8)``, capped at
    1 (module docstring)."""
    return min(1.0, 0.5 + math.sqrt(max(sum_kl_value, 0.0) / 8.0))


class MarvellState:
    """What Marvell carries from batch to batch: the direction ``e`` and the noise of the last
    batch that held both classes. A batch of one class (most batches, conversions being rare)
    gets that noise for its class, so that the noise level does not tell the media which
    batches hold a conversion."""

    def __init__(self):
        self.direction: Optional[np.ndarray] = None
        self.noise: Optional[MarvellNoise] = None


def _add_noise(g, y, e, noise, rng):
    n, d = g.shape
    z = rng.standard_normal((n, d))
    along = z @ e
    across = z - np.outer(along, e)
    sd_along = np.where(y, math.sqrt(noise.along1), math.sqrt(noise.along0))
    sd_across = np.where(y, math.sqrt(noise.across1), math.sqrt(noise.across0))
    return g + np.outer(along * sd_along, e) + across * sd_across[:, None]


def perturb(grads: np.ndarray, labels: np.ndarray, power_scale: float,
            rng: np.random.Generator, state: Optional[MarvellState] = None):
    """Marvell noise for one batch: estimates the class means, per-coordinate variances and
    positive share from ``grads`` (``(n, d)``) and ``labels``, solves for the budget
    ``power_scale * ||m1 - m0||^2`` (the paper's power parameterisation) and adds the noise.
    With fewer than two positives the positives' variance is taken to be the negatives' (one
    sample has no spread to estimate).

    A batch of one class (or with equal class means) gets the noise of the last batch that had
    both (``state``); before the first such batch, isotropic noise of ``power_scale`` times the
    batch's mean squared gradient norm, the same for every row.

    Returns:
        ``(perturbed gradients, MarvellNoise solved for this batch or None)``.
    """
    g = np.asarray(grads, dtype=np.float64)
    y = np.asarray(labels).reshape(-1) > 0
    n, d = g.shape
    q = 0.0
    if y.any() and not y.all():
        m1, m0 = g[y].mean(axis=0), g[~y].mean(axis=0)
        diff = m1 - m0
        q = float(diff @ diff)
    if q == 0.0:
        if state is not None and state.noise is not None:
            return _add_noise(g, y, state.direction, state.noise, rng), None
        scale = math.sqrt(power_scale * float(np.mean(np.sum(g * g, axis=1))) / d)
        return g + rng.standard_normal((n, d)) * scale, None
    u = float(((g[~y] - m0) ** 2).sum() / ((~y).sum() * d))
    v = float(((g[y] - m1) ** 2).sum() / (y.sum() * d)) if y.sum() >= 2 else u
    noise = solve(u, v, d, q, float(y.mean()), power_scale * q)
    e = diff / math.sqrt(q)
    if state is not None:
        state.direction, state.noise = e, noise
    return _add_noise(g, y, e, noise, rng), noise
