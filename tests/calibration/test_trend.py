"""adacalib_trend (our extension): per-value drift over history days, extrapolated one day."""

import numpy as np
import pytest

from calibration import AdaCalibConfig, TrendConfig, make_calibrator
from calibration.trend import shrink_slopes, value_slopes

#: logit drift per day of each app (index = app id; 3-7 used, as Categorify codes)
DRIFT = np.array([0.0, 0.0, 0.0, 0.0, 0.15, -0.12, 0.08, -0.2])
APPS = np.arange(3, 8)
FAST = AdaCalibConfig(max_iter=40)


def drifting_days(n_per_day: int, days: int, seed: int):
    """Rows of ``days`` days: the truth drifts per app and day, the base prediction does not
    know the day (it holds the mean level of days ``0..days-2``)."""
    rng = np.random.default_rng(seed)
    n = n_per_day * days
    day = np.repeat(np.arange(days), n_per_day)
    app = rng.choice(APPS, size=n)
    z = rng.normal(-3.0, 0.8, n)
    centre = (days - 2) / 2.0
    truth = 1 / (1 + np.exp(-(z + DRIFT[app] * (day - centre))))
    y = (rng.random(n) < truth).astype(float)
    p = 1 / (1 + np.exp(-z))
    return p, y, app, day, truth


def test_value_slopes_recover_each_apps_drift_per_day():
    p, y, app, day, _ = drifting_days(60_000, 6, 0)
    slopes = value_slopes(p, y, app, day)
    for a in APPS:
        slope, var = slopes[int(a)]
        # the log ratio of sums moves a little less than the logit (1 - p factor)
        assert slope == pytest.approx(DRIFT[a] * 0.95, abs=4 * np.sqrt(var) + 0.01), a


def test_values_with_too_few_days_get_no_slope():
    p, y, app, day, _ = drifting_days(2_000, 2, 1)
    assert value_slopes(p, y, app, day, min_days=3) == {}


def test_slopes_within_their_noise_are_shrunk_to_zero():
    slopes = {3: (0.01, 0.01), 4: (-0.02, 0.01), 5: (0.0, 0.02)}
    shrunk, tau2 = shrink_slopes(slopes)
    assert tau2 == 0.0 and all(v == 0.0 for v in shrunk.values())
    big = {3: (0.3, 0.0001), 4: (-0.3, 0.0001), 5: (0.01, 0.0001)}
    shrunk, tau2 = shrink_slopes(big)
    assert tau2 > 0 and shrunk[3] == pytest.approx(0.3, rel=0.01)


def test_trend_calibrator_fixes_the_next_days_level_that_adacalib_misses():
    """Fitted on days 0-5 (day 5 = calibration day), scored on day 6: AdaCalib is one day of
    drift behind per app, the extension is not."""
    p, y, app, day, truth = drifting_days(40_000, 8, 2)
    fit = day <= 5
    test = day == 6
    ada = make_calibrator("adacalib", ("app_id",), FAST)
    ada.fit(p[fit & (day == 5)], y[fit & (day == 5)], {"app_id": app[fit & (day == 5)]})
    trend = make_calibrator("adacalib_trend", ("app_id",),
                            TrendConfig(base_config={"max_iter": 40}))
    trend.fit(p[fit], y[fit], {"app_id": app[fit], "day": day[fit]})

    def level_error(cal):
        q = cal.transform(p[test], {"app_id": app[test]})
        return np.mean([abs(q[app[test] == a].sum() / truth[test][app[test] == a].sum() - 1)
                        for a in APPS])

    assert level_error(trend) < 0.5 * level_error(ada)
    assert trend.spec_["meta"]["calibration_day"] == 5
    assert trend.spec_["meta"]["history_days"] == [0, 1, 2, 3, 4]


def test_without_drift_the_trend_calibrator_equals_its_base():
    rng = np.random.default_rng(3)
    n = 60_000
    day = np.repeat(np.arange(6), n // 6)
    app = rng.choice(APPS, size=n)
    p = rng.uniform(0.01, 0.1, n)
    y = (rng.random(n) < p).astype(float)
    trend = make_calibrator("adacalib_trend", ("app_id",),
                            TrendConfig(base_config={"max_iter": 40})).fit(
        p, y, {"app_id": app, "day": day})
    last = day == 5
    ada = make_calibrator("adacalib", ("app_id",), FAST).fit(p[last], y[last],
                                                             {"app_id": app[last]})
    grid = np.linspace(0.01, 0.1, 50)
    for a in APPS:
        f = {"app_id": np.full(50, a)}
        np.testing.assert_allclose(trend.transform(grid, f), ada.transform(grid, f),
                                   rtol=0.02)


def test_fit_without_a_day_column_names_it():
    cal = make_calibrator("adacalib_trend", ("app_id",))
    with pytest.raises(ValueError, match="'day' column"):
        cal.fit(np.full(10, 0.1), np.zeros(10), {"app_id": np.full(10, 3)})


@pytest.mark.parametrize("kwargs, name", [({"base": "platt"}, "base"),
                                          ({"base": "adacalib_trend"}, "base"),
                                          ({"horizon_days": -1}, "horizon_days"),
                                          ({"min_history_days": 1}, "min_history_days")])
def test_bad_trend_config_names_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        TrendConfig(**kwargs)


def test_bad_base_config_override_is_rejected_by_the_base_config():
    with pytest.raises(ValueError, match="'shrink_shape'"):
        TrendConfig(base_config={"shrink_shape": -1.0})


def test_centred_slopes_carry_only_the_drift_between_values():
    """A drift common to every value (+0.1 per day on all apps) is not extrapolated when
    centred; the differences between the apps are."""
    rng = np.random.default_rng(4)
    n_per_day, days = 30_000, 6
    day = np.repeat(np.arange(days), n_per_day)
    app = rng.choice([3, 4], size=len(day))
    z = rng.normal(-3.0, 0.8, len(day))
    drift = np.where(app == 3, 0.1, 0.25) * (day - 2)
    y = (rng.random(len(day)) < 1 / (1 + np.exp(-(z + drift)))).astype(float)
    p = 1 / (1 + np.exp(-z))
    f = {"app_id": app, "day": day}
    centred = make_calibrator("adacalib_trend", ("app_id",),
                              TrendConfig(base_config={"max_iter": 20}, shrink=False)).fit(p, y, f)
    plain = make_calibrator("adacalib_trend", ("app_id",),
                            TrendConfig(base_config={"max_iter": 20}, shrink=False,
                                        centre=False)).fit(p, y, f)
    sc = centred.spec_["meta"]["slopes"]["app_id"]
    sp = plain.spec_["meta"]["slopes"]["app_id"]
    # the log ratio of sums moves a little less than the logit
    assert 0.07 < sp["3"]["used"] < 0.11 and 0.19 < sp["4"]["used"] < 0.26
    assert sc["4"]["used"] - sc["3"]["used"] == pytest.approx(sp["4"]["used"] - sp["3"]["used"])
    common = centred.spec_["meta"]["common_slope"]["app_id"]
    assert sp["3"]["used"] < common < sp["4"]["used"]
    assert sc["3"]["used"] < 0 < sc["4"]["used"]
