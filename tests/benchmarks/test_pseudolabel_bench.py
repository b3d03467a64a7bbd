"""The pseudo-labelling benchmark on the small dataset and teacher of the test session."""

import json
import os

from benchmarks.pseudolabel_bench import main


def test_the_benchmark_records_rows_time_and_the_childs_peak_rss(pseudolabelled,
                                                                 ukd_teacher_run,
                                                                 small_processed, tmp_path):
    out = str(tmp_path / "results")
    assert main(["--data", small_processed, "--teacher", ukd_teacher_run, "--out", out]) == 0
    files = [f for f in os.listdir(out) if f.startswith("pseudolabel_")]
    assert len(files) == 1 and not os.path.exists(os.path.join(out, ".pseudolabel_bench_output"))
    doc = json.load(open(os.path.join(out, files[0])))
    manifest = json.load(open(os.path.join(small_processed, "manifest.json")))
    assert doc["rows"] == manifest["rows_out"]
    assert 100 < doc["peak_rss_mb"] < doc["peak_rss_limit_mb"] and doc["within_limit"]
    assert doc["rows_per_second"] > 0 and "nvtabular" in doc["versions"]
