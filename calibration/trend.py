"""Trend-extrapolating calibration: a field-aware calibrator plus each value's drift to the
serving day (**our extension**, not in the AdaCalib paper; method name ``adacalib_trend``).

Why. A calibrator fitted on the most recent day (day ``D``) serves the next one (``D + 1``).
When a media app's conversion rate drifts from day to day (``app.cvr_trend`` in the simulator;
traffic mix and campaigns on real media), every calibrator fitted on day ``D`` is one day
behind: on the 4M-row default data this lag is the largest part of the per-app error that
survives AdaCalib and NeuCalib (``calibration.decompose``). No choice of buckets,
features or shrinkage can see it; only data from earlier days can.

What. The base calibrator (``base``, default ``adacalib``, the paper's method unchanged) is
fitted on the rows of the last day of the fit data, exactly as it would be alone. Then, for
each field and each of its values ``v``, the **base model's** log ratio of observed to predicted
conversions on each earlier day ``d`` (the history: the base model's training days)

    ``r_v(d) = log((O_v(d) + 0.5) / (E_v(d) + 0.5))``,  ``var ~ 1 / (O_v(d) + 0.5)``

is regressed on ``d`` by weighted least squares. The base model does not see the day, so it
fits every value's pooled level over the history; the per-day residual then moves with the
value's drift, and the slope ``t_v`` estimates that drift per day (the level, which is biased
on the model's own training days, is not used: it comes from day ``D``). The slopes are shrunk
toward 0 by empirical Bayes (normal prior, variance by moments: how far the slopes spread
beyond their sampling variance; none: every slope 0, the base calibrator unchanged), and one
``logit_offset`` stage per field adds ``horizon_days * t_v`` to the calibrated logit of value
``v``. Unseen values get 0. A constant offset per value keeps the map monotone.

Fit data. ``fit(pcvr, y, fields)`` needs, besides the calibration fields, a ``day`` column
(``fields["day"]``): rows of the largest day are the calibration day, the earlier days are
history (``calibration.calibrate`` passes ``--history-split train`` rows). The exported artifact
needs only the calibration fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from calibration.base import Calibrator
from common.params import check_param

#: The fit column that orders the rows in time (the processed data's ``day``).
DAY_COLUMN = "day"


@dataclass(frozen=True)
class TrendConfig:
    """Trend-extrapolating calibration.

    Args:
        base: the calibrator fitted on the last day (a field-aware method name).
        base_config: overrides of the base method's config fields.
        horizon_days: how many days ahead of the last fit day the calibrator serves.
        min_history_days: the fewest earlier days with data a value needs for a slope
            (fewer: slope 0).
        shrink: empirical-Bayes shrinkage of the slopes toward 0 (False: raw WLS slopes).
        centre: subtract the slopes' precision-weighted mean before extrapolating: only how
            the values drift *relative to each other* is carried to the serving day, the
            common level is the calibration day's (the base model's residuals on its own
            training days can drift for every value alike, an artefact of fitting those days,
            which does not continue past them).
    """

    base: str = "adacalib"
    base_config: Mapping[str, Any] = field(default_factory=dict)
    horizon_days: float = 1.0
    min_history_days: int = 3
    shrink: bool = True
    centre: bool = True

    def __post_init__(self):
        from calibration import METHODS
        check_param(self.base in METHODS and self.base != "adacalib_trend"
                    and METHODS[self.base].field_aware, "base",
                    f"a field-aware method of {list(METHODS)}", self.base)
        check_param(isinstance(self.base_config, Mapping), "base_config", "a mapping",
                    self.base_config)
        object.__setattr__(self, "base_config", dict(self.base_config))
        # validates the overrides now, with the base method's own messages
        type(METHODS[self.base].default_config())(**self.base_config)
        check_param(0 <= self.horizon_days <= 30, "horizon_days", "in [0, 30]",
                    self.horizon_days)
        check_param(isinstance(self.min_history_days, int) and self.min_history_days >= 2,
                    "min_history_days", "an int >= 2", self.min_history_days)


def value_slopes(p: np.ndarray, y: np.ndarray, value: np.ndarray, day: np.ndarray,
                 min_days: int = 3) -> Dict[int, Tuple[float, float]]:
    """Per value: the WLS slope over days of ``log((O + 0.5) / (E + 0.5))`` and its variance.

    Args:
        p: base predictions; y: labels; value: field value; day: day of each row.
        min_days: values with fewer days of data get no entry.
    """
    out: Dict[int, Tuple[float, float]] = {}
    vals, vcode = np.unique(value, return_inverse=True)
    days, dcode = np.unique(day, return_inverse=True)
    key = vcode.reshape(-1) * len(days) + dcode.reshape(-1)
    size = len(vals) * len(days)
    obs = np.bincount(key, weights=y, minlength=size).reshape(len(vals), len(days))
    exp = np.bincount(key, weights=p, minlength=size).reshape(len(vals), len(days))
    rows = np.bincount(key, minlength=size).reshape(len(vals), len(days))
    d = days.astype(np.float64)
    for i, v in enumerate(vals):
        have = rows[i] > 0
        if have.sum() < min_days:
            continue
        r = np.log((obs[i, have] + 0.5) / (exp[i, have] + 0.5))
        w = obs[i, have] + 0.5                         # 1 / Poisson variance of the log ratio
        dd = d[have]
        dbar = float(np.sum(w * dd) / w.sum())
        sxx = float(np.sum(w * (dd - dbar) ** 2))
        if sxx <= 0:
            continue
        slope = float(np.sum(w * (dd - dbar) * (r - np.sum(w * r) / w.sum())) / sxx)
        out[int(v)] = (slope, 1.0 / sxx)
    return out


def shrink_slopes(slopes: Mapping[int, Tuple[float, float]]) -> Tuple[Dict[int, float], float]:
    """Posterior means of the slopes under a ``N(0, tau2)`` prior, ``tau2`` by moments.

    Returns the shrunk slope per value and ``tau2`` (0: the slopes spread no more than their
    sampling noise, and every slope is shrunk to 0).
    """
    if not slopes:
        return {}, 0.0
    t = np.array([s for s, _ in slopes.values()])
    v = np.array([var for _, var in slopes.values()])
    tau2 = max(0.0, float(np.mean(t ** 2 - v)))
    shrunk = t * tau2 / (tau2 + v) if tau2 > 0 else np.zeros_like(t)
    return {k: float(s) for k, s in zip(slopes, shrunk)}, tau2


class TrendCalibrator(Calibrator):
    """A field-aware calibrator fitted on the last day, plus each field value's drift over the
    history days extrapolated to the serving day (see the module docstring).

    **Our extension**; the paper's method is ``adacalib``. References for the base:
    Wei, P. et al. (2022). Posterior probability matters: doubly-adaptive calibration for
    neural predictions in online advertising. SIGIR 2022.
    """

    name = "adacalib_trend"
    field_aware = True
    #: fit needs earlier days than the calibration day (``fields["day"]``).
    uses_history = True

    @classmethod
    def default_config(cls):
        return TrendConfig()

    def fit(self, pcvr: Any, y: Any, fields: Optional[Mapping[str, Any]] = None
            ) -> "TrendCalibrator":
        """Fit on the calibration day plus history days (``fields["day"]`` orders them).

        Args:
            pcvr: base predictions of every fit row; y: labels.
            fields: the calibration fields and ``day``.
        """
        fields = dict(fields or {})
        if DAY_COLUMN not in fields or fields[DAY_COLUMN] is None:
            raise ValueError(f"{self.name} needs a '{DAY_COLUMN}' column in the fit data (the "
                             "calibration day and earlier days; calibration.calibrate: "
                             "--history-split train)")
        self._day = np.asarray(fields[DAY_COLUMN]).reshape(-1)
        return super().fit(pcvr, y, fields)

    def _fit_spec(self, p: np.ndarray, y: np.ndarray, cols: Dict[str, np.ndarray]):
        from calibration import make_calibrator
        cfg = self.config
        day = self._day
        if len(day) != len(p):
            raise ValueError(f"'{DAY_COLUMN}' has {len(day)} rows, the predictions {len(p)}")
        last = day == day.max()
        base_cls = type(make_calibrator(cfg.base, fields=self.fields).config)
        base = make_calibrator(cfg.base, fields=self.fields, config=base_cls(**cfg.base_config))
        base.fit(p[last], y[last], {f: c[last] for f, c in cols.items()})
        stages: List[Dict[str, Any]] = list(base.spec_["stages"])
        hist = ~last
        meta: Dict[str, Any] = {"base": cfg.base, "base_meta": base.spec_["meta"],
                                "calibration_day": int(day.max()),
                                "history_days": sorted(int(d) for d in np.unique(day[hist])),
                                "slopes": {}, "tau2": {}}
        for f in self.fields:
            raw = value_slopes(p[hist], y[hist], cols[f][hist], day[hist], cfg.min_history_days)
            if cfg.centre and raw:
                w = {k: 1.0 / var for k, (_, var) in raw.items()}
                mean = sum(w[k] * s for k, (s, _) in raw.items()) / sum(w.values())
                raw = {k: (s - mean, var) for k, (s, var) in raw.items()}
                meta.setdefault("common_slope", {})[f] = mean
            if cfg.shrink:
                used, tau2 = shrink_slopes(raw)
            else:
                used, tau2 = {k: s for k, (s, _) in raw.items()}, None
            meta["slopes"][f] = {str(k): {"raw": raw[k][0], "se": float(np.sqrt(raw[k][1])),
                                          "used": used[k]} for k in raw}
            meta["tau2"][f] = tau2
            values = sorted(used)
            if not values:                               # too few history days: no drift
                continue
            stages.append({"type": "logit_offset", "field": f, "values": values,
                           "offsets": [float(cfg.horizon_days * used[v]) for v in values]})
        return stages, meta
