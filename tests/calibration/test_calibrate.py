"""python -m calibration.calibrate end to end on the small fixture: artifacts, calibration.json,
the plot, several runs, errors; and the down-sampled harder case."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from calibration.calibrate import main, parse_fields, parse_methods
from calibration import METHODS, load_calibrator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_run, small_processed):
    out = str(tmp_path_factory.mktemp("cal") / "cal")
    rc = main(["--method", "all", "--run", tiny_run, "--data", small_processed,
               "--field", "app_id,category_id", "--history-split", "train", "--out", out])
    assert rc == 0
    return out


def test_every_method_writes_an_artifact_that_loads_without_tensorflow(calibrated):
    """Each artifact loads and calibrates in a fresh interpreter that never imports TensorFlow
    (what the Triton calibrate step runs)."""
    code = (
        "import sys, json, numpy as np\n"
        "from serving.calibration import load_calibrator\n"
        f"out = {{}}\nfor m in {list(METHODS)!r}:\n"
        f"    cal = load_calibrator({calibrated!r} + '/' + m)\n"
        "    q = cal.transform(np.array([0.01, 0.2]), {f: np.array([3, 4]) for f in cal.fields})\n"
        "    out[m] = [cal.method, list(cal.fields), q.tolist()]\n"
        "heavy = [n for n in ('tensorflow', 'sklearn', 'merlin', 'nvtabular')\n"
        "         if n in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'out': out}))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["heavy"] == []
    for m in METHODS:
        method, fields, q = doc["out"][m]
        assert method == m and len(q) == 2 and 0 <= q[0] <= q[1] <= 1
    assert doc["out"]["adacalib"][1] == ["app_id", "category_id"]


def test_calibration_json_has_before_and_after_per_method(calibrated):
    res = json.load(open(os.path.join(calibrated, "calibration.json")))
    assert res["fit_split"] == "valid" and res["eval_split"] == "test"
    assert set(res["methods"]) == {"uncalibrated", *METHODS}
    for m, r in res["methods"].items():
        for key in ("field_rce_app", "ece", "auc", "pcoc", "logloss", "ece_eqwidth100",
                    "field_ece_app", "field_rce_category"):
            assert key in r and key in r["after"] and key in r["before"], (m, key)
        assert r["before"] == res["methods"]["uncalibrated"]["after"]
    assert res["ece_binning"] == "equal_frequency_10"
    assert os.path.getsize(os.path.join(calibrated, "reliability_by_app.png")) > 1000
    md = open(os.path.join(calibrated, "calibration.md")).read()
    assert "| adacalib |" in md
    # one run: AdaCalib against the best of every global method and against NeuCalib
    ratios = res["ratios_field_rce_app"]
    methods = res["methods"]
    best = min(("platt", "isotonic", "histogram", "sir", "gamma"),
               key=lambda g: methods[g]["field_rce_app"])
    assert ratios["best_global"]["reference"] == [best]
    assert ratios["best_global"]["values"] == pytest.approx(
        [methods["adacalib"]["field_rce_app"] / methods[best]["field_rce_app"]])
    assert ratios["neucalib"]["values"] == pytest.approx(
        [methods["adacalib"]["field_rce_app"] / methods["neucalib"]["field_rce_app"]])
    assert f"per seed {ratios['best_global']['values'][0]:.3f} ({best})" in md


def test_artifact_reproduces_the_reported_calibrated_predictions(calibrated, tiny_run,
                                                                 small_processed):
    from models import metrics as M
    from calibration.calibrate import split_frame
    frame = split_frame(tiny_run, small_processed, "test", ("app_id", "category_id"))
    cal = load_calibrator(os.path.join(calibrated, "adacalib"))
    q = cal.transform(frame["pcvr"], {f: frame[f] for f in cal.fields})
    clicked = frame["click"] == 1
    res = json.load(open(os.path.join(calibrated, "calibration.json")))
    assert M.field_rce(frame["purchase"][clicked], q[clicked], frame["app_id"][clicked]) == \
        pytest.approx(res["methods"]["adacalib"]["field_rce_app"], rel=1e-9)


@pytest.mark.slow  # four prediction passes; the aggregation itself: test_calibration_report.py
def test_several_runs_give_mean_std_and_the_adacalib_ratio(tmp_path, tiny_run,
                                                           small_processed):
    out = str(tmp_path / "multi")
    rc = main(["--method", "platt,isotonic,adacalib", "--run", tiny_run, tiny_run,
               "--data", small_processed, "--out", out])
    assert rc == 0
    agg = json.load(open(os.path.join(out, "calibration.json")))
    assert agg["n_runs"] == 2 and agg["subdirs"] == ["esmm", "esmm_2"]
    assert set(agg["methods"]["adacalib"]["field_rce_app"]) >= {"mean", "std", "values"}
    assert len(agg["ratio_field_rce_app"]["values"]) == 2
    assert set(agg["acceptance"]) >= {"ratio_at_most_0.7", "pcoc_within_0.95_1.05"}
    assert os.path.isfile(os.path.join(out, "esmm_2", "adacalib", "calibrator.json"))


def test_missing_field_column_is_a_clear_error(tmp_path, tiny_run, small_processed, capsys):
    rc = main(["--method", "platt", "--run", tiny_run, "--data", small_processed,
               "--field", "media_app", "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "field column(s) ['media_app'] not in" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_calibration_split_must_not_be_the_evaluation_split(tmp_path, tiny_run,
                                                            small_processed, capsys):
    rc = main(["--method", "platt", "--run", tiny_run, "--data", small_processed,
               "--fit-split", "test", "--out", str(tmp_path / "x")])
    assert rc == 2 and "must differ" in capsys.readouterr().err


def test_method_and_field_lists_parse():
    assert parse_methods("all") == list(METHODS)
    # without history days, 'all' leaves out the method that needs them
    assert parse_methods("all", history=False) == [m for m in METHODS if m != "adacalib_trend"]
    assert parse_methods("platt, adacalib") == ["platt", "adacalib"]
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("platt,beta")
    assert parse_fields(["app_id,category_id", "app_id"]) == ("app_id", "category_id")
    assert parse_fields([]) == ("app_id",)


def test_downsampled_dataset_keeps_cvr_negatives_at_the_app_rates(tmp_path, small_processed):
    from calibration.downsample import downsample_split
    from preprocessing.splits import read_split
    out = str(tmp_path / "ds")
    src = read_split(os.path.join(small_processed, "train"), ["app_id", "click", "purchase"])
    apps = sorted(src["app_id"].unique())
    rates = {int(apps[0]): 0.1, int(apps[1]): 0.5}
    rec = downsample_split(small_processed, out, rates, seed=0)
    dst = read_split(os.path.join(out, "train"), ["app_id", "click", "purchase"])
    for a in apps:
        def counts(df):
            m = df["app_id"] == a
            neg = m & (df["click"] == 1) & (df["purchase"] == 0)
            return int(neg.sum()), int((m & ~neg).sum())
        (n_src, other_src), (n_dst, other_dst) = counts(src), counts(dst)
        assert other_dst == other_src                       # positives, non-clicks untouched
        rate = rates.get(int(a), 1.0)
        assert abs(n_dst - rate * n_src) <= 4 * np.sqrt(n_src * rate * (1 - rate)) + 1
    assert rec["rows_out"] == len(dst)
    meta = json.load(open(os.path.join(out, "train", "_metadata.json")))
    assert sum(s["num_rows"] for s in meta["file_stats"]) == len(dst)
    for split in ("valid", "test"):                          # other splits unchanged
        a = read_split(os.path.join(small_processed, split))
        b = read_split(os.path.join(out, split))
        assert len(a) == len(b)


def test_trend_method_without_history_split_is_a_clear_error(tmp_path, tiny_run,
                                                              small_processed, capsys):
    rc = main(["--method", "adacalib_trend", "--run", tiny_run, "--data", small_processed,
               "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "--history-split train" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_history_split_may_not_be_the_calibration_or_evaluation_split(tmp_path, tiny_run,
                                                                      small_processed):
    from calibration.calibrate import calibrate_run
    with pytest.raises(ValueError, match="history split must differ"):
        calibrate_run(tiny_run, small_processed, ["platt"], ("app_id",), str(tmp_path),
                      history_split="valid")


def test_trend_artifact_carries_the_history_days_and_one_offset_per_app(calibrated):
    spec = json.load(open(os.path.join(calibrated, "adacalib_trend", "calibrator.json")))
    meta = spec["meta"]
    assert meta["calibration_day"] > max(meta["history_days"])
    assert set(meta["slopes"]) == {"app_id", "category_id"}
    assert set(meta["slopes"]) == {"app_id", "category_id"}


def test_the_reliability_figure_shows_uncalibrated_the_best_global_method_and_adacalib(
        tmp_path, tiny_run, small_processed, monkeypatch):
    """By default the per-app figure draws three lines (every method with --plot-all-methods),
    and its panels are titled with the media apps' names."""
    from calibration import report
    drawn = []
    monkeypatch.setattr(report, "plot_reliability_by_app",
                        lambda y, app, curves, path, n_bins=10, names=None:
                        drawn.append((list(curves), names)))
    args = ["--method", "platt,isotonic,histogram,adacalib", "--run", tiny_run,
            "--data", small_processed, "--field", "app_id"]
    assert main(args + ["--out", str(tmp_path / "default")]) == 0
    assert main(args + ["--out", str(tmp_path / "all"), "--plot-all-methods"]) == 0
    methods = json.load(open(tmp_path / "default" / "calibration.json"))["methods"]
    best = min(("platt", "isotonic", "histogram"), key=lambda g: methods[g]["field_rce_app"])
    assert drawn[0][0] == ["uncalibrated", best, "adacalib"]
    assert drawn[1][0] == ["uncalibrated", "platt", "isotonic", "histogram", "adacalib"]
    assert set(drawn[0][1].values()) == {"shortvideo_a", "shortvideo_b", "livestream_c",
                                         "news_feed_d", "game_e"}
