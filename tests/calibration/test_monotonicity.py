"""Property: every calibrator is non-decreasing in the base prediction within a field value,
for seen and unseen values, whatever data it was fitted on (hypothesis: a few hundred fitted
datasets per method, 80 for the methods that fit a network)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibration import (METHODS, AdaCalibConfig, NeuCalibConfig, TrendConfig,
                                make_calibrator)

FIELDS = ("app_id", "category_id")
GRID = np.concatenate(([0.0, 1e-9], np.linspace(0, 1, 201), np.geomspace(1e-6, 0.5, 200),
                       [1.0]))


@st.composite
def fit_data(draw):
    n = draw(st.integers(20, 3000))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_apps = draw(st.integers(1, 6))
    app = rng.integers(0, n_apps, n)
    cat = rng.integers(0, draw(st.integers(1, 10)), n)
    base_rate = draw(st.floats(0.005, 0.5))
    p = np.clip(rng.beta(1, 1 / base_rate, n), 0, 1)
    if draw(st.booleans()):
        p = np.round(p, 2)                                   # many ties
    y = (rng.random(n) < draw(st.floats(0.0, 1.0)) * p + base_rate / 4).astype(float)
    y[0] = 1.0                                               # at least one positive
    return p, y, {"app_id": app, "category_id": cat}


def _assert_monotone(cal, apps, cats):
    for a in apps:
        for c in cats:
            f = {"app_id": np.full(len(GRID), a), "category_id": np.full(len(GRID), c)}
            order = np.argsort(GRID, kind="stable")
            q = cal.transform(GRID[order], {k: v[order] for k, v in f.items()})
            assert np.all(np.diff(q) >= -1e-12), (cal.name, a, c)
            assert np.all((q >= 0) & (q <= 1))


EXAMPLES_PER_METHOD = 300
#: The methods that fit a network per dataset (seconds each on 2 cores) get fewer datasets.
FITTED_NETWORKS = ("neucalib", "adacalib", "adacalib_trend")
EXAMPLES_PER_NETWORK_METHOD = 80


def _config(method):
    """Short fits: monotonicity is a property of the exported form, not of convergence."""
    if method == "neucalib":
        return NeuCalibConfig(max_iter=100)
    if method == "adacalib":
        return AdaCalibConfig(max_iter=20, min_positives_per_bucket=2)
    if method == "adacalib_trend":
        return TrendConfig(base_config={"max_iter": 20, "min_positives_per_bucket": 2},
                           min_history_days=2)
    return None


def _fit_and_check(method, data):
    p, y, f = data
    if getattr(METHODS[method], "uses_history", False):
        f = {**f, "day": np.arange(len(p)) % 3}            # two history days, then the last
    cal = make_calibrator(method, FIELDS, _config(method)).fit(p, y, f)
    _assert_monotone(cal, [0, 1, 99], [0, 3, 99])            # 99: unseen


@pytest.mark.parametrize("method", [m for m in METHODS if m not in FITTED_NETWORKS])
@settings(max_examples=EXAMPLES_PER_METHOD, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=fit_data())
def test_every_calibrator_is_monotone_for_seen_and_unseen_values(method, data):
    _fit_and_check(method, data)


@pytest.mark.parametrize("method", FITTED_NETWORKS)
@settings(max_examples=EXAMPLES_PER_NETWORK_METHOD, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=fit_data())
def test_every_network_calibrator_is_monotone_for_seen_and_unseen_values(method, data):
    _fit_and_check(method, data)
