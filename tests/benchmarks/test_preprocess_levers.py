"""The lever ladder of the fast CPU path."""

import json

from benchmarks.preprocess_levers import STEPS, main


def test_the_ladder_records_each_step_with_its_speed_up(small_generated, tmp_path, capsys):
    out = tmp_path / "levers.json"
    assert main(["--input", small_generated, "--from-step", "3", "--out", str(out),
                 "--work", str(tmp_path / "work")]) == 0
    doc = json.loads(out.read_text())
    assert [r["levers"] for r in doc["results"]] == list(STEPS[3:])
    assert doc["results"][0]["speedup_vs_first"] == 1.0
    assert all(r["rows"] == doc["results"][0]["rows"] > 0 for r in doc["results"])
    assert "+ read-once reader" in capsys.readouterr().out
    assert not list((tmp_path / "work").iterdir())  # outputs deleted
