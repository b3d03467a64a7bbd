"""``python -m replay`` end to end on the tiny run: every bidder and group in the report,
the same world for the same seed, and clear errors on bad input."""

import json
import os
import shutil

import pytest

from replay.cli import main

ARGS = ["--target-cpa", "50", "--budget-share", "1.0", "--pacing-slots", "4", "--no-progress"]


def _replay(out, tiny_run, small_processed, cal_dir, *extra):
    rc = main(["--data", small_processed, "--runs", tiny_run, "--calibrators", cal_dir,
               "--out", str(out), *ARGS, *extra])
    assert rc == 0
    return json.load(open(os.path.join(out, "replay.json")))


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, tiny_run, small_processed, adacalib):
    out = tmp_path_factory.mktemp("replay") / "seed0"
    return out, _replay(out, tiny_run, small_processed, adacalib[0])


def test_the_report_has_every_bidder_with_the_figures_per_app_and_the_plots(replayed):
    out, report = replayed
    assert set(report["groups"]) == {"esmm", "esmm+adacalib", "oracle"}
    apps = set(report["app_names"])
    assert len(apps) >= 3 and all(n for n in report["app_names"].values())
    for bidder in report["bidders"].values():
        assert set(bidder["cpa_ratio_by_app"]) == apps
        assert bidder["spend"] > 0 and bidder["conversions"] >= 0
        assert bidder["spend"] <= report["config"]["budget"]
        assert bidder["bid_multiplier"] == min(bidder["multiplier_cpa"],
                                               bidder["multiplier_budget"])
    oracle = report["bidders"]["oracle"]
    for name, bidder in report["bidders"].items():
        if name != "oracle":
            assert bidder["expected_conversions"] < oracle["expected_conversions"]
    for name in ("replay.md", "cpa_by_app.png", "conversions_vs_spend.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    md = open(os.path.join(out, "replay.md")).read()
    assert "| esmm+adacalib | 1 |" in md and "shortvideo_a" in md
    assert "## AdaCalib against the other esmm bidders, per seed" in md


def test_the_same_seed_replays_the_same_world_and_another_seed_another(
        replayed, tmp_path, tiny_run, small_processed, adacalib):
    _, first = replayed
    again = _replay(tmp_path / "again", tiny_run, small_processed, adacalib[0])
    other = _replay(tmp_path / "other", tiny_run, small_processed, adacalib[0], "--seed", "1")
    figures = ("spend", "won", "conversions", "cpa_ratio_by_app", "bid_multiplier")
    for name, bidder in first["bidders"].items():
        assert {k: bidder[k] for k in figures} == {k: again["bidders"][name][k] for k in figures}
    assert first["bidders"]["oracle"]["spend"] != other["bidders"]["oracle"]["spend"]


def test_bad_input_fails_with_a_message_that_names_it(tmp_path, tiny_run, small_processed,
                                                      capsys):
    assert main(["--data", small_processed, "--runs", tiny_run, "--calibrators",
                 str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), *ARGS]) == 2
    assert "nowhere: no calibrator.json" in capsys.readouterr().err
    assert main(["--data", small_processed, "--runs", tiny_run, "--bid-multiplier", "lots",
                 "--out", str(tmp_path / "o"), *ARGS]) == 2
    assert "--bid-multiplier must be 'auto' or a number" in capsys.readouterr().err
    assert main(["--data", small_processed, "--runs", tiny_run, tiny_run,
                 "--out", str(tmp_path / "o"), *ARGS]) == 2
    assert "several run directories are named ['esmm']" in capsys.readouterr().err
    no_truth = tmp_path / "no_truth"
    no_truth.mkdir()
    spec = json.load(open(os.path.join(small_processed, "dataset_spec.json")))
    spec["ground_truth"] = []
    json.dump(spec, open(no_truth / "dataset_spec.json", "w"))
    shutil.copy(os.path.join(small_processed, "manifest.json"), no_truth)
    assert main(["--data", str(no_truth), "--runs", tiny_run, "--out", str(tmp_path / "o"),
                 *ARGS]) == 2
    err = capsys.readouterr().err
    assert "no_truth: the replay needs column(s) ['p_click', 'p_purchase_given_click']" in err
    assert not os.path.exists(tmp_path / "o")
