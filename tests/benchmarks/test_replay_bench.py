"""A short run of the replay benchmark."""

import json
import os

from benchmarks.replay_bench import main


def test_replay_bench_records_stage_times_and_the_limit(tmp_path):
    out = str(tmp_path / "results")
    assert main(["--rows", "20000", "--out", out]) == 0
    files = os.listdir(out)
    assert len(files) == 1 and files[0].startswith("replay_")
    doc = json.load(open(os.path.join(out, files[0])))
    assert doc["rows"] == 20000 and "cpu_model" in doc["machine"]
    for key in ("world_s", "replay_s", "baseline_pass_s"):
        assert isinstance(doc[key], float) and 0.0 <= doc[key] < 600, key
    assert doc["under_limit"] is True
    assert 0 < doc["expected_conversions"]["model"] < doc["expected_conversions"]["oracle"]
