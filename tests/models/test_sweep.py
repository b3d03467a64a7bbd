"""models.sweep: the spec's validation, the config override, the choice, and one tiny sweep end
to end on the validation split (which also checks that models.compare refuses a run directory
of another configuration)."""

import json
import os

import pytest
import yaml

from models.compare import compare
from models.sweep import SweepSpec, choose, config_with, higher_is_better, main, setting_label


def test_spec_rejects_unknown_params_too_few_settings_and_directionless_metrics():
    with pytest.raises(ValueError, match="'params' parameter"):
        SweepSpec("esmm", ["model.ctcvr_weigth"], [(1, 2)])
    with pytest.raises(ValueError, match="'params' parameter"):
        SweepSpec("esmm", ["optimizer.learning_rate"], [(1, 2)])
    with pytest.raises(ValueError, match="'params' parameter"):
        SweepSpec("esmm", ["model.ctcvr_weight", "model.ctcvr_weight"], [(1, 2), (3,)])
    with pytest.raises(ValueError, match="'values' parameter must be a grid"):
        SweepSpec("esmm", ["model.ctcvr_weight"], [(1,)])
    with pytest.raises(ValueError, match="'values' parameter must be distinct"):
        SweepSpec("esmm", ["model.ctcvr_weight"], [(1, 1)])
    with pytest.raises(ValueError, match="'values' parameter must be one tuple per param"):
        SweepSpec("esmm", ["model.ctcvr_weight"], [(1, 2), (3, 4)])
    with pytest.raises(ValueError, match="'rule' parameter"):
        SweepSpec("esmm", ["model.ctcvr_weight"], [(1, 2)], rule="worst")
    with pytest.raises(ValueError, match="no known direction"):
        SweepSpec("esmm", ["model.ctcvr_weight"], [(1, 2)], select="cvr_pcoc_clicked")


def test_a_grid_spans_every_combination_first_values_first_with_one_directory_each():
    spec = SweepSpec("esmm", ["train.learning_rate", "train.lr_schedule"],
                     [(0.001, 0.002), ("constant", "cosine_dense")])
    assert [setting_label(s) for s in spec.settings()] == [
        "learning_rate=0.001,lr_schedule=constant", "learning_rate=0.001,lr_schedule=cosine_dense",
        "learning_rate=0.002,lr_schedule=constant", "learning_rate=0.002,lr_schedule=cosine_dense"]
    assert spec.setting_dir("/o", spec.settings()[0]) == "/o/learning_rate=0.001,lr_schedule=constant"
    # one value for a param fixes it across the grid
    assert len(SweepSpec("esmm", ["model.ctcvr_weight", "train.learning_rate"],
                         [(3,), (0.001, 0.002)]).settings()) == 2


def test_config_with_overrides_the_setting_and_keeps_the_rest_of_the_base(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  embedding_dim: 8\ntrain:\n  epochs: 1\n")
    raw = config_with(str(base), {"model.ctcvr_weight": 3, "train.lr_schedule": "cosine"})
    assert raw == {"model": {"embedding_dim": 8, "ctcvr_weight": 3},
                   "train": {"epochs": 1, "lr_schedule": "cosine"}}
    assert config_with(None, {"train.learning_rate": 0.01}) == {
        "model": {}, "train": {"learning_rate": 0.01}}


def _report(means, std=0.001):
    return {f"ctcvr_weight={v}": {"esmm": {
        "ctcvr_auc": {"mean": m, "std": std, "values": [m], "seeds": [0]},
        "field_rce_app": {"mean": m, "std": 0.0, "values": [m], "seeds": [0]}}}
        for v, m in means.items()}


def test_choose_maximises_aucs_minimises_rce_and_keeps_the_first_value_on_a_tie():
    reports = _report({1: 0.80, 3: 0.82, 10: 0.81})
    spec = SweepSpec("esmm", ["model.ctcvr_weight"], [(1, 3, 10)])
    assert choose(spec, reports)["chosen"] == {"model.ctcvr_weight": 3}
    spec = SweepSpec("esmm", ["model.ctcvr_weight"], [(1, 3, 10)], select="field_rce_app")
    assert choose(spec, reports)["chosen_label"] == "ctcvr_weight=1"
    tie = _report({1: 0.8, 3: 0.8})
    assert choose(SweepSpec("esmm", ["model.ctcvr_weight"], [(1, 3)]), tie)["chosen_label"] == (
        "ctcvr_weight=1")
    assert higher_is_better("entire_space_cvr_auc") and not higher_is_better("ctr_logloss")


def test_beat_first_by_std_keeps_the_first_setting_unless_the_gain_exceeds_the_seed_spread():
    spec = SweepSpec("esmm", ["model.ctcvr_weight"], [(1, 3)], rule="beat-first-by-std")
    within = _report({1: 0.8000, 3: 0.8015}, std=0.002)
    assert choose(spec, within)["chosen_label"] == "ctcvr_weight=1"
    beyond = _report({1: 0.8000, 3: 0.8030}, std=0.002)
    assert choose(spec, beyond)["chosen_label"] == "ctcvr_weight=3"
    best = SweepSpec("esmm", ["model.ctcvr_weight"], [(1, 3)])
    assert choose(best, within)["chosen_label"] == "ctcvr_weight=3"


def test_sweep_trains_each_value_validates_on_the_valid_split_and_writes_the_summary(
        tmp_path, small_processed):
    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump({
        "model": {"embedding_dim": 4, "tower_units": [8]},
        "train": {"batch_size": 1024, "epochs": 1, "max_steps": 3, "checkpoint_every": 2}}))
    out = str(tmp_path / "sweep")
    rc = main(["--model", "esmm", "--data", small_processed, "--out", out,
               "--param", "model.ctcvr_weight", "--values", "1", "3",
               "--param", "train.lr_schedule", "--values", "cosine_dense",
               "--seeds", "1", "--config", str(base), "--no-progress"])
    assert rc == 0
    summary = json.load(open(os.path.join(out, "summary", "sweep.json")))
    labels = [f"ctcvr_weight={v},lr_schedule=cosine_dense" for v in (1, 3)]
    assert summary["split"] == "valid" and summary["chosen_label"] in labels
    assert [r["label"] for r in summary["rows"]] == labels
    for value, label in zip((1, 3), labels):
        run = os.path.join(out, label, "runs", "esmm_seed0")
        cfg = json.load(open(os.path.join(run, "config.json")))
        assert cfg["model_config"]["ctcvr_weight"] == value
        assert cfg["train_config"]["lr_schedule"] == "cosine_dense"
        assert cfg["model_config"]["embedding_dim"] == 4  # the base config is kept
        report = json.load(open(os.path.join(out, label, "report", "report.json")))
        assert report["split"] == "valid"
        assert os.path.exists(os.path.join(run, "predictions_valid.parquet"))
    row = {r["label"]: r for r in summary["rows"]}
    assert row[labels[1]]["values"] == report["models"]["esmm"]["ctcvr_auc"]["values"]
    assert os.path.getsize(os.path.join(out, "summary", "sweep.png")) > 1000
    assert "chosen" in open(os.path.join(out, "summary", "sweep.md")).read()

    # A finished run of ctcvr_weight=1 is not reused for another configuration.
    with pytest.raises(ValueError, match="another configuration"):
        compare(small_processed, os.path.join(out, labels[0]), ["esmm"], 1,
                os.path.join(out, labels[1], "config.yaml"), progress=False)


def test_bad_sweep_arguments_are_clear_errors_before_any_training(tmp_path, small_processed,
                                                                  capsys):
    rc = main(["--model", "esmm", "--data", small_processed, "--out", str(tmp_path / "s"),
               "--param", "model.ctcvr_weight", "--values", "1", "-2", "--seeds", "1"])
    assert rc == 2 and "ctcvr_weight" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "s" / "ctcvr_weight=1" / "runs")
    with pytest.raises(SystemExit):
        main(["--model", "esmm", "--data", small_processed, "--out", str(tmp_path / "s"),
              "--param", "model.ctcvr_weight", "--param", "train.epochs", "--values", "1", "3"])
    assert "each --param needs its --values" in capsys.readouterr().err
