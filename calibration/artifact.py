"""The exported calibrator: a JSON table that numpy alone evaluates (the Triton calibrate step).

This module imports only numpy and the standard library (no TensorFlow, no scikit-learn): the
Triton Python backend imports it on every server start. Every calibration method of
``calibration`` exports to this one format, and a fitted calibrator's own ``transform``
evaluates its exported form through :class:`ArtifactCalibrator`, so the served function is the
evaluated one by construction.

Usage (serving)::

    from calibration.artifact import load_calibrator
    cal = load_calibrator(CAL_DIR)              # CAL_DIR/calibrator.json
    q = cal.transform(pcvr, {f: batch[f] for f in cal.fields})
    pctcvr = pctr * q                            # calibrated pCTCVR = pCTR x calibrated pCVR

Format (``calibrator.json``, ``format_version`` 1)
-------------------------------------------------
::

    {"format": "extcvr.calibrator", "format_version": 1, "method": "adacalib",
     "fields": ["app_id", "category_id"], "eps": 1e-7,
     "stages": [STAGE, ...], "meta": {...}}

The calibrated pCVR is the base pCVR passed through the stages in order (a composition of
monotone maps, hence monotone). A stage is one of:

- ``{"type": "global", "function": F}``: ``q <- F(q)`` on every row.
- ``{"type": "per_value", "field": NAME, "values": [v, ...], "x_space": S, "y_space": S,
  "x": [[...], ...], "y": [[...], ...], "fallback": F}``: rows whose field value is ``values[i]``
  get the piecewise-linear function with knots ``(x[i], y[i])`` (non-decreasing ``y``; constant
  beyond the end knots); rows with any other value (unseen during fit) get ``fallback``.
- ``{"type": "logit_offset", "field": NAME, "values": [...], "offsets": [...]}``:
  ``logit(q) <- logit(q) + offsets[i]`` for rows with value ``values[i]``, unchanged otherwise.

Functions ``F``:

- ``{"kind": "identity"}``;
- ``{"kind": "sigmoid_linear", "a": A, "b": B}``: ``sigmoid(A logit(q) + B)`` (Platt), ``A >= 0``;
- ``{"kind": "gamma", "a": A, "b": B, "c": C}``: ``sigmoid(A log(q) + B q + C)``, ``A, B >= 0``;
- ``{"kind": "interp", "x_space": S, "y_space": S, "x": [...], "y": [...]}``: piecewise linear
  between the knots, constant beyond the end knots;
- ``{"kind": "step", "edges": [...], "values": [...]}``: ``values[k]`` for
  ``edges[k-1] <= q < edges[k]`` (``len(values) == len(edges) + 1``).

``S`` is ``"prob"`` (the probability itself) or ``"logit"`` (``log(q / (1 - q))`` of ``q``
clipped to ``[eps, 1 - eps]``). Field values are the integer values of the field columns as the
processed Parquet holds them (Categorify codes). All numbers are JSON floats, written with
``repr`` precision, so a save/load round trip reproduces the function exactly.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["FORMAT", "FORMAT_VERSION", "SPEC_FILENAME", "ArtifactCalibrator", "load_calibrator",
           "load_spec", "check_predictions", "check_fields", "logit", "sigmoid"]

FORMAT = "extcvr.calibrator"
FORMAT_VERSION = 1
SPEC_FILENAME = "calibrator.json"
DEFAULT_EPS = 1e-7
_SPACES = ("prob", "logit")


# --------------------------------------------------------------------------------------------
# helpers shared with the fitting code
# --------------------------------------------------------------------------------------------

def logit(q: np.ndarray, eps: float = DEFAULT_EPS) -> np.ndarray:
    """``log(q / (1 - q))`` of ``q`` clipped to ``[eps, 1 - eps]``."""
    qc = np.clip(np.asarray(q, dtype=np.float64), eps, 1.0 - eps)
    return np.log(qc) - np.log1p(-qc)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow warnings."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def check_predictions(p: Any, name: str = "pcvr") -> np.ndarray:
    """``p`` as a 1-D float64 vector in [0, 1]; ``ValueError`` naming ``name`` and the number of
    offending rows otherwise (NaN, infinite, or outside [0, 1])."""
    arr = np.asarray(p)
    if arr.ndim == 2 and arr.shape[1] == 1:          # Triton batches arrive as (n, 1)
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}")
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}") from e
    n = len(arr)
    bad_nan = int(np.isnan(arr).sum())
    if bad_nan:
        raise ValueError(f"{name}: {bad_nan} of {n} rows are NaN")
    bad_range = int(((arr < 0.0) | (arr > 1.0)).sum())
    if bad_range:
        raise ValueError(f"{name}: {bad_range} of {n} rows are outside [0, 1] "
                         f"(min {arr.min()!r}, max {arr.max()!r})")
    return arr


def check_fields(fields: Optional[Mapping[str, Any]], needed: Sequence[str],
                 n: int) -> Dict[str, np.ndarray]:
    """The ``needed`` field columns of ``fields`` as 1-D int64 vectors of length ``n``.

    Raises ``ValueError`` that names the column when one is missing, has another length, or
    holds values that are not integers (NaN included).
    """
    fields = fields if fields is not None else {}
    out = {}
    for name in needed:
        if name not in fields or fields[name] is None:
            raise ValueError(f"field column '{name}' is missing ({n} rows; the calibrator needs "
                             f"{list(needed)}, got {sorted(fields)})")
        col = np.asarray(fields[name])
        if col.ndim == 2 and col.shape[1] == 1:
            col = col.reshape(-1)
        if col.ndim != 1 or len(col) != n:
            raise ValueError(f"field column '{name}' must be 1-D with {n} rows; got shape "
                             f"{col.shape}")
        if col.dtype.kind in "iub":
            out[name] = col.astype(np.int64, copy=False)
            continue
        try:
            fcol = col.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"field column '{name}' must hold integer ids; got dtype "
                             f"{col.dtype}") from e
        bad = int((~np.isfinite(fcol) | (fcol != np.round(fcol))).sum())
        if bad:
            raise ValueError(f"field column '{name}': {bad} of {n} rows are not integer ids "
                             "(NaN or fractional)")
        out[name] = fcol.astype(np.int64)
    return out


# --------------------------------------------------------------------------------------------
# functions
# --------------------------------------------------------------------------------------------

def _to_space(q: np.ndarray, space: str, eps: float) -> np.ndarray:
    return q if space == "prob" else logit(q, eps)


def _from_space(v: np.ndarray, space: str) -> np.ndarray:
    return v if space == "prob" else sigmoid(v)


def _check_function(f: Mapping[str, Any], where: str) -> None:
    kind = f.get("kind")
    if kind == "identity":
        return
    if kind == "sigmoid_linear":
        if not f["a"] >= 0:
            raise ValueError(f"{where}: sigmoid_linear slope a must be >= 0; got {f['a']}")
        return
    if kind == "gamma":
        if not (f["a"] >= 0 and f["b"] >= 0):
            raise ValueError(f"{where}: gamma a and b must be >= 0; got {f['a']}, {f['b']}")
        return
    if kind == "interp":
        if f["x_space"] not in _SPACES or f["y_space"] not in _SPACES:
            raise ValueError(f"{where}: x_space / y_space must be one of {_SPACES}")
        _check_knots(f["x"], f["y"], where)
        return
    if kind == "step":
        e, v = np.asarray(f["edges"], float), np.asarray(f["values"], float)
        if len(v) != len(e) + 1 or np.any(np.diff(e) < 0) or np.any(np.diff(v) < 0):
            raise ValueError(f"{where}: step needs sorted edges and len(values) == "
                             "len(edges) + 1 non-decreasing values")
        return
    raise ValueError(f"{where}: unknown function kind {kind!r}")


def _check_knots(x: Sequence[float], y: Sequence[float], where: str) -> None:
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if xa.ndim != 1 or len(xa) < 1 or xa.shape != ya.shape:
        raise ValueError(f"{where}: interp knots must be two 1-D lists of equal, non-zero "
                         f"length; got {xa.shape} and {ya.shape}")
    if np.any(np.diff(xa) <= 0) or np.any(np.diff(ya) < 0) or not np.all(np.isfinite(ya)):
        raise ValueError(f"{where}: interp knots need strictly increasing x and "
                         "non-decreasing finite y")


def apply_function(f: Mapping[str, Any], q: np.ndarray, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Evaluate one exported function ``F`` (see the module docstring) on probabilities ``q``."""
    kind = f["kind"]
    if kind == "identity":
        return q.copy()
    if kind == "sigmoid_linear":
        return sigmoid(f["a"] * logit(q, eps) + f["b"])
    if kind == "gamma":
        qc = np.clip(q, eps, 1.0)
        return sigmoid(f["a"] * np.log(qc) + f["b"] * qc + f["c"])
    if kind == "interp":
        x = np.asarray(f["x"], dtype=np.float64)
        y = np.asarray(f["y"], dtype=np.float64)
        return _from_space(np.interp(_to_space(q, f["x_space"], eps), x, y), f["y_space"])
    if kind == "step":
        edges = np.asarray(f["edges"], dtype=np.float64)
        values = np.asarray(f["values"], dtype=np.float64)
        return values[np.searchsorted(edges, q, side="right")]
    raise ValueError(f"unknown function kind {kind!r}")


def _value_index(values: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Index of each row's value in the sorted ``values``, -1 where the value is unseen."""
    if len(values) == 0:
        return np.full(len(col), -1, dtype=np.int64)
    idx = np.searchsorted(values, col)
    idx_c = np.minimum(idx, len(values) - 1)
    found = values[idx_c] == col
    return np.where(found, idx_c, -1).astype(np.int64)


# --------------------------------------------------------------------------------------------
# the calibrator
# --------------------------------------------------------------------------------------------

class ArtifactCalibrator:
    """An exported calibrator: evaluates the stages of a ``calibrator.json`` spec with numpy.

    Args:
        spec: the parsed ``calibrator.json`` (see the module docstring).

    Attributes:
        fields: the field columns that :meth:`transform` needs, in stage order.
        method: the name of the method that produced the artifact.
    """

    def __init__(self, spec: Mapping[str, Any]):
        if spec.get("format") != FORMAT:
            raise ValueError(f"not a calibrator artifact: format {spec.get('format')!r}, "
                             f"expected {FORMAT!r}")
        if spec.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported calibrator format_version "
                             f"{spec.get('format_version')!r} (this reader: {FORMAT_VERSION})")
        self.spec = spec
        self.method = str(spec.get("method", "?"))
        self.eps = float(spec.get("eps", DEFAULT_EPS))
        self.fields: Tuple[str, ...] = tuple(spec.get("fields", ()))
        self._stages = [self._prepare(i, s) for i, s in enumerate(spec["stages"])]
        used = {s["field"] for s in spec["stages"] if "field" in s}
        if not used <= set(self.fields):
            raise ValueError(f"stages use fields {sorted(used)} not listed in 'fields' "
                             f"{list(self.fields)}")

    def _prepare(self, i: int, stage: Mapping[str, Any]) -> Dict[str, Any]:
        where = f"stage {i} ({stage.get('type')})"
        t = stage.get("type")
        if t == "global":
            _check_function(stage["function"], where)
            return dict(stage)
        if t == "per_value":
            values = np.asarray(stage["values"], dtype=np.int64)
            if np.any(np.diff(values) <= 0):
                raise ValueError(f"{where}: values must be strictly increasing")
            if len(stage["x"]) != len(values) or len(stage["y"]) != len(values):
                raise ValueError(f"{where}: one knot list per value is needed")
            xs = [np.asarray(x, dtype=np.float64) for x in stage["x"]]
            ys = [np.asarray(y, dtype=np.float64) for y in stage["y"]]
            for v, x, y in zip(values, xs, ys):
                _check_knots(x, y, f"{where} value {v}")
            _check_function(stage["fallback"], f"{where} fallback")
            if stage["x_space"] not in _SPACES or stage["y_space"] not in _SPACES:
                raise ValueError(f"{where}: x_space / y_space must be one of {_SPACES}")
            return {**stage, "_values": values, "_xs": xs, "_ys": ys}
        if t == "logit_offset":
            values = np.asarray(stage["values"], dtype=np.int64)
            offsets = np.asarray(stage["offsets"], dtype=np.float64)
            if np.any(np.diff(values) <= 0) or values.shape != offsets.shape:
                raise ValueError(f"{where}: values must be strictly increasing, one offset each")
            return {**stage, "_values": values, "_offsets": offsets}
        raise ValueError(f"{where}: unknown stage type {t!r}")

    def transform(self, pcvr: Any, fields: Optional[Mapping[str, Any]] = None) -> np.ndarray:
        """Calibrated pCVR of every row.

        Args:
            pcvr: base predictions, shape ``(n,)`` or ``(n, 1)``, in [0, 1].
            fields: the columns named in :attr:`fields` (integer ids, ``n`` rows each); extra
                columns are ignored.

        Returns:
            float64 array of shape ``(n,)`` in [0, 1], non-decreasing in ``pcvr`` for fixed
            field values.

        Raises:
            ValueError: NaN or out-of-range predictions, a missing or malformed field column
                (the message names the column and the row count).
        """
        q = check_predictions(pcvr)
        cols = check_fields(fields, self.fields, len(q))
        for stage in self._stages:
            q = self._apply_stage(stage, q, cols)
        return np.clip(q, 0.0, 1.0)

    def _apply_stage(self, stage: Dict[str, Any], q: np.ndarray,
                     cols: Dict[str, np.ndarray]) -> np.ndarray:
        t = stage["type"]
        if t == "global":
            return apply_function(stage["function"], q, self.eps)
        if t == "logit_offset":
            if len(stage["_values"]) == 0:               # no value has an offset
                return q
            idx = _value_index(stage["_values"], cols[stage["field"]])
            off = np.where(idx >= 0, stage["_offsets"][np.maximum(idx, 0)], 0.0)
            return sigmoid(logit(q, self.eps) + off)
        # per_value: rows grouped by value (one stable sort), one np.interp per value
        idx = _value_index(stage["_values"], cols[stage["field"]])
        out = np.empty_like(q)
        unseen = idx < 0
        if unseen.any():
            out[unseen] = apply_function(stage["fallback"], q[unseen], self.eps)
        if unseen.all():
            return out
        x_in = _to_space(q, stage["x_space"], self.eps)
        order = np.argsort(idx, kind="stable")
        counts = np.bincount(idx[~unseen], minlength=len(stage["_values"]))
        start = int(unseen.sum())                     # idx == -1 sorts first
        y_space = stage["y_space"]
        for k, c in enumerate(counts):
            if c == 0:
                continue
            rows = order[start:start + c]
            start += c
            out[rows] = _from_space(np.interp(x_in[rows], stage["_xs"][k], stage["_ys"][k]),
                                    y_space)
        return out

    def describe(self) -> Dict[str, Any]:
        """Method, fields, and per stage its type, field and number of field values."""
        return {"method": self.method, "fields": list(self.fields),
                "stages": [{"type": s["type"], "field": s.get("field"),
                            "n_values": len(s.get("values", []))} for s in self.spec["stages"]]}


def load_spec(cal_dir: str) -> Dict[str, Any]:
    """The parsed ``CAL_DIR/calibrator.json``."""
    path = os.path.join(cal_dir, SPEC_FILENAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{cal_dir}: no {SPEC_FILENAME} (not a calibrator artifact)")
    with open(path) as fh:
        return json.load(fh)


def load_calibrator(cal_dir: str) -> ArtifactCalibrator:
    """Load an exported calibrator directory (``CAL_DIR/calibrator.json``).

    Returns an object with ``transform(pcvr, fields) -> np.ndarray`` and ``fields`` (the field
    columns it needs). Imports nothing beyond numpy and the standard library.

    References:
        Wei, P. et al. (2022). Posterior probability matters: doubly-adaptive calibration for
        neural predictions in online advertising. SIGIR 2022 (AdaCalib).
        Pan, F. et al. (2020). Field-aware calibration: a simple and empirically strong method
        for reliable probabilistic predictions. WWW 2020 (NeuCalib).
    """
    return ArtifactCalibrator(load_spec(cal_dir))


def dumps_spec(spec: Mapping[str, Any]) -> str:
    """``calibrator.json`` text; rejects non-finite numbers (JSON has none)."""
    def check(o: Any) -> None:
        if isinstance(o, float) and not math.isfinite(o):
            raise ValueError(f"calibrator spec holds a non-finite number: {o}")
        if isinstance(o, dict):
            for v in o.values():
                check(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                check(v)
    check(spec)
    return json.dumps(spec, indent=1, allow_nan=False)


def _floats(a: Any) -> List[float]:
    return [float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]
