"""Synthetic calibration data: a base pCVR that is miscalibrated differently per media app."""

import numpy as np
import pytest

#: logit bias of the base prediction per app_id (index = app id; 0-2 unused, like Categorify's
#: reserved codes).
APP_BIAS = np.array([0.0, 0.0, 0.0, 0.8, -0.6, 0.3, -1.0, 0.5])
APPS = np.arange(3, 8)


def make_data(n: int, seed: int, n_categories: int = 20):
    """``(p, y, fields)``: true pCVR from a logit ~ N(-3.5, 1); the base prediction adds the
    app's bias, so global calibration cannot fix every app."""
    rng = np.random.default_rng(seed)
    app = rng.choice(APPS, size=n, p=[0.35, 0.25, 0.2, 0.12, 0.08])
    cat = rng.integers(1, n_categories + 1, n)
    z = rng.normal(-3.5, 1.0, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-(z + APP_BIAS[app])))
    return p, y, {"app_id": app, "category_id": cat}


@pytest.fixture(scope="session")
def app_bias() -> np.ndarray:
    """The per-app logit bias of the synthetic base prediction (``APP_BIAS``)."""
    return APP_BIAS


@pytest.fixture(scope="session")
def cal_data():
    """A calibration split and a test split of 60k rows each (~2.5k positives)."""
    return make_data(60_000, 1), make_data(60_000, 2)
