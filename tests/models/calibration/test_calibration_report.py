"""Seed aggregation of calibration results and the AdaCalib / best-global ratio."""

import numpy as np
import pytest

from models.calibration.report import aggregate_runs, calibration_metrics, field_suffix


def _run(rce_platt, rce_iso, rce_ada, auc_base=0.70, auc_ada=0.705, pcoc_ada=1.01):
    def m(rce, auc=0.7, pcoc=1.0):
        d = {"field_rce_app": rce, "auc": auc, "pcoc": pcoc, "ece": 0.01}
        return {"after": d, "before": d, **d}
    return {"methods": {"uncalibrated": m(0.5, auc_base), "platt": m(rce_platt),
                        "isotonic": m(rce_iso), "adacalib": m(rce_ada, auc_ada, pcoc_ada)}}


def test_ratio_uses_the_best_global_method_of_each_seed():
    agg = aggregate_runs([_run(0.4, 0.2, 0.1), _run(0.3, 0.6, 0.15)])
    r = agg["ratio_field_rce_app"]
    assert r["values"] == pytest.approx([0.5, 0.5]) and r["best_global"] == ["isotonic",
                                                                              "platt"]
    assert agg["acceptance"]["ratio_at_most_0.7"]
    assert agg["acceptance"]["auc_drop_at_most_0.001"]
    assert agg["acceptance"]["pcoc_within_0.95_1.05"]


def test_mean_and_std_per_method_and_metric():
    agg = aggregate_runs([_run(0.4, 0.2, 0.1), _run(0.3, 0.6, 0.3), _run(0.3, 0.6, 0.2)])
    ada = agg["methods"]["adacalib"]["field_rce_app"]
    assert ada["mean"] == pytest.approx(0.2) and ada["std"] == pytest.approx(0.1)
    assert agg["n_runs"] == 3


def test_failing_acceptance_is_reported():
    agg = aggregate_runs([_run(0.2, 0.2, 0.19, auc_base=0.72, auc_ada=0.70, pcoc_ada=1.2)])
    assert agg["acceptance"] == {**agg["acceptance"], "ratio_at_most_0.7": False,
                                 "auc_drop_at_most_0.001": False,
                                 "pcoc_within_0.95_1.05": False}


def test_metrics_cover_every_requested_field():
    rng = np.random.default_rng(0)
    n = 2000
    frame = {"click": (rng.random(n) < 0.5).astype(int), "pctr": np.full(n, 0.5),
             "app_id": rng.integers(0, 3, n), "category_id": rng.integers(0, 5, n),
             "slot_id": rng.integers(0, 4, n)}
    frame["purchase"] = frame["click"] * (rng.random(n) < 0.1)
    out = calibration_metrics(frame, np.full(n, 0.1), ("app_id", "category_id", "slot_id"))
    for k in ("field_rce_app", "field_rce_category", "field_rce_slot_id", "field_ece_slot_id",
              "ece", "ece_eqwidth100", "pcoc", "auc", "logloss"):
        assert np.isfinite(out[k]), k
    assert field_suffix("category_id") == "category"
