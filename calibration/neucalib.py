"""NeuCalib: field-aware calibration = a monotone piecewise-linear map of the base logit plus a
field-aware correction (Pan et al., WWW 2020).

``logit(q) = g(logit(p)) + sum_f h_f[z_f]``

- ``g`` (the paper's "univariate calibration") is piecewise linear in the base logit, with knots
  at quantiles of the calibration data and knot values ``c_0 + cumsum(d)``, ``d >= 0``, so it is
  monotone; constant beyond the end knots.
- The field-aware part is, in our version, one learned logit offset per value of each field
  (the paper uses a neural network over the input features; with the calibration fields as
  its only input, a sum of per-value offsets is its first-order form and exports as a table).
  Offsets have an L2 penalty, so a value with little data stays near 0; an unseen value gets 0:
  the global function ``g``.

Fitted jointly by L-BFGS-B on the cross-entropy (bounds ``d >= 0``). Exported as a global
``interp`` stage in logit space followed by one ``logit_offset`` stage per field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from calibration.artifact import _floats, logit, sigmoid
from calibration.base import Calibrator
from common.params import check_param


@dataclass(frozen=True)
class NeuCalibConfig:
    """NeuCalib.

    Args:
        n_knots: knots of the univariate function (quantiles of the base logit).
        l2: L2 penalty on the field offsets, in rows: the objective is
            ``(sum CE + l2 / 2 * sum offset^2) / n``.
        max_iter: L-BFGS-B iterations.
        max_fit_rows: fit on a random subset of at most this many rows (0 = all).
        seed: seed of that subset.
    """

    n_knots: int = 16
    l2: float = 10.0
    max_iter: int = 500
    max_fit_rows: int = 1_000_000
    seed: int = 0

    def __post_init__(self):
        check_param(isinstance(self.n_knots, int) and self.n_knots >= 2, "n_knots",
                    "an int >= 2", self.n_knots)
        check_param(self.l2 >= 0, "l2", ">= 0", self.l2)
        check_param(self.max_iter >= 1, "max_iter", ">= 1", self.max_iter)
        check_param(self.max_fit_rows >= 0, "max_fit_rows", ">= 0", self.max_fit_rows)


def subsample(n: int, max_rows: int, seed: int) -> np.ndarray:
    """Sorted indices of a random subset of at most ``max_rows`` of ``n`` rows (all if 0)."""
    if max_rows == 0 or n <= max_rows:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_rows, replace=False))


def interp_weights(x: np.ndarray, knots: np.ndarray):
    """Segment index ``i`` and fraction ``t`` of each ``x`` among strictly increasing ``knots``
    (clamped beyond the ends), so that ``interp(x) = (1 - t) c[i] + t c[i + 1]``."""
    k = len(knots)
    i = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, k - 2)
    t = np.clip((x - knots[i]) / (knots[i + 1] - knots[i]), 0.0, 1.0)
    return i, t


class NeuCalibCalibrator(Calibrator):
    """Field-aware NeuCalib (see the module docstring).

    References:
        Pan, F. et al. (2020). Field-aware calibration: a simple and empirically strong method
        for reliable probabilistic predictions. WWW 2020.
    """

    name = "neucalib"
    field_aware = True

    @classmethod
    def default_config(cls):
        return NeuCalibConfig()

    def _fit_spec(self, p, y, cols):
        from scipy.optimize import minimize

        cfg = self.config
        idx = subsample(len(p), cfg.max_fit_rows, cfg.seed)
        x = logit(p[idx])
        yy = y[idx]
        n = len(x)
        knots = np.unique(np.quantile(x, np.linspace(0, 1, cfg.n_knots)))
        if len(knots) < 2:
            knots = np.array([knots[0] - 1.0, knots[0] + 1.0])
        k = len(knots)
        seg, t = interp_weights(x, knots)
        vocab, codes = {}, []
        for f in self.fields:
            vals, code = np.unique(cols[f][idx], return_inverse=True)
            vocab[f] = vals
            codes.append(code.reshape(-1))
        sizes = [len(vocab[f]) for f in self.fields]
        n_off = sum(sizes)

        def unpack(theta):
            c = theta[0] + np.concatenate(([0.0], np.cumsum(theta[1:k])))
            offs, pos = [], k
            for s in sizes:
                offs.append(theta[pos:pos + s])
                pos += s
            return c, offs

        def objective(theta):
            c, offs = unpack(theta)
            z = (1 - t) * c[seg] + t * c[seg + 1]
            for code, off in zip(codes, offs):
                z = z + off[code]
            loss = np.sum(np.logaddexp(0, z) - yy * z)
            r = sigmoid(z) - yy
            g_c = (np.bincount(seg, weights=(1 - t) * r, minlength=k)
                   + np.bincount(seg + 1, weights=t * r, minlength=k))
            grad = np.empty_like(theta)
            grad[0] = g_c.sum()
            grad[1:k] = np.cumsum(g_c[::-1])[::-1][1:]
            pos = k
            for code, off, s in zip(codes, offs, sizes):
                grad[pos:pos + s] = np.bincount(code, weights=r, minlength=s) + cfg.l2 * off
                loss += 0.5 * cfg.l2 * float(np.dot(off, off))
                pos += s
            return loss / n, grad / n

        theta0 = np.concatenate(([knots[0]], np.diff(knots), np.zeros(n_off)))
        bounds = [(None, None)] + [(0.0, None)] * (k - 1) + [(None, None)] * n_off
        res = minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": cfg.max_iter})
        c, offs = unpack(res.x)
        c = np.maximum.accumulate(c)                 # exact monotonicity after float rounding
        stages = [{"type": "global", "function": {"kind": "interp", "x_space": "logit",
                                                  "y_space": "logit", "x": _floats(knots),
                                                  "y": _floats(c)}}]
        for f, off in zip(self.fields, offs):
            stages.append({"type": "logit_offset", "field": f,
                           "values": [int(v) for v in vocab[f]], "offsets": _floats(off)})
        meta: Dict = {"n_knots": int(k), "converged": bool(res.success),
                      "n_values": {f: len(vocab[f]) for f in self.fields}}
        return stages, meta
