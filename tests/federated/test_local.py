"""``python -m federated.local``: the acceptance command end to end on a few rows, and the
report built from per-seed results (merging runs, mean ± std)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from federated.local import build_report, merge

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = """\
model:
  embedding_dim: 4
  tower_units: [8]
train:
  batch_size: 512
  max_steps: 12
  checkpoint_every: 4
  eval_batch_size: 4096
"""


@pytest.mark.slow
def test_local_run_writes_federated_json_with_every_arm_and_both_leak_states(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "federated.local", "--rows", "20000", "--out", str(out),
         "--config", str(config), "--no-progress"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "federated.json").read_text())
    for arm in ("advertiser_only", "federated", "centralized", "federated_no_defence"):
        assert 0.0 < report["entire_space_cvr_auc"][arm] < 1.0
    for attack in ("leak_auc_norm", "leak_auc_direction", "leak_auc_pca", "leak_auc_batch"):
        assert set(report[attack]) == {"off", "on"}
        assert all(0.0 <= v <= 1.0 for v in report[attack].values())
    assert set(report["marvell_auc_bound_at_mean_kl"]) == {"on"}  # Marvell runs by default
    assert report["train_bytes_per_sample"] > 0
    assert report["throughput"]["federated_vs_centralized"] > 0
    assert (out / "federated.md").exists() and (out / "federated.png").exists()
    assert "federated.local" in proc.stdout  # the summary table
    # the parties' logs hold no raw id
    keys = [line for line in (out / "parties").rglob("*.parquet")][:1]
    import pyarrow.parquet as pq
    some_keys = pq.read_table(keys[0], columns=["request_key"]).column(0).to_pylist()[:50]
    logs = "".join(p.read_text(errors="replace") for p in (out / "runs").rglob("*.log"))
    assert logs and not any(k in logs for k in some_keys)


def _result(arm, seed, es, **extra):
    return {"arm": arm, "seed": seed, "samples_per_second": 100.0 + seed,
            "test": {"entire_space_cvr_auc": es, "ctcvr_auc": es, "cvr_auc_clicked": es,
                     "ctr_auc": es}, **extra}


def _federated(arm, seed, es, norm, direction):
    leak = {"leak_auc_norm": norm, "leak_auc_direction": direction}
    return _result(arm, seed, es, leak_sent=leak, leak_raw=leak, train_bytes_per_sample=64.0,
                   dp={"enabled": False})


def test_report_gives_the_mean_over_seeds_per_arm_and_leak_on_from_federated_off_from_the_other():
    results = {
        "advertiser_only": [_result("advertiser_only", s, 0.80 + s / 100) for s in (0, 1, 2)],
        "centralized": [_result("centralized", s, 0.84) for s in (0, 1, 2)],
        "federated": [_federated("federated", s, 0.83, 0.6, 0.55) for s in (0, 1, 2)],
        "federated_no_defence": [_federated("federated_no_defence", s, 0.82, 0.99, 0.95)
                                 for s in (0, 1, 2)],
    }
    report = build_report(results, {})
    assert report["entire_space_cvr_auc"]["advertiser_only"] == pytest.approx(0.81)
    assert report["entire_space_cvr_auc_std"]["advertiser_only"] == pytest.approx(0.01)
    assert report["entire_space_cvr_auc_values"]["centralized"] == [0.84] * 3
    assert report["leak_auc_norm"] == pytest.approx({"off": 0.99, "on": 0.6})
    assert report["leak_auc_direction"] == pytest.approx({"off": 0.95, "on": 0.55})
    assert report["throughput"]["federated_vs_centralized"] == pytest.approx(1.0)


def test_merge_joins_seeds_of_separate_runs_and_refuses_a_repeated_seed(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for d, seeds in ((first, (0,)), (second, (1, 2))):
        d.mkdir()
        (d / "results_partial.json").write_text(json.dumps(
            {"advertiser_only": [_result("advertiser_only", s, 0.8) for s in seeds]}))
    assert merge([str(first), str(second)], str(tmp_path / "merged")) == 0
    merged = json.loads((tmp_path / "merged" / "federated.json").read_text())
    assert merged["arms"]["advertiser_only"]["seeds"] == [0, 1, 2]
    with pytest.raises(ValueError, match="repeat"):
        merge([str(first), str(first)], str(tmp_path / "again"))
    assert os.path.exists(tmp_path / "merged" / "federated.md")


def test_a_run_whose_parties_applied_different_batches_is_refused():
    from federated.local import federated_record
    media = {"chain": "a", "applied_batches": 3, "samples_per_second": 1.0,
             "train_bytes_per_sample": 64.0, "dp": {}, "config": {"split": {"width": 8}}}
    advertiser = {"chain": "b", "applied_batches": 3, "test": {}, "leak_sent": {},
                  "leak_raw": {}}
    with pytest.raises(RuntimeError, match="different batches"):
        federated_record("federated", 0, media, advertiser, "RUN")
    advertiser["chain"] = "a"
    assert federated_record("federated", 0, media, advertiser, "RUN")["width"] == 8
