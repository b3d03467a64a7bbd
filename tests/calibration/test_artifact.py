"""The exported artifact: numpy-only import, round trip for every method, input errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from calibration import (METHODS, AdaCalibConfig, TrendConfig, load_calibrator,
                                make_calibrator)
from calibration.artifact import ArtifactCalibrator, check_fields, check_predictions

FIELDS = ("app_id", "category_id")
FAST = {"adacalib": AdaCalibConfig(max_iter=40),
        "adacalib_trend": TrendConfig(base_config={"max_iter": 40})}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def fitted(cal_data):
    (p, y, f), _ = cal_data
    day = {"day": np.arange(len(p)) % 4}          # four days, for the methods that use them
    return {m: make_calibrator(m, FIELDS, FAST.get(m)).fit(
        p, y, {**f, **day} if getattr(METHODS[m], "uses_history", False) else f)
        for m in METHODS}


@pytest.mark.parametrize("method", list(METHODS))
def test_saved_artifact_reproduces_the_fitted_transform(method, fitted, cal_data, tmp_path):
    _, (pt, _, ft) = cal_data
    cal = fitted[method]
    cal.save(str(tmp_path / method))
    loaded = load_calibrator(str(tmp_path / method))
    np.testing.assert_allclose(loaded.transform(pt, ft), cal.transform(pt, ft), atol=1e-6,
                               rtol=0)
    assert set(loaded.fields) <= set(FIELDS)
    assert os.listdir(tmp_path / method) == ["calibrator.json"]


@pytest.mark.parametrize("method", list(METHODS))
def test_artifact_is_plain_json_without_pickle(method, fitted, tmp_path):
    fitted[method].save(str(tmp_path / method))
    spec = json.load(open(tmp_path / method / "calibrator.json"))
    assert spec["format"] == "extcvr.calibrator" and spec["method"] == method


def test_artifact_module_imports_neither_tensorflow_nor_sklearn():
    code = ("import sys; import calibration.artifact as a; "
            "bad = [m for m in ('tensorflow', 'sklearn', 'scipy', 'pandas') if m in sys.modules];"
            " print(bad); sys.exit(1 if bad else 0)")
    # import the file directly so that calibration/__init__ stays out
    path = os.path.join(REPO, "calibration", "artifact.py")
    code = code.replace("import calibration.artifact as a",
                        f"import importlib.util as u; s = u.spec_from_file_location('a', {path!r});"
                        " a = u.module_from_spec(s); s.loader.exec_module(a)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # the serving code imports it through the package
    code = ("import sys; import calibration.artifact; "
            "bad = [m for m in ('tensorflow', 'sklearn', 'scipy', 'pandas') if m in sys.modules];"
            " print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr


def test_transform_accepts_triton_shaped_batches(fitted, cal_data):
    _, (pt, _, ft) = cal_data
    cal = fitted["adacalib"]
    flat = cal.transform(pt[:100], {k: v[:100] for k, v in ft.items()})
    col = cal.transform(pt[:100, None], {k: v[:100, None] for k, v in ft.items()})
    np.testing.assert_array_equal(flat, col)


def test_nan_predictions_raise_naming_the_column_and_row_count():
    p = np.array([0.1, np.nan, 0.2, np.nan])
    with pytest.raises(ValueError, match=r"pcvr: 2 of 4 rows are NaN"):
        check_predictions(p)


def test_predictions_outside_unit_interval_raise_with_row_count():
    with pytest.raises(ValueError, match=r"pcvr: 1 of 3 rows are outside \[0, 1\]"):
        check_predictions(np.array([0.1, 1.5, 0.2]))


def test_missing_field_column_raises_naming_it(fitted, cal_data):
    _, (pt, _, ft) = cal_data
    with pytest.raises(ValueError, match=r"field column 'category_id' is missing \(60000 rows"):
        fitted["adacalib"].transform(pt, {"app_id": ft["app_id"]})


def test_fractional_or_nan_field_values_raise_naming_the_column():
    with pytest.raises(ValueError, match=r"field column 'app_id': 1 of 3 rows are not integer"):
        check_fields({"app_id": np.array([1.0, np.nan, 3.0])}, ("app_id",), 3)


def test_field_column_of_wrong_length_raises():
    with pytest.raises(ValueError, match=r"'app_id' must be 1-D with 3 rows"):
        check_fields({"app_id": np.arange(4)}, ("app_id",), 3)


def test_fit_rejects_bad_labels_and_nan_predictions():
    cal = make_calibrator("platt")
    with pytest.raises(ValueError, match=r"purchase: 1 of 3 rows are not binary"):
        cal.fit(np.array([0.1, 0.2, 0.3]), np.array([0, 2, 1]))
    with pytest.raises(ValueError, match=r"pcvr: 1 of 3 rows are NaN"):
        cal.fit(np.array([0.1, np.nan, 0.3]), np.array([0, 1, 1]))


def test_transform_before_fit_raises():
    with pytest.raises(RuntimeError, match="not fitted"):
        make_calibrator("isotonic").transform(np.array([0.1]))


def test_unknown_format_or_non_monotone_knots_are_rejected():
    with pytest.raises(ValueError, match="not a calibrator artifact"):
        ArtifactCalibrator({"format": "other"})
    bad = {"format": "extcvr.calibrator", "format_version": 1, "fields": [],
           "stages": [{"type": "global", "function": {"kind": "interp", "x_space": "prob",
                                                      "y_space": "prob", "x": [0.1, 0.2],
                                                      "y": [0.3, 0.1]}}]}
    with pytest.raises(ValueError, match="non-decreasing"):
        ArtifactCalibrator(bad)


def test_unknown_method_name_lists_the_methods():
    with pytest.raises(ValueError, match="'method' parameter must be one of"):
        make_calibrator("beta")


def test_field_aware_method_without_fields_is_an_error():
    with pytest.raises(ValueError, match="'fields' parameter of adacalib"):
        make_calibrator("adacalib", fields=())
