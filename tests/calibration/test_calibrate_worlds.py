"""python -m calibration.worlds on the small fixture: per world and overall summaries,
the truth floor, the candidates' ratios and checks, the decomposition, the frame cache, errors."""

import json
import os

import numpy as np
import pytest

from calibration.worlds import load_variants, main

VARIANTS = """
adacalib_shape100: {method: adacalib, config: {shrink_shape: 100.0, max_iter: 30}}
adacalib_recent2: {method: adacalib, extra_days: 1, config: {max_iter: 30}}
"""


@pytest.fixture(scope="module")
def worlds(tmp_path_factory, tiny_run, small_processed):
    tmp = tmp_path_factory.mktemp("worlds")
    variants = tmp / "variants.yaml"
    variants.write_text(VARIANTS)
    out = str(tmp / "out")
    rc = main(["--out", out, "--world", "a", small_processed, tiny_run,
               "--world", "b", small_processed, tiny_run, "--holdout", "b",
               "--method", "platt,histogram,neucalib,adacalib,adacalib_trend",
               "--history-split", "train", "--variants", str(variants), "--decompose",
               "--replicates", "2"])
    assert rc == 0
    return out, json.load(open(os.path.join(out, "worlds.json")))


def test_every_world_and_the_overall_summary_hold_each_method_and_the_truth_floor(worlds):
    out, res = worlds
    assert list(res["worlds"]) == ["a", "b"] and res["holdout"] == "b"
    assert res["overall"]["n_runs"] == 2
    for summary in (*res["worlds"].values(), res["overall"]):
        methods = summary["methods"]
        assert {"uncalibrated", "platt", "histogram", "neucalib", "adacalib", "adacalib_trend",
                "adacalib_shape100", "adacalib_recent2", "true_probabilities"} <= set(methods)
        floor = methods["true_probabilities"]["field_rce_app"]["mean"]
        assert 0 < floor < methods["uncalibrated"]["field_rce_app"]["mean"]
    # the same run in both worlds: identical numbers
    a, b = res["worlds"]["a"]["methods"], res["worlds"]["b"]["methods"]
    assert a["adacalib"]["field_rce_app"]["mean"] == b["adacalib"]["field_rce_app"]["mean"]


def test_ratios_and_acceptance_checks_are_computed_for_every_candidate(worlds):
    out, res = worlds
    run = json.load(open(os.path.join(out, "a", "esmm", "calibration.json")))
    m = run["methods"]
    best = min(("platt", "histogram"), key=lambda g: m[g]["field_rce_app"])
    for name in ("adacalib", "adacalib_trend", "adacalib_shape100", "adacalib_recent2"):
        r = res["overall"]["candidates"][name]["ratios_field_rce_app"]
        assert r["best_global"]["by_means"] == pytest.approx(
            m[name]["field_rce_app"] / m[best]["field_rce_app"])
        assert r["neucalib"]["by_means"] == pytest.approx(
            m[name]["field_rce_app"] / m["neucalib"]["field_rce_app"])
        checks = res["acceptance"][name]
        assert checks["ratio_at_most_0.7"] == (r["best_global"]["by_means"] <= 0.7)
        assert set(checks["ratio_best_global_by_world"]) == {"a", "b"}
        assert checks["auc_drop_mean"] == pytest.approx(m["uncalibrated"]["auc"]
                                                        - m[name]["auc"])
    md = open(os.path.join(out, "worlds.md")).read()
    assert "## World a" in md and "## All 2 runs" in md and "never tuned on: b" in md
    assert "adacalib_trend / best global: by means" in md


def test_decomposition_is_reported_with_its_plot(worlds):
    out, res = worlds
    dec = res["overall"]["decomposition"]
    assert {"uncalibrated", "platt", "histogram", "neucalib", "adacalib",
            "adacalib_trend"} <= set(dec)
    for d in dec.values():
        assert d["kl_level"]["mean"] + d["kl_shape"]["mean"] + d["kl_refinement"]["mean"] == \
            pytest.approx(d["kl_total"]["mean"])
        assert d["floor"]["mean"] > 0
    u = dec["uncalibrated"]
    assert u["truth_capacity"]["mean"] == u["truth_drift"]["mean"] == u["truth_estimation"]["mean"]
    for name in ("worlds.md", "field_rce_by_world.png", "decomposition.png"):
        assert os.path.getsize(os.path.join(out, name)) > 1000


def test_predictions_are_cached_beside_the_run_and_reused(worlds, tiny_run, small_processed,
                                                         tmp_path):
    cache = os.path.join(tiny_run, "calibration_frames")
    files = sorted(os.listdir(cache))
    assert files == ["test.npz", "train_clicked.npz", "valid.npz"]
    before = {f: os.path.getmtime(os.path.join(cache, f)) for f in files}
    rc = main(["--out", str(tmp_path / "again"), "--world", "a", small_processed, tiny_run,
               "--method", "platt,adacalib"])
    assert rc == 0
    assert {f: os.path.getmtime(os.path.join(cache, f)) for f in files} == before
    with np.load(os.path.join(cache, "train_clicked.npz")) as z:
        assert (z["click"] == 1).all() and "day" in z.files


@pytest.mark.parametrize("args, message", [
    (["--world", "a", "PROC"], "--world needs NAME PROC_DIR RUN_DIR"),
    (["--world", "a", "P", "R", "--world", "a", "P", "R"], "names must be distinct"),
    (["--world", "a", "P", "R", "--holdout", "c"], "--holdout 'c' is not one of"),
])
def test_bad_world_arguments_are_clear_errors(tmp_path, capsys, args, message):
    rc = main(["--out", str(tmp_path / "x"), "--method", "platt", *args])
    assert rc == 2 and message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_variant_file_errors_name_the_variant(tmp_path):
    bad = tmp_path / "v.yaml"
    bad.write_text("x: {method: beta}\n")
    with pytest.raises(ValueError, match="variant 'x': unknown method 'beta'"):
        load_variants(str(bad))
    bad.write_text("y: {config: {}}\n")
    with pytest.raises(ValueError, match="variant 'y' needs 'method'"):
        load_variants(str(bad))
