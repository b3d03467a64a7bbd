"""The foundation benchmark: generator, NVTabular (one process and a cluster), pandas peer."""

import json

import pytest

from benchmarks.run import main, parse_workers


def test_worker_counts_parse_and_a_one_worker_cluster_is_refused():
    assert parse_workers("2,4") == [2, 4]
    assert parse_workers("none") == [] and parse_workers("") == []
    with pytest.raises(ValueError, match=">= 2 workers"):
        parse_workers("1")
    with pytest.raises(ValueError, match="not a worker count"):
        parse_workers("two")


def test_one_run_measures_nvtabular_a_cluster_and_pandas_with_their_ratios(tmp_path, capsys):
    assert main(["--rows", "20000", "--cluster-workers", "2", "--out", str(tmp_path / "res"),
                 "--workdir", str(tmp_path / "work"), "--no-progress"]) == 0
    [path] = (tmp_path / "res").glob("foundation_*.json")
    entry = json.loads(path.read_text())["results"]["20000"]
    assert entry["rows_out_equal"]
    cluster = entry["nvtabular_cluster"]["2"]
    assert cluster["dask"].startswith("LocalCluster(2 workers")
    assert cluster["outputs_equal"] and cluster["differing_columns"] == []
    assert cluster["vs_one_process"] == pytest.approx(
        cluster["rows_per_second"] / entry["nvtabular"]["rows_per_second"])
    assert entry["ratio"]["cluster_rows_per_second"]["2"] == pytest.approx(
        cluster["rows_per_second"] / entry["pandas"]["rows_per_second"])
    out = capsys.readouterr().out
    assert "| 20,000 | 2 |" in out and "1 (in-process)" in out
