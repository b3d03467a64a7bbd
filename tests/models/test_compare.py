"""models.compare end to end (which runs models.evaluate): trained runs, report.json, report.md.

Several models in one report: ``aggregate`` below; the CLI run keeps to one model (2 seeds) for
time.
"""

import json
import os

import numpy as np
import pytest
import yaml

from models.compare import main
from models.evaluate import HEADLINE, aggregate

ACCEPTANCE_KEYS = ("entire_space_cvr_auc", "cvr_auc_clicked", "ctcvr_auc", "field_rce_app")


@pytest.fixture(scope="module")
def compared(tmp_path_factory, small_processed):
    out = tmp_path_factory.mktemp("compare")
    config = out / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"embedding_dim": 4, "tower_units": [8]},
        "train": {"batch_size": 1024, "epochs": 1, "max_steps": 3, "checkpoint_every": 2}}))
    rc = main(["--data", small_processed, "--out", str(out / "cmp"), "--models", "esmm",
               "--seeds", "2", "--config", str(config), "--no-progress"])
    assert rc == 0
    return str(out / "cmp")


def test_compare_trains_every_model_for_every_seed(compared):
    runs = sorted(os.listdir(os.path.join(compared, "runs")))
    assert runs == ["esmm_seed0", "esmm_seed1"]
    for run in runs:
        assert os.path.exists(os.path.join(compared, "runs", run, "metrics.json"))


def test_report_json_has_the_acceptance_keys_per_model_as_mean_std_over_seeds(compared):
    doc = json.load(open(os.path.join(compared, "report", "report.json")))
    assert set(doc["models"]) == {"esmm"} and doc["split"] == "test"
    for model, metrics in doc["models"].items():
        for key in ACCEPTANCE_KEYS:
            entry = metrics[key]
            assert entry["seeds"] == [0, 1] and len(entry["values"]) == 2
            assert entry["mean"] == pytest.approx(np.mean(entry["values"]))
            assert entry["std"] == pytest.approx(np.std(entry["values"], ddof=1))
        # Every run's metrics are in the report too, and each model sits below the oracle.
        for k in ("cvr_auc_clicked", "ctcvr_auc", "entire_space_cvr_auc"):
            assert metrics[k]["mean"] < metrics[f"oracle_{k}"]["mean"]
    assert len(doc["runs"]) == 2


def test_report_md_has_a_row_per_model_and_the_oracle_row_and_the_plots_exist(compared):
    report = os.path.join(compared, "report")
    md = open(os.path.join(report, "report.md")).read()
    doc = json.load(open(os.path.join(report, "report.json")))
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["model", "seeds", *HEADLINE]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in lines[1:]}
    assert set(rows) == {"esmm", "oracle (true probabilities)"}
    oracle = rows["oracle (true probabilities)"]
    col = header.index("ctcvr_auc")
    assert oracle[col] == f"{doc['models']['esmm']['oracle_ctcvr_auc']['mean']:.4f}"
    assert oracle[header.index("field_rce_app")] == "-"
    assert rows["esmm"][1] == "2"
    for png in ("auc_bars.png", "reliability.png"):
        assert os.path.getsize(os.path.join(report, png)) > 1000


def test_aggregate_groups_runs_by_model_with_sample_std():
    runs = [{"model": "esmm", "seed": s, "metrics": {"ctcvr_auc": v}}
            for s, v in ((0, 0.80), (1, 0.82), (2, 0.84))]
    runs.append({"model": "naive", "seed": 0, "metrics": {"ctcvr_auc": 0.7}})
    report = aggregate(runs)
    assert report["esmm"]["ctcvr_auc"]["mean"] == pytest.approx(0.82)
    assert report["esmm"]["ctcvr_auc"]["std"] == pytest.approx(0.02)
    assert report["esmm"]["ctcvr_auc"]["seeds"] == [0, 1, 2]
    assert report["naive"]["ctcvr_auc"] == {"mean": 0.7, "std": 0.0, "values": [0.7],
                                            "seeds": [0]}
