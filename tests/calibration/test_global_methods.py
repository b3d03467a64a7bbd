"""Global calibrators against scikit-learn (Platt, isotonic) and their basic properties."""

import numpy as np
import pytest
from sklearn.calibration import _SigmoidCalibration
from sklearn.isotonic import IsotonicRegression

from models import metrics as M
from calibration import (HistogramConfig, PlattConfig, make_calibrator)
from calibration.artifact import logit


def test_platt_matches_sklearn_sigmoid_calibration(cal_data):
    (p, y, _), (pt, _, _) = cal_data
    ours = make_calibrator("platt").fit(p, y).transform(pt)
    ref = _SigmoidCalibration().fit(logit(p), y).predict(logit(pt))
    np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=1e-6)


def test_isotonic_matches_sklearn_isotonic_regression(cal_data):
    (p, y, _), (pt, _, _) = cal_data
    ours = make_calibrator("isotonic").fit(p, y).transform(pt)
    ref = IsotonicRegression(out_of_bounds="clip").fit(p, y).predict(pt)
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_isotonic_matches_sklearn_with_ties_and_tiny_data():
    p = np.array([0.1, 0.1, 0.2, 0.2, 0.2, 0.5, 0.7, 0.7])
    y = np.array([0, 1, 1, 0, 0, 1, 0, 1], dtype=float)
    grid = np.linspace(0, 1, 101)
    ours = make_calibrator("isotonic").fit(p, y).transform(grid)
    ref = IsotonicRegression(out_of_bounds="clip").fit(p, y).predict(grid)
    np.testing.assert_allclose(ours, ref, atol=1e-12)


@pytest.mark.parametrize("method", ["platt", "isotonic", "histogram", "sir", "gamma"])
def test_global_methods_fix_the_average_but_not_the_apps(method, cal_data):
    (p, y, f), (pt, yt, ft) = cal_data
    q = make_calibrator(method).fit(p, y).transform(pt)
    assert abs(M.pcoc(yt, q) - 1.0) < 0.06
    assert M.field_rce(yt, q, ft["app_id"]) > 0.15          # the per-app bias stays
    assert M.logloss(yt, q) <= M.logloss(yt, pt) + 1e-3


def test_global_methods_ignore_fields(cal_data):
    (p, y, f), (pt, _, ft) = cal_data
    cal = make_calibrator("platt", fields=("app_id",)).fit(p, y, f)
    assert cal.fields == ()
    np.testing.assert_array_equal(cal.transform(pt), cal.transform(pt, ft))


def test_platt_slope_is_never_negative():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.5, 2000)
    y = (rng.random(2000) < 0.5 - p).astype(float)           # anti-correlated
    spec = make_calibrator("platt").fit(p, y).spec_
    assert spec["stages"][0]["function"]["a"] >= 0


def test_histogram_bins_without_positives_are_not_zero():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.001, 0.01, 5000)
    y = np.zeros(5000)
    y[:3] = 1
    q = make_calibrator("histogram", config=HistogramConfig(n_bins=10)).fit(p, y).transform(p)
    assert q.min() > 0


def test_sir_breaks_isotonic_ties_and_keeps_auc(cal_data):
    (p, y, _), (pt, yt, _) = cal_data
    iso = make_calibrator("isotonic").fit(p, y).transform(pt)
    sir = make_calibrator("sir").fit(p, y).transform(pt)
    assert len(np.unique(sir)) > len(np.unique(iso))
    assert M.auc(yt, sir) >= M.auc(yt, iso) - 1e-4


@pytest.mark.parametrize("bad", [dict(n_bins=0), dict(prior_strength=-1.0)])
def test_histogram_config_is_validated(bad):
    with pytest.raises(ValueError, match="parameter must be"):
        HistogramConfig(**bad)


def test_platt_config_is_validated():
    with pytest.raises(ValueError, match="The 'max_iter' parameter must be >= 1"):
        PlattConfig(max_iter=0)
