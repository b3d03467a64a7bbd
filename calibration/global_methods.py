"""Global calibrators: one function of the base prediction for all rows.

- :class:`PlattCalibrator` (``platt``): ``sigmoid(a logit(p) + b)`` with Platt's target
  smoothing, ``a >= 0``.
- :class:`IsotonicCalibrator` (``isotonic``): pool-adjacent-violators, linear interpolation
  between the block ends, clipped beyond the data (as scikit-learn's ``IsotonicRegression(
  out_of_bounds="clip")``).
- :class:`HistogramCalibrator` (``histogram``): equal-frequency histogram binning, bin rates
  smoothed toward the bin's mean prediction and made monotone by PAV over the bins.
- :class:`SIRCalibrator` (``sir``): smoothed isotonic regression, linear interpolation between
  the centroids of the isotonic blocks.
- :class:`GammaCalibrator` (``gamma``): ``sigmoid(a log(p) + b p + c)`` with ``a, b >= 0``.

They ignore fields: they fix the average and leave each media app's error as it was, which is
what field-aware methods (``neucalib``, ``adacalib``) are measured against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

from calibration.artifact import DEFAULT_EPS, _floats, logit, sigmoid
from calibration.base import Calibrator, _pava_blocks, pava
from common.params import check_param


# --------------------------------------------------------------------------------------------
# Platt
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlattConfig:
    """Platt scaling.

    Args:
        max_iter: Newton iterations (the problem has two parameters and is convex).
        tol: stop when the largest Newton step is below this.
        max_fit_rows: fit on a random subset of at most this many rows (0 = all).
        seed: seed of that subset.
    """

    max_iter: int = 100
    tol: float = 1e-10
    max_fit_rows: int = 1_000_000
    seed: int = 0

    def __post_init__(self):
        check_param(self.max_iter >= 1, "max_iter", ">= 1", self.max_iter)
        check_param(self.tol > 0, "tol", "> 0", self.tol)
        check_param(self.max_fit_rows >= 0, "max_fit_rows", ">= 0", self.max_fit_rows)


def fit_sigmoid(f: np.ndarray, t: np.ndarray, max_iter: int = 100,
                tol: float = 1e-10) -> Tuple[float, float]:
    """Newton's method for ``min_{a,b} CE(t, sigmoid(a f + b))`` (``t`` may be soft targets).

    References:
        Platt, J. (1999). Probabilistic outputs for support vector machines and comparisons to
        regularized likelihood methods. Advances in Large Margin Classifiers (section 2.2).
        Lin, H.-T., Lin, C.-J. and Weng, R. C. (2007). A note on Platt's probabilistic outputs
        for support vector machines. Machine Learning 68(3).
    """
    a, b = 1.0, float(logit(np.clip(t.mean(), 1e-6, 1 - 1e-6)) - f.mean())
    for _ in range(max_iter):
        q = sigmoid(a * f + b)
        r = q - t
        w = np.maximum(q * (1 - q), 1e-12)
        g = np.array([np.dot(r, f), r.sum()])
        h = np.array([[np.dot(w, f * f), np.dot(w, f)], [np.dot(w, f), w.sum()]])
        h[np.diag_indices(2)] += 1e-12
        step = np.linalg.solve(h, g)
        # backtracking line search on the (soft-target) cross-entropy
        def loss(aa, bb):
            z = aa * f + bb
            return float(np.sum(np.logaddexp(0, z) - t * z))
        cur, s = loss(a, b), 1.0
        while s > 1e-8 and loss(a - s * step[0], b - s * step[1]) > cur + 1e-15:
            s *= 0.5
        a, b = a - s * step[0], b - s * step[1]
        if np.max(np.abs(s * step)) < tol:
            break
    return float(a), float(b)


class PlattCalibrator(Calibrator):
    """Platt scaling on the base logit: ``q = sigmoid(a logit(p) + b)``.

    Targets are Platt's smoothed labels ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` (as
    scikit-learn's ``_SigmoidCalibration``). The slope is constrained to ``a >= 0`` so that the
    map is monotone; if the free fit gives ``a < 0`` the intercept alone is fitted.

    References:
        Platt, J. (1999). Probabilistic outputs for support vector machines and comparisons to
        regularized likelihood methods. Advances in Large Margin Classifiers.
    """

    name = "platt"

    @classmethod
    def default_config(cls):
        return PlattConfig()

    def _fit_spec(self, p, y, cols):
        from calibration.neucalib import subsample
        idx = subsample(len(p), self.config.max_fit_rows, self.config.seed)
        p, y = p[idx], y[idx]
        f = logit(p)
        n_pos = y.sum()
        n_neg = len(y) - n_pos
        t = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
        a, b = fit_sigmoid(f, t, self.config.max_iter, self.config.tol)
        if a < 0:
            a, b = 0.0, float(logit(np.array([t.mean()]))[0])
        return [{"type": "global", "function": {"kind": "sigmoid_linear", "a": a, "b": b}}], {}


# --------------------------------------------------------------------------------------------
# isotonic
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IsotonicConfig:
    """Isotonic regression (no hyperparameters)."""


def isotonic_knots(p: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Knots of the isotonic fit of ``y`` on ``p``: both ends of every PAV block (the points
    that scikit-learn's ``IsotonicRegression`` keeps), strictly increasing ``x``."""
    x_lo, x_hi, v, _ = pava(p, y)
    x = np.stack([x_lo, x_hi], axis=1).reshape(-1)
    val = np.repeat(v, 2)
    keep = np.ones(len(x), dtype=bool)
    keep[1:] = x[1:] != x[:-1]                    # a one-point block gives the same x twice
    return x[keep], val[keep]


class IsotonicCalibrator(Calibrator):
    """Isotonic regression of the label on the base prediction.

    The pool-adjacent-violators fit is interpolated linearly between the block ends and
    clipped to its end values beyond the calibration data (scikit-learn's
    ``IsotonicRegression(out_of_bounds="clip")``, the reference in the tests).

    References:
        Zadrozny, B. and Elkan, C. (2002). Transforming classifier scores into accurate
        multiclass probability estimates. KDD 2002.
    """

    name = "isotonic"

    @classmethod
    def default_config(cls):
        return IsotonicConfig()

    def _fit_spec(self, p, y, cols):
        x, v = isotonic_knots(p, y)
        fn = {"kind": "interp", "x_space": "prob", "y_space": "prob", "x": _floats(x),
              "y": _floats(v)}
        return [{"type": "global", "function": fn}], {"n_knots": int(len(x))}


# --------------------------------------------------------------------------------------------
# histogram binning
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HistogramConfig:
    """Histogram binning.

    Args:
        n_bins: equal-frequency bins of the base prediction.
        prior_strength: pseudo-rows that pull a bin's rate toward the bin's mean prediction
            (0 = the raw bin rate); our choice, so that a bin without positives is not 0.
    """

    n_bins: int = 20
    prior_strength: float = 10.0

    def __post_init__(self):
        check_param(isinstance(self.n_bins, int) and self.n_bins >= 1, "n_bins",
                    "an int >= 1", self.n_bins)
        check_param(self.prior_strength >= 0, "prior_strength", ">= 0", self.prior_strength)


class HistogramCalibrator(Calibrator):
    """Histogram binning: the (smoothed) positive rate of the base prediction's bin.

    Bins are equal-frequency on the calibration data; bin rates
    ``(pos_b + m mean_b(p)) / (n_b + m)`` are made non-decreasing by PAV over the bins
    (weighted by bin size), so that the step function is monotone.

    References:
        Zadrozny, B. and Elkan, C. (2001). Obtaining calibrated probability estimates from
        decision trees and naive Bayesian classifiers. ICML 2001.
    """

    name = "histogram"

    @classmethod
    def default_config(cls):
        return HistogramConfig()

    def _fit_spec(self, p, y, cols):
        cfg = self.config
        qs = np.quantile(p, np.linspace(0, 1, cfg.n_bins + 1)[1:-1])
        edges = np.unique(qs)
        ids = np.searchsorted(edges, p, side="right")
        nb = len(edges) + 1
        n = np.bincount(ids, minlength=nb).astype(float)
        pos = np.bincount(ids, weights=y, minlength=nb)
        sp = np.bincount(ids, weights=p, minlength=nb)
        m = cfg.prior_strength
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(n + m > 0, (pos + m * np.where(n > 0, sp / np.maximum(n, 1), 0))
                            / (n + m), 0.0)
        w = np.maximum(n, 1e-9)
        x_lo, _, v, _ = _pava_blocks(np.arange(nb, dtype=float), rate * w, w)
        values = v[np.searchsorted(x_lo, np.arange(nb), side="right") - 1]
        fn = {"kind": "step", "edges": _floats(edges), "values": _floats(values)}
        return [{"type": "global", "function": fn}], {"n_bins": int(nb)}


# --------------------------------------------------------------------------------------------
# smoothed isotonic regression
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SIRConfig:
    """Smoothed isotonic regression (no hyperparameters)."""


class SIRCalibrator(Calibrator):
    """Smoothed isotonic regression: PAV blocks, then linear interpolation between the block
    centroids ``(mean p, block rate)``, constant beyond the first and last centroid.

    Strictly increasing between centroids (PAV pools equal neighbours), so it breaks the ties
    that isotonic regression leaves inside a block and keeps more of the ranking (AUC).

    References:
        Jiang, X. et al. (2011). Smooth isotonic regression: a new method to calibrate
        predictive models. AMIA Summits on Translational Science.
        Deng, C. et al. (2020). Calibrating user response predictions in online advertising.
        ECML-PKDD 2020.
    """

    name = "sir"

    @classmethod
    def default_config(cls):
        return SIRConfig()

    def _fit_spec(self, p, y, cols):
        x_lo, _, v, _ = pava(p, y)
        block = np.searchsorted(x_lo, p, side="right") - 1
        cnt = np.bincount(block, minlength=len(v))
        cx = np.bincount(block, weights=p, minlength=len(v)) / np.maximum(cnt, 1)
        fn = {"kind": "interp", "x_space": "prob", "y_space": "prob", "x": _floats(cx),
              "y": _floats(v)}
        return [{"type": "global", "function": fn}], {"n_knots": int(len(cx))}


# --------------------------------------------------------------------------------------------
# gamma
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GammaConfig:
    """Gamma calibration.

    Args:
        max_iter: L-BFGS-B iterations.
        max_fit_rows: fit on a random subset of at most this many rows (0 = all); three
            parameters need far fewer rows than a 10M-row calibration split.
        seed: seed of that subset.
    """

    max_iter: int = 500
    max_fit_rows: int = 1_000_000
    seed: int = 0

    def __post_init__(self):
        check_param(self.max_iter >= 1, "max_iter", ">= 1", self.max_iter)
        check_param(self.max_fit_rows >= 0, "max_fit_rows", ">= 0", self.max_fit_rows)


class GammaCalibrator(Calibrator):
    """Gamma calibration: ``q = sigmoid(a log(p) + b p + c)``, ``a, b >= 0``.

    The posterior of two gamma class-conditional score densities has this logit; with
    ``a, b >= 0`` it is monotone in ``p``. Fitted by L-BFGS-B on the cross-entropy.

    References:
        Kweon, W., Kang, S. and Yu, H. (2022). Obtaining calibrated probabilities with
        personalized ranking models. AAAI 2022 (Gaussian and Gamma calibration).
    """

    name = "gamma"

    @classmethod
    def default_config(cls):
        return GammaConfig()

    def _fit_spec(self, p, y, cols):
        from scipy.optimize import minimize

        from calibration.neucalib import subsample
        idx = subsample(len(p), self.config.max_fit_rows, self.config.seed)
        p, y = p[idx], y[idx]
        s = np.clip(p, DEFAULT_EPS, 1.0)
        ls = np.log(s)
        n = len(y)

        def f(theta):
            a, b, c = theta
            z = a * ls + b * s + c
            r = (sigmoid(z) - y) / n
            loss = float(np.mean(np.logaddexp(0, z) - y * z))
            return loss, np.array([np.dot(r, ls), np.dot(r, s), r.sum()])

        c0 = float(logit(np.array([np.clip(y.mean(), 1e-6, 1 - 1e-6)]))[0] - ls.mean())
        res = minimize(f, np.array([1.0, 0.0, c0]), jac=True, method="L-BFGS-B",
                       bounds=[(0, None), (0, None), (None, None)],
                       options={"maxiter": self.config.max_iter})
        a, b, c = (float(v) for v in res.x)
        return ([{"type": "global", "function": {"kind": "gamma", "a": max(a, 0.0),
                                                 "b": max(b, 0.0), "c": c}}],
                {"converged": bool(res.success)})
