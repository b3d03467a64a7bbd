"""The interface every calibrator implements: ``fit`` on a calibration split, ``transform``,
``save`` (the exported artifact) and ``load``.

A calibrator maps a base pCVR (and, for field-aware methods, the row's field values) to a
calibrated pCVR. ``fit`` computes statistics and parameters only and stores them as an
exported spec (``spec_``, the ``calibrator.json`` of :mod:`calibration.artifact`);
``transform`` evaluates that spec with numpy, so the function that is evaluated here is the one
that Triton serves. Learned state ends in ``_`` (scikit-learn style).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from calibration import artifact as A
from common.atomic import atomic_output_dir


def check_labels(y: Any, n: int, name: str = "purchase") -> np.ndarray:
    """Binary labels as float64; ``ValueError`` naming the column and the bad row count."""
    arr = np.asarray(y).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"{name} must have {n} rows (one per prediction); got {len(arr)}")
    out = arr.astype(np.float64)
    bad = int(((out != 0.0) & (out != 1.0)).sum())
    if bad:
        raise ValueError(f"{name}: {bad} of {n} rows are not binary 0/1 labels")
    return out


class Calibrator:
    """Base class: subclasses set ``name``, take a frozen config dataclass, and implement
    :meth:`_fit_spec` returning the exported stages.

    Args:
        config: the method's frozen, validated config dataclass.
        fields: field columns the method calibrates by (ignored by global methods, whose
            ``field_aware`` is False).
    """

    name = "base"
    field_aware = False

    def __init__(self, config: Any = None, fields: Sequence[str] = ()):
        self.config = config if config is not None else self.default_config()
        if isinstance(fields, str):
            fields = (fields,)
        fields = tuple(fields)
        if self.field_aware and not fields:
            raise ValueError(f"The 'fields' parameter of {self.name} must be a non-empty list "
                             f"of field columns. Got {fields!r} instead.")
        if len(set(fields)) != len(fields):
            raise ValueError(f"The 'fields' parameter must not repeat a column. Got {fields!r}")
        self.fields: Tuple[str, ...] = fields if self.field_aware else ()
        self.spec_: Optional[Dict[str, Any]] = None
        self._artifact: Optional[A.ArtifactCalibrator] = None

    @classmethod
    def default_config(cls):  # pragma: no cover - overridden
        return None

    # ---- fit ---------------------------------------------------------------------------------
    def fit(self, pcvr: Any, y: Any, fields: Optional[Mapping[str, Any]] = None) -> "Calibrator":
        """Fit on a calibration split (disjoint from training and test data).

        Args:
            pcvr: base predictions in [0, 1], shape ``(n,)``.
            y: binary labels (purchase on clicked rows), shape ``(n,)``.
            fields: the field columns named in ``self.fields`` (integer ids).

        Returns:
            self.
        """
        p = A.check_predictions(pcvr)
        labels = check_labels(y, len(p))
        if len(p) == 0:
            raise ValueError("cannot fit a calibrator on 0 rows")
        cols = A.check_fields(fields, self.fields, len(p))
        stages, meta = self._fit_spec(p, labels, cols)
        self.spec_ = {"format": A.FORMAT, "format_version": A.FORMAT_VERSION,
                      "method": self.name, "fields": list(self.fields), "eps": A.DEFAULT_EPS,
                      "stages": stages,
                      "meta": {"n_fit_rows": int(len(p)), "n_fit_positives": int(labels.sum()),
                               "config": _config_dict(self.config), **meta}}
        self._artifact = A.ArtifactCalibrator(self.spec_)
        return self

    def _fit_spec(self, p: np.ndarray, y: np.ndarray,
                  cols: Dict[str, np.ndarray]) -> Tuple[list, Dict[str, Any]]:
        raise NotImplementedError

    # ---- transform / persistence --------------------------------------------------------------
    def _check_fitted(self) -> A.ArtifactCalibrator:
        if self._artifact is None:
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit first")
        return self._artifact

    def transform(self, pcvr: Any, fields: Optional[Mapping[str, Any]] = None) -> np.ndarray:
        """Calibrated pCVR (see :meth:`calibration.artifact.ArtifactCalibrator.transform`)."""
        return self._check_fitted().transform(pcvr, fields)

    def save(self, cal_dir: str) -> str:
        """Write the exported artifact ``CAL_DIR/calibrator.json`` atomically; returns CAL_DIR."""
        self._check_fitted()
        with atomic_output_dir(cal_dir) as staging:
            with open(os.path.join(staging, A.SPEC_FILENAME), "w") as fh:
                fh.write(A.dumps_spec(self.spec_))
        return cal_dir

    @staticmethod
    def load(cal_dir: str) -> A.ArtifactCalibrator:
        """Load a saved calibrator: the numpy-only :class:`ArtifactCalibrator`."""
        return A.load_calibrator(cal_dir)


def _config_dict(config: Any) -> Dict[str, Any]:
    if config is None:
        return {}
    from dataclasses import asdict, is_dataclass
    d = asdict(config) if is_dataclass(config) else dict(config)
    return json.loads(json.dumps(d, default=list))


# --------------------------------------------------------------------------------------------
# shared fitting helpers
# --------------------------------------------------------------------------------------------

def pava(x: np.ndarray, y: np.ndarray, w: Optional[np.ndarray] = None
         ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pool-adjacent-violators: the non-decreasing weighted least-squares fit of ``y`` on ``x``.

    Rows are grouped by unique ``x`` first (weights summed, ``y`` averaged), then adjacent
    blocks that violate monotonicity are pooled.

    Returns:
        ``(x_lo, x_hi, value, weight)`` of the pooled blocks, in increasing ``x``: each block
        covers the unique ``x`` in ``[x_lo, x_hi]`` and has fitted ``value``.

    References:
        Ayer, M. et al. (1955). An empirical distribution function for sampling with incomplete
        information. Ann. Math. Statist. 26(4).
        Zadrozny, B. and Elkan, C. (2002). Transforming classifier scores into accurate
        multiclass probability estimates. KDD 2002.
    """
    w = np.ones(len(x)) if w is None else np.asarray(w, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs, ys, ws = x[order], y[order], w[order]
    ux, start = np.unique(xs, return_index=True)
    wsum = np.add.reduceat(ws, start)
    ysum = np.add.reduceat(ys * ws, start)
    return _pava_blocks(ux, ysum, wsum)


def _pava_blocks(ux: np.ndarray, ysum: np.ndarray, wsum: np.ndarray):
    """PAV over pre-aggregated points (sorted unique ``ux``); a stack of blocks, O(n)."""
    n = len(ux)
    lo = np.empty(n, dtype=np.int64)
    ys_b = np.empty(n)
    ws_b = np.empty(n)
    top = -1
    ysum_l, wsum_l = ysum.tolist(), wsum.tolist()
    lo_l, y_l, w_l = [0] * n, [0.0] * n, [0.0] * n
    for i in range(n):
        top += 1
        lo_l[top], y_l[top], w_l[top] = i, ysum_l[i], wsum_l[i]
        # pool while the previous block's mean exceeds this one's
        while top > 0 and y_l[top - 1] * w_l[top] >= y_l[top] * w_l[top - 1]:
            y_l[top - 1] += y_l[top]
            w_l[top - 1] += w_l[top]
            top -= 1
    k = top + 1
    lo[:k] = lo_l[:k]
    ys_b[:k] = y_l[:k]
    ws_b[:k] = w_l[:k]
    lo, ys_b, ws_b = lo[:k], ys_b[:k], ws_b[:k]
    hi = np.append(lo[1:], n) - 1
    return ux[lo], ux[hi], ys_b / ws_b, ws_b
