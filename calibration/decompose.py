"""Where the per-app error that survives calibration comes from, measured with the ground truth.

Synthetic data carries every impression's true ``p_purchase_given_click`` (``p``), so the
test-day Field-RCE by app of a calibrated ``q`` against the labels ``y`` splits into

- **label noise**: ``sum_app (y - p)``, what even the true probabilities score (the floor);
- **the calibrated level's error against the truth**, ``sum_app (p - q)``, reported as the
  *Field-RCE against the truth* (:func:`field_rce_truth`: ``y`` replaced by ``p``).

The second part is taken apart by refitting the same method on ground-truth labels
(:func:`drift_decomposition`), each fit on ``replicates`` independent Bernoulli(``p``) draws of
the labels of the same rows (a calibration day ``replicates`` times larger, no other change):

1. *capacity*: fitted on the **test day's** truth, the error the method leaves even when it
   sees the day it is judged on (a global method: the per-app level it cannot express);
2. *+ drift*: fitted on the **calibration day's** truth: adds what changed from day 5 to day 6
   (``app.cvr_trend``), which no calibrator fitted on day 5 can see;
3. *+ estimation*: fitted on the calibration day's **labels** (the real fit): adds the
   sampling noise of one day of clicks (~1,100 purchases).

Field-RCE by app sums each app's rows, so it sees the level of each app's calibration only.
Whether the per-app error is *level* or *shape* is measured on the test day's truth by the
excess log loss over the true probabilities, ``KL(p || q)`` per clicked row
(:func:`kl_decomposition`):

- *level*: what the best per-app logit offset removes (it matches each app's predicted sum to
  the true sum; for log loss that offset is optimal);
- *shape*: what, beyond that, the best per-app affine map of the logit (``a logit(q) + b``,
  fitted to the truth) removes: the app's curve too steep or too flat. Two parameters per app
  fit no noise; a free-form monotone fit (PAV) of 5k rows would (in-sample, it credits the
  truth's spread at equal ``q`` to shape; cross-fitted, it adds its own noise);
- *refinement*: what is left: ranking error that no per-app calibrator can fix, plus curvature
  beyond the slope.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from models import metrics as M
from calibration.artifact import logit, sigmoid

#: Column of the true purchase-given-click probability (synthetic data only).
TRUTH = "p_purchase_given_click"


def field_rce_truth(p_true: np.ndarray, q: np.ndarray, field: np.ndarray) -> float:
    """Field-RCE of ``q`` against the true probabilities instead of labels:
    ``(1/N) sum_z N_z |sum_z (p - q)| / sum_z p``, the level error without label noise."""
    n, counts, sum_p, sum_q = _sums(p_true, q, field)
    return float(np.sum(counts * np.abs(sum_p - sum_q) / np.maximum(sum_p, 1e-300)) / n)


def level_errors(p_true: np.ndarray, q: np.ndarray, field: np.ndarray) -> Dict[int, float]:
    """Per value: ``sum(q) / sum(p) - 1``, the signed relative level error against the truth."""
    vals, code = np.unique(field, return_inverse=True)
    sp = np.bincount(code.reshape(-1), weights=p_true, minlength=len(vals))
    sq = np.bincount(code.reshape(-1), weights=q, minlength=len(vals))
    return {int(v): float(b / a - 1.0) for v, a, b in zip(vals, sp, sq)}


def _sums(a, b, field):
    vals, code = np.unique(field, return_inverse=True)
    code = code.reshape(-1)
    counts = np.bincount(code, minlength=len(vals))
    return (len(a), counts, np.bincount(code, weights=a, minlength=len(vals)),
            np.bincount(code, weights=b, minlength=len(vals)))


def replicated_truth_labels(p_true: np.ndarray, replicates: int, seed: int):
    """Row indices repeated ``replicates`` times and one Bernoulli(``p``) label per copy."""
    rng = np.random.default_rng(seed)
    idx = np.tile(np.arange(len(p_true)), replicates)
    y = (rng.random(len(idx)) < p_true[idx]).astype(np.int64)
    return idx, y


def drift_decomposition(fit: Mapping[str, np.ndarray], evaluation: Mapping[str, np.ndarray],
                        variant, fields: Sequence[str], field: str = "app_id",
                        replicates: int = 20, seed: int = 0,
                        history: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, Any]:
    """The test-day Field-RCE by ``field`` of one calibrator, fitted three ways (module
    docstring): on the test day's truth, on the calibration day's truth, on its labels.

    Args:
        fit, evaluation: calibration-day and test-day frames (``click``, ``purchase``,
            ``pcvr``, the truth column, the fields; ``day`` for history methods).
        variant: a :class:`calibration.calibrate.Variant` (None: the uncalibrated base).
        history: earlier days, for methods that use them (their labels stay the real ones).

    Returns:
        ``field_rce_truth`` of each fit (``capacity``, ``drift``, ``estimation``: cumulative,
        in that order), ``field_rce_observed`` (against labels), ``floor`` (the true
        probabilities against labels) and the signed per-value level errors of each fit.
    """
    from calibration.calibrate import Variant, fit_variant, uses_history
    ev = _clicked(evaluation)
    z = ev[field]
    out: Dict[str, Any] = {"floor": M.field_rce(ev["purchase"], ev[TRUTH], z)}
    if variant is None:
        q = ev["pcvr"]
        stages = {"capacity": q, "drift": q, "estimation": q}
    else:
        stages = {}
        for stage, frame in (("capacity", evaluation), ("drift", fit), ("estimation", fit)):
            src = _clicked(frame)
            if stage != "estimation":
                idx, y = replicated_truth_labels(src[TRUTH], replicates, seed)
                src = {**{k: v[idx] for k, v in src.items()}, "purchase": y}
                if "day" in fit:
                    src["day"] = np.full(len(idx), int(np.max(fit["day"])))
            v = variant
            if stage == "capacity" and uses_history(variant.method):
                # on the test day's own truth there is nothing to extrapolate: the base method
                cfg = variant.config or _default_config(variant.method)
                base_cfg = type(_default_config(cfg.base))(**cfg.base_config)
                v = Variant(variant.name, cfg.base, base_cfg)
            _, q, _, _ = fit_variant(v, src, ev, fields, history)
            stages[stage] = q
    out["field_rce_truth"] = {s: field_rce_truth(ev[TRUTH], q, z) for s, q in stages.items()}
    out["level_error"] = {s: level_errors(ev[TRUTH], q, z) for s, q in stages.items()}
    out["field_rce_observed"] = M.field_rce(ev["purchase"], stages["estimation"], z)
    out["kl"] = kl_decomposition(ev[TRUTH], stages["estimation"], z)
    return out


def _default_config(method: str):
    from calibration import METHODS
    return METHODS[method].default_config()


def _clicked(frame: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    keep = np.asarray(frame["click"]) == 1
    return {k: np.asarray(v)[keep] for k, v in frame.items()
            if np.ndim(v) == 1 and len(v) == len(keep)}


def kl(p_true: np.ndarray, q: np.ndarray, eps: float = 1e-7) -> float:
    """Mean ``KL(Bernoulli(p) || Bernoulli(q))``: the expected log loss of ``q`` minus that of
    the truth."""
    p = np.clip(p_true, eps, 1 - eps)
    q = np.clip(q, eps, 1 - eps)
    return float(np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))))


def kl_decomposition(p_true: np.ndarray, q: np.ndarray, field: np.ndarray) -> Dict[str, float]:
    """``KL(p || q)`` split into per-value level, per-value shape and refinement (module
    docstring), each in nats per row; ``level + shape + refinement == total``.

    Level: the best per-value logit offset. Shape: what the best per-value *affine* map of the
    logit, ``a_v logit(q) + b_v``, removes beyond that (the slope: how much steeper or flatter
    the value's calibration curve is; two parameters per value, fitted to the truth, so the
    estimate does not fit noise). Refinement: the rest, ranking error plus curvature no
    affine map can fix.
    """
    from calibration.adacalib import level_offset
    q_level = np.empty_like(q)
    q_shape = np.empty_like(q)
    x = logit(np.clip(q, 1e-7, 1 - 1e-7))
    for v in np.unique(field):
        rows = np.flatnonzero(field == v)
        o, _ = level_offset(x[rows], float(p_true[rows].sum()), 1e-12)
        q_level[rows] = sigmoid(x[rows] + o)
        a, b = affine_logit_fit(x[rows], p_true[rows], start=(1.0, o))
        q_shape[rows] = sigmoid(a * x[rows] + b)
    total, after_level, after_shape = kl(p_true, q), kl(p_true, q_level), kl(p_true, q_shape)
    return {"total": total, "level": total - after_level, "shape": after_level - after_shape,
            "refinement": after_shape}


def affine_logit_fit(x: np.ndarray, target: np.ndarray, start=(1.0, 0.0),
                     iterations: int = 50) -> tuple:
    """``(a, b)`` minimising the cross-entropy of ``sigmoid(a x + b)`` against soft labels
    ``target`` (Newton's method on the two parameters)."""
    a, b = float(start[0]), float(start[1])
    for _ in range(iterations):
        s = sigmoid(a * x + b)
        r = s - target
        w = s * (1 - s)
        g = np.array([np.sum(r * x), np.sum(r)])
        h = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
        try:
            step = np.linalg.solve(h + 1e-9 * np.eye(2), g)
        except np.linalg.LinAlgError:
            break
        a, b = a - float(step[0]), b - float(step[1])
        if np.max(np.abs(step)) < 1e-10:
            break
    return a, b
