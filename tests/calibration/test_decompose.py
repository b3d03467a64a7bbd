"""The ground-truth decomposition of the remaining per-app error (calibration.decompose)."""

import numpy as np
import pytest

from calibration.calibrate import Variant
from calibration import AdaCalibConfig
from calibration.decompose import (TRUTH, drift_decomposition, field_rce_truth, kl,
                                          kl_decomposition, level_errors)

APPS = np.array([3, 4, 5])


def world(n: int, seed: int, app_shift, app_slope=(1.0, 1.0, 1.0)):
    """Clicked rows with a true pCVR per row; the base prediction is off per app by a logit
    level (``app_shift``) and a slope (``app_slope``)."""
    rng = np.random.default_rng(seed)
    app = rng.choice(APPS, size=n)
    z = rng.normal(-3.0, 0.8, n)
    idx = app - 3
    truth = 1 / (1 + np.exp(-z))
    base = 1 / (1 + np.exp(-((z + 3.0) * np.asarray(app_slope)[idx] - 3.0
                             + np.asarray(app_shift)[idx])))
    y = (rng.random(n) < truth).astype(np.int64)
    return {"click": np.ones(n, dtype=np.int64), "purchase": y, "pcvr": base, TRUTH: truth,
            "app_id": app, "pctr": np.full(n, 0.05)}


def test_field_rce_against_truth_is_zero_for_the_truth_and_sees_a_level_error():
    w = world(20_000, 0, (0, 0, 0))
    assert field_rce_truth(w[TRUTH], w[TRUTH], w["app_id"]) == 0.0
    assert field_rce_truth(w[TRUTH], 1.2 * w[TRUTH], w["app_id"]) == pytest.approx(0.2)
    errors = level_errors(w[TRUTH], 1.2 * w[TRUTH], w["app_id"])
    assert set(errors) == {3, 4, 5} and all(e == pytest.approx(0.2) for e in errors.values())


def test_kl_parts_sum_to_the_total_and_separate_level_from_shape():
    level_only = world(30_000, 1, (0.5, -0.4, 0.0))
    d = kl_decomposition(level_only[TRUTH], level_only["pcvr"], level_only["app_id"])
    assert d["level"] + d["shape"] + d["refinement"] == pytest.approx(d["total"])
    assert d["level"] > 10 * d["shape"] and d["refinement"] < 0.05 * d["total"]
    shape_only = world(30_000, 2, (0, 0, 0), (1.6, 0.6, 1.0))
    d = kl_decomposition(shape_only[TRUTH], shape_only["pcvr"], shape_only["app_id"])
    assert d["shape"] > d["level"] and d["shape"] > 0.5 * d["total"]
    assert kl(shape_only[TRUTH], shape_only[TRUTH]) == pytest.approx(0.0, abs=1e-12)


def test_a_per_app_calibrator_has_little_capacity_error_and_the_day_shift_shows_as_drift():
    """The calibration day and the test day differ by a per-app shift of the truth: fitted on
    the test day's truth, AdaCalib's level is right; fitted on the calibration day, it is off
    by the shift (drift); the real fit adds estimation noise on top."""
    fit = world(40_000, 3, (0.4, -0.3, 0.1))
    test = world(40_000, 4, (0.4 + 0.2, -0.3 - 0.2, 0.1))    # the base is off by 0.2 more
    variant = Variant("adacalib", "adacalib", AdaCalibConfig(max_iter=40))
    d = drift_decomposition(fit, test, variant, ("app_id",), replicates=5)
    truth = d["field_rce_truth"]
    assert truth["capacity"] < 0.05
    assert truth["drift"] > 0.1 > truth["capacity"]
    assert d["floor"] > 0 and d["field_rce_observed"] > 0
    assert set(d["level_error"]["drift"]) == {3, 4, 5}
    # the uncalibrated base: the same error at every stage
    base = drift_decomposition(fit, test, None, ("app_id",))["field_rce_truth"]
    assert base["capacity"] == base["drift"] == base["estimation"] > truth["drift"]


def test_affine_logit_fit_recovers_slope_and_intercept_from_soft_labels():
    from calibration.decompose import affine_logit_fit
    x = np.linspace(-6, 1, 5000)
    target = 1 / (1 + np.exp(-(0.7 * x - 0.4)))
    a, b = affine_logit_fit(x, target)
    assert a == pytest.approx(0.7, abs=1e-6) and b == pytest.approx(-0.4, abs=1e-6)


def test_a_pure_level_error_has_no_shape_part():
    w = world(30_000, 5, (0.5, -0.4, 0.2))
    d = kl_decomposition(w[TRUTH], w["pcvr"], w["app_id"])
    assert abs(d["shape"]) < 1e-6 * d["total"] + 1e-9 and d["level"] > 0.9 * d["total"]
