"""models.sweep: the spec's validation, the config override, the choice, and one tiny sweep end
to end on the validation split (which also checks that models.compare refuses a run directory
of another configuration)."""

import json
import os

import pytest
import yaml

from models.compare import compare
from models.sweep import SweepSpec, choose, config_with, higher_is_better, main


def test_spec_rejects_unknown_params_too_few_values_and_directionless_metrics():
    with pytest.raises(ValueError, match="'param' parameter"):
        SweepSpec("esmm", "model.ctcvr_weigth", (1, 2))
    with pytest.raises(ValueError, match="'param' parameter"):
        SweepSpec("esmm", "optimizer.learning_rate", (1, 2))
    with pytest.raises(ValueError, match="'values' parameter"):
        SweepSpec("esmm", "model.ctcvr_weight", (1,))
    with pytest.raises(ValueError, match="'values' parameter"):
        SweepSpec("esmm", "model.ctcvr_weight", (1, 1))
    with pytest.raises(ValueError, match="no known direction"):
        SweepSpec("esmm", "model.ctcvr_weight", (1, 2), select="cvr_pcoc_clicked")
    spec = SweepSpec("esmm", "train.learning_rate", (0.001, 0.002))
    assert (spec.section, spec.key) == ("train", "learning_rate")


def test_config_with_overrides_one_key_and_keeps_the_rest_of_the_base(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  embedding_dim: 8\ntrain:\n  epochs: 1\n")
    raw = config_with(str(base), "model", "ctcvr_weight", 3)
    assert raw == {"model": {"embedding_dim": 8, "ctcvr_weight": 3}, "train": {"epochs": 1}}
    assert config_with(None, "train", "learning_rate", 0.01) == {
        "model": {}, "train": {"learning_rate": 0.01}}


def _report(means):
    return {v: {"esmm": {"ctcvr_auc": {"mean": m, "std": 0.001, "values": [m], "seeds": [0]},
                         "field_rce_app": {"mean": m, "std": 0.0, "values": [m], "seeds": [0]}}}
            for v, m in means.items()}


def test_choose_maximises_aucs_minimises_rce_and_keeps_the_first_value_on_a_tie():
    reports = _report({1: 0.80, 3: 0.82, 10: 0.81})
    assert choose(SweepSpec("esmm", "model.ctcvr_weight", (1, 3, 10)), reports)["chosen"] == 3
    spec = SweepSpec("esmm", "model.ctcvr_weight", (1, 3, 10), select="field_rce_app")
    assert choose(spec, reports)["chosen"] == 1
    tie = _report({1: 0.8, 3: 0.8})
    assert choose(SweepSpec("esmm", "model.ctcvr_weight", (1, 3)), tie)["chosen"] == 1
    assert higher_is_better("entire_space_cvr_auc") and not higher_is_better("ctr_logloss")


def test_sweep_trains_each_value_validates_on_the_valid_split_and_writes_the_summary(
        tmp_path, small_processed):
    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump({
        "model": {"embedding_dim": 4, "tower_units": [8]},
        "train": {"batch_size": 1024, "epochs": 1, "max_steps": 3, "checkpoint_every": 2}}))
    out = str(tmp_path / "sweep")
    rc = main(["--model", "esmm", "--data", small_processed, "--out", out,
               "--param", "model.ctcvr_weight", "--values", "1", "3", "--seeds", "1",
               "--config", str(base), "--no-progress"])
    assert rc == 0
    summary = json.load(open(os.path.join(out, "summary", "sweep.json")))
    assert summary["split"] == "valid" and summary["chosen"] in (1, 3)
    assert [r["value"] for r in summary["rows"]] == [1, 3]
    for value in (1, 3):
        run = os.path.join(out, f"ctcvr_weight={value}", "runs", "esmm_seed0")
        cfg = json.load(open(os.path.join(run, "config.json")))
        assert cfg["model_config"]["ctcvr_weight"] == value
        assert cfg["model_config"]["embedding_dim"] == 4  # the base config is kept
        report = json.load(open(os.path.join(out, f"ctcvr_weight={value}", "report",
                                             "report.json")))
        assert report["split"] == "valid"
        assert os.path.exists(os.path.join(run, "predictions_valid.parquet"))
    row = {r["value"]: r for r in summary["rows"]}
    assert row[3]["values"] == report["models"]["esmm"]["ctcvr_auc"]["values"]
    assert os.path.getsize(os.path.join(out, "summary", "sweep.png")) > 1000
    assert "chosen" in open(os.path.join(out, "summary", "sweep.md")).read()

    # A finished run of ctcvr_weight=1 is not reused for another configuration.
    with pytest.raises(ValueError, match="another configuration"):
        compare(small_processed, os.path.join(out, "ctcvr_weight=1"), ["esmm"], 1,
                os.path.join(out, "ctcvr_weight=3", "config.yaml"), progress=False)


def test_bad_sweep_arguments_are_clear_errors_before_any_training(tmp_path, small_processed,
                                                                  capsys):
    rc = main(["--model", "esmm", "--data", small_processed, "--out", str(tmp_path / "s"),
               "--param", "model.ctcvr_weight", "--values", "1", "-2", "--seeds", "1"])
    assert rc == 2 and "ctcvr_weight" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "s" / "ctcvr_weight=1" / "runs")
