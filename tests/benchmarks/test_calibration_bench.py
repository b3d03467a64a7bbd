"""A short run of the calibration benchmark."""

import json
import os

from benchmarks.calibration_bench import main


def test_calibration_bench_records_times_and_artifact_agreement(tmp_path):
    out = str(tmp_path / "results")
    rc = main(["--rows", "20000", "--methods", "platt,isotonic,adacalib", "--out", out])
    assert rc == 0
    files = os.listdir(out)
    assert len(files) == 1 and files[0].startswith("calibration_")
    doc = json.load(open(os.path.join(out, files[0])))
    assert doc["rows"] == 20000 and "cpu_model" in doc["machine"] and "numpy" in doc["versions"]
    for m in ("platt", "isotonic", "adacalib"):
        r = doc["methods"][m]
        # times are recorded (rounded to ms: a fast transform of 20k rows may read 0.0)
        for key in ("fit_s", "transform_s", "artifact_load_and_transform_s"):
            assert isinstance(r[key], float) and 0.0 <= r[key] < 600, (m, key, r[key])
        assert r["artifact_max_abs_diff"] <= 1e-6
    assert doc["adacalib_transform_under_limit"] is True
    assert doc["methods"]["adacalib"]["field_rce_app"] < doc["before"]["field_rce_app"]
