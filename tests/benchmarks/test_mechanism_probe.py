"""Tests of ``benchmarks.mechanism_probe``: the oracles' arithmetic on known distortions, and the
command on a tiny generated long_tail_slots world."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.mechanism_probe import main, platt_per_group

WORLDS = Path(__file__).resolve().parents[2] / "preprocessing" / "configs" / "worlds"


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_the_per_group_fit_recovers_a_known_level_and_sharpness_per_group():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 4, 40_000)
    x = rng.normal(-3.0, 1.0, len(g))
    a, b = np.array([1.0, 0.5, 1.5, 1.0]), np.array([0.0, -1.0, 0.5, 1.0])
    t = _sigmoid(a[g] * x + b[g])
    q = platt_per_group(_sigmoid(x), t, g)
    np.testing.assert_allclose(q, t, atol=1e-6)
    # one function for all groups cannot
    assert np.abs(platt_per_group(_sigmoid(x), t, np.zeros_like(g)) - t).max() > 0.01


def _fake_run(tmp_path, frame):
    """A run directory whose cached clicked test frame is ``frame`` (no model needed)."""
    run = tmp_path / "run"
    (run / "saved_model").mkdir(parents=True)
    (run / "saved_model" / "saved_model.pb").write_bytes(b"")
    (run / "calibration_frames").mkdir()
    time.sleep(0.01)
    np.savez(run / "calibration_frames" / "test_clicked.npz", **frame)
    future = time.time() + 5
    os.utime(run / "calibration_frames" / "test_clicked.npz", (future, future))
    return run


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from preprocessing.generate import main as generate
    out = tmp_path_factory.mktemp("lts") / "gen"
    cfg = WORLDS / "long_tail_slots.yaml"
    text = cfg.read_text() + "n_users: 20000\nn_items: 2000\npilot_rows: 20000\n"
    small = out.parent / "lts.yaml"
    small.write_text(text)
    assert generate(["--rows", "60000", "--seed", "3", "--out", str(out), "--config",
                     str(small), "--no-progress"]) == 0
    return out


def test_the_probe_writes_the_label_floor_of_the_true_probabilities_per_field(tiny_world,
                                                                              tmp_path):
    assert main(["--world", "long_tail_slots", "--data", str(tiny_world),
                 "--out", str(tmp_path / "p")]) == 0
    probe = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert probe["world"] == "long_tail_slots"
    assert set(probe["floor_field_rce"]) == {"slot_id", "app_id"}
    assert all(0 < v < 2 for v in probe["floor_field_rce"].values())
    assert probe["test_clicked_rows"] > 0 and probe["test_purchases"] > 0
    assert probe["per_value"]["slot_id"]["values"] > 100
    assert "/" not in probe["data"].split("GEN_DIR")[0]


def test_the_oracles_separate_per_value_headroom_from_what_labels_can_reach(tiny_world,
                                                                            tmp_path):
    rng = np.random.default_rng(1)
    n = 60_000
    slot = rng.integers(0, 20, n)
    x = rng.normal(-3.0, 1.0, n)
    level, sharp = rng.normal(0, 0.6, 20), np.exp(rng.normal(0, 0.4, 20))
    truth = _sigmoid(sharp[slot] * (x + 3.0) - 3.0 + level[slot])
    y = (rng.random(n) < truth).astype(np.float64)
    run = _fake_run(tmp_path, {"pcvr": _sigmoid(x), "p_purchase_given_click": truth,
                               "purchase": y, "click": np.ones(n), "slot_id": slot,
                               "app_id": slot % 2})
    assert main(["--world", "long_tail_slots", "--data", str(tiny_world), "--out",
                 str(tmp_path / "p"), "--processed", str(tmp_path), "--run", str(run)]) == 0
    probe = json.loads((tmp_path / "p" / "probe.json").read_text())
    s = {k: probe[k]["slot_id"]["mean"] for k in ("uncalibrated_field_rce_truth",
                                                  "oracle_global_field_rce", "oracle_field_rce",
                                                  "oracle_truth_field_rce", "oracle_ratio")}
    assert s["oracle_truth_field_rce"] < 1e-3               # the whole headroom, from the truth
    assert s["oracle_field_rce"] < 0.5 * s["oracle_global_field_rce"]   # labels enough here
    assert s["oracle_global_field_rce"] > 0.1
    assert s["oracle_ratio"] == pytest.approx(s["oracle_field_rce"]
                                              / s["oracle_global_field_rce"])


@pytest.mark.parametrize("world", ["deep_funnel", "covariate_shift"])
def test_a_probe_that_needs_trained_runs_says_so(world, tiny_world, tmp_path):
    with pytest.raises(SystemExit, match="needs --processed"):
        main(["--world", world, "--data", str(tiny_world), "--out", str(tmp_path)])


def test_held_out_r2_is_high_for_a_linear_target_and_near_zero_for_noise():
    from benchmarks.mechanism_probe import held_out_r2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 5))
    assert held_out_r2(x, x @ np.arange(1.0, 6.0) + 0.1 * rng.normal(size=4000)) > 0.99
    assert abs(held_out_r2(x, rng.normal(size=4000))) < 0.02


def test_spearman_and_the_decile_ratio_on_a_known_monotone_relation():
    from benchmarks.mechanism_probe import decile_ratio, spearman
    rng = np.random.default_rng(0)
    u = rng.random(10_000)
    err = u ** 2
    assert spearman(u, err) == pytest.approx(1.0)
    assert decile_ratio(u, err) == pytest.approx((0.95 ** 2 + 1 / 1200) / (0.05 ** 2 + 1 / 1200),
                                                 rel=0.1)
    assert abs(spearman(u, rng.random(10_000))) < 0.05


def test_the_deep_funnel_probe_reads_every_tower_of_a_trained_autoheri_run(
        autoheri_run, small_processed, small_generated, tmp_path):
    run_dir = autoheri_run[0]
    assert main(["--world", "deep_funnel", "--data", small_generated, "--processed",
                 small_processed, "--run", run_dir, "--rows", "4000",
                 "--out", str(tmp_path)]) == 0
    probe = json.loads((tmp_path / "probe.json").read_text())
    (run,) = probe["runs"].values()
    assert run["model"] == "autoheri" and probe["rows"] == 4000
    assert run["r2_gain_upstream"] == pytest.approx(run["r2_all_towers"]
                                                    - run["r2_purchase_tower"])
    assert np.isfinite(run["r2_all_towers"]) and run["r2_all_towers"] <= 1
    assert probe["r2_gain_upstream"]["mean"] == pytest.approx(run["r2_gain_upstream"])


def test_the_covariate_shift_probe_measures_both_disagreements_of_a_student(
        ukd_student_run, pseudolabelled, small_generated, tmp_path):
    assert main(["--world", "covariate_shift", "--data", small_generated, "--processed",
                 pseudolabelled, "--run", ukd_student_run, "--rows", "3000", "--draws", "2",
                 "--out", str(tmp_path)]) == 0
    probe = json.loads((tmp_path / "probe.json").read_text())
    (run,) = probe["runs"].values()
    assert run["head_dropout"] == 0.3 and run["model"] == "ukd"
    for kind in ("kl", "logit"):
        for err in ("kl", "abs"):
            assert -1 <= run[kind][f"spearman_u_error_{err}"] <= 1
            assert run[kind][f"decile_error_ratio_{err}"] > 0
        assert run[kind]["spearman_u_error"] == run[kind]["spearman_u_error_kl"]
        assert run[kind]["median_u"] > 0
    assert probe["best_setting"]["u"] in ("kl", "logit")
    assert set(probe["teacher_error_mean"]) == {"kl", "abs"}
    assert 0 < probe["unclicked_rows"] < probe["rows"] == 3000
