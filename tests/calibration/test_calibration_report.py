"""Seed aggregation of calibration results and the AdaCalib / best-global ratio."""

import json

import numpy as np
import pytest

from calibration.report import (adacalib_ratios, aggregate_runs, calibration_metrics,
                                       field_suffix, per_run_from_aggregate, rerender)


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


def _full_run(rce):
    """A run whose Field-RCE by app per method is ``rce[method]``."""
    def m(v):
        d = {"field_rce_app": v, "auc": 0.7, "pcoc": 1.0}
        return {"after": d, "before": d, **d}
    return {"methods": {name: m(v) for name, v in rce.items()}}


RUNS = [_full_run({"uncalibrated": 0.5, "platt": 0.3, "isotonic": 0.25, "histogram": 0.2,
                   "sir": 0.4, "gamma": 0.35, "neucalib": 0.1, "adacalib": 0.12}),
        _full_run({"uncalibrated": 0.5, "platt": 0.15, "isotonic": 0.3, "histogram": 0.2,
                   "sir": 0.4, "gamma": 0.35, "neucalib": 0.12, "adacalib": 0.09})]


def test_ratios_against_the_best_of_every_global_method_and_neucalib_per_seed_and_by_means():
    r = adacalib_ratios(RUNS, ("platt", "isotonic", "histogram", "sir", "gamma"))
    best = r["best_global"]
    assert best["reference"] == ["histogram", "platt"]
    assert best["values"] == pytest.approx([0.12 / 0.2, 0.09 / 0.15])
    # by means: histogram (mean 0.2) beats platt (mean 0.225)
    assert best["by_means_reference"] == "histogram"
    assert best["by_means"] == pytest.approx(0.105 / 0.2)
    neu = r["neucalib"]
    assert neu["values"] == pytest.approx([1.2, 0.75]) and neu["by_means"] == pytest.approx(
        0.105 / 0.11)
    agg = aggregate_runs(RUNS)
    assert agg["ratio_field_rce_app"]["best_global"] == ["histogram", "platt"]
    assert agg["ratios_field_rce_app"] == r


def test_ratios_of_a_stored_aggregate_are_recomputed_from_its_per_seed_values(tmp_path):
    agg = aggregate_runs(RUNS, ("platt", "isotonic"))          # an older, narrower report
    assert agg["ratio_field_rce_app"]["best_global"] == ["isotonic", "platt"]
    assert aggregate_runs(per_run_from_aggregate(agg)) == aggregate_runs(RUNS)
    agg.update({"fields": ["app_id"]})
    (tmp_path / "calibration.json").write_text(json.dumps(agg))
    fresh = rerender(str(tmp_path))
    assert fresh["ratio_field_rce_app"]["best_global"] == ["histogram", "platt"]
    assert json.load(open(tmp_path / "calibration.json")) == fresh
    md = (tmp_path / "calibration.md").read_text()
    assert "per seed 0.600 (histogram), 0.600 (platt)" in md
    assert "NeuCalib: per seed 1.200, 0.750" in md


def test_app_quintile_cells_split_each_app_by_its_base_prediction():
    from calibration.report import app_quintile_cells
    app = np.repeat([3, 4], 100)
    base = np.concatenate([np.linspace(0, 1, 100), np.linspace(1, 0, 100)])
    cells = app_quintile_cells(app, base)
    assert len(np.unique(cells)) == 10
    assert (np.bincount(cells - cells.min())[np.unique(cells - cells.min())] == 20).all()
    # within an app, a higher base prediction is never in a lower cell
    for a in (3, 4):
        rows = app == a
        order = np.argsort(base[rows])
        assert np.all(np.diff(cells[rows][order]) >= 0)


def test_field_rce_by_app_quintile_sees_a_shape_error_that_field_rce_by_app_misses():
    rng = np.random.default_rng(0)
    n = 200_000
    app = rng.choice([3, 4], size=n)
    p_true = rng.uniform(0.01, 0.2, n)
    y = (rng.random(n) < p_true).astype(float)
    mean = p_true.mean()
    tilted = mean + 0.5 * (p_true - mean)            # right level, wrong shape
    frame = {"click": np.ones(n), "purchase": y, "pcvr": p_true, "pctr": np.full(n, 0.1),
             "app_id": app}
    right = calibration_metrics(frame, p_true, ("app_id",))
    wrong = calibration_metrics(frame, tilted, ("app_id",))
    assert wrong["field_rce_app"] < 0.02 and right["field_rce_app"] < 0.02
    assert wrong["field_rce_app_q5"] > 3 * right["field_rce_app_q5"]


def test_the_default_reliability_lines_are_uncalibrated_the_best_global_and_adacalib():
    from calibration.report import reliability_plot_methods
    result = {"methods": {"uncalibrated": {"field_rce_app": 0.3}, "platt": {"field_rce_app": 0.2},
                          "isotonic": {"field_rce_app": 0.1}, "neucalib": {"field_rce_app": 0.05},
                          "adacalib": {"field_rce_app": 0.07}}}
    assert reliability_plot_methods(result, ("platt", "isotonic", "histogram")) == [
        "uncalibrated", "isotonic", "adacalib"]
    del result["methods"]["adacalib"]
    assert reliability_plot_methods(result, ("histogram",)) == ["uncalibrated"]


def test_generated_data_reports_field_rce_against_the_truth_beside_the_labels():
    from calibration.report import calibration_metrics
    rng = np.random.default_rng(0)
    n = 4000
    truth = rng.uniform(0.01, 0.2, n)
    frame = {"click": np.ones(n), "purchase": (rng.uniform(size=n) < truth).astype(float),
             "pctr": np.full(n, 0.5), "app_id": rng.integers(0, 5, n),
             "slot_id": rng.integers(0, 40, n), "p_purchase_given_click": truth}
    exact = calibration_metrics(frame, truth, ["app_id", "slot_id"])
    assert exact["field_rce_truth_app"] == 0.0 and exact["field_rce_truth_slot_id"] == 0.0
    assert exact["field_rce_slot_id"] > 0.05  # the labels' noise floor on 40 small values
    off = calibration_metrics(frame, truth * 1.2, ["app_id", "slot_id"])
    assert off["field_rce_truth_app"] == pytest.approx(0.2)
    without = calibration_metrics({k: v for k, v in frame.items()
                                   if k != "p_purchase_given_click"}, truth, ["app_id"])
    assert not [k for k in without if k.startswith("field_rce_truth")]
