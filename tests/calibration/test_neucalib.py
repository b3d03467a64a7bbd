"""NeuCalib: per-app offsets fix field miscalibration; unseen values get the global map."""

import numpy as np
import pytest

from models import metrics as M
from calibration import NeuCalibConfig, make_calibrator


@pytest.fixture(scope="module")
def neu(cal_data):
    (p, y, f), _ = cal_data
    return make_calibrator("neucalib", ("app_id",)).fit(p, y, f)


def test_neucalib_fixes_per_app_miscalibration(neu, cal_data):
    (p, y, _), (pt, yt, ft) = cal_data
    q = neu.transform(pt, ft)
    iso = make_calibrator("isotonic").fit(p, y).transform(pt)
    assert M.field_rce(yt, q, ft["app_id"]) < 0.5 * M.field_rce(yt, iso, ft["app_id"])
    assert abs(M.pcoc(yt, q) - 1.0) < 0.05


def test_learned_offsets_follow_the_app_bias(neu, app_bias):
    stage = neu.spec_["stages"][1]
    off = dict(zip(stage["values"], stage["offsets"]))
    # the base adds APP_BIAS to the logit, the calibrator must take (about) that away
    corr = np.corrcoef([off[a] for a in range(3, 8)], -app_bias[3:8])[0, 1]
    assert corr > 0.95


def test_unseen_value_gets_the_global_function_only(neu, cal_data):
    _, (pt, _, _) = cal_data
    unseen = neu.transform(pt, {"app_id": np.full(len(pt), 77)})
    g = neu.spec_["stages"][0]["function"]
    z = np.interp(np.log(pt) - np.log1p(-pt), g["x"], g["y"])
    np.testing.assert_allclose(unseen, 1 / (1 + np.exp(-z)), rtol=1e-9)


def test_config_is_validated():
    with pytest.raises(ValueError, match="The 'n_knots' parameter must be"):
        NeuCalibConfig(n_knots=1)
