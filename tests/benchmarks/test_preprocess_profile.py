"""The preprocessing profile: repeated wall times and the cProfile parts of one run."""

import json

from benchmarks.preprocess_profile import PARTS, main


def test_the_profile_records_each_runs_wall_time_and_every_part(small_generated, tmp_path,
                                                                capsys):
    out = tmp_path / "profile.json"
    assert main(["--input", small_generated, "--repeats", "1", "--out", str(out),
                 "--work", str(tmp_path / "work")]) == 0
    doc = json.loads(out.read_text())
    assert doc["rows"] > 0 and len(doc["runs"]) == 1
    assert doc["runs"][0]["wall_s"] > doc["runs"][0]["seconds"] > 0
    parts = doc["profile_s"]
    assert list(parts) == [label for label, _ in PARTS]
    everything, fit = parts[PARTS[0][0]], parts["Workflow.fit"]
    assert everything >= fit > 0 and parts["transform + write of the splits (to_parquet)"] > 0
    assert "| Workflow.fit |" in capsys.readouterr().out
    assert not list((tmp_path / "work").iterdir())


def test_zero_repeats_is_refused(small_generated, capsys):
    assert main(["--input", small_generated, "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err
