"""benchmarks.federated_bench: the variants parser and one tiny measured run."""

import json

import pytest

from benchmarks.federated_bench import main, parse_variants


def test_variants_parse_width_and_wire_dtype_and_refuse_anything_else():
    assert parse_variants("8:float32,16:float16") == [
        {"width": 8, "wire_dtype": "float32"}, {"width": 16, "wire_dtype": "float16"}]
    for bad in ("8", "x:float32", "8:int8"):
        with pytest.raises(ValueError, match="WIDTH"):
            parse_variants(bad)


@pytest.mark.slow
def test_bench_measures_federated_against_centralised_in_the_same_run(small_processed, tmp_path):
    out = tmp_path / "results"
    assert main(["--data", small_processed, "--steps", "10", "--variants", "4:float16",
                 "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    doc = json.loads(next(out.glob("federated_throughput_*.json")).read_text())
    assert len(doc["centralized_samples_per_second"]) == 2
    (variant,) = doc["variants"]
    assert 0 < variant["steps"] <= 10 and variant["vs_centralized"] > 0
    assert variant["bytes_per_sample"] > 2 * 4 * 2  # width 4 fp16, both directions
    assert doc["psi_seconds"] > 0 and doc["machine"]["nproc"] >= 1
