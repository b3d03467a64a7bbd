"""What a bidder bought: the per-app figures add up to the whole, the CPA ratios are spend over
target x conversions, and the worst app is the one farthest from the target."""

import math

import numpy as np
import pytest

from replay.auction import AuctionConfig, bids, run_auction
from replay.market import MarketConfig, make_world
from replay.outcome import log_deviation, summarise


def test_per_app_figures_add_up_and_the_worst_app_is_the_farthest_from_the_target():
    rng = np.random.default_rng(0)
    n = 100_000
    pc, pv, app = rng.uniform(0.02, 0.2, n), rng.uniform(0.05, 0.3, n), rng.integers(0, 3, n)
    world = make_world(pc, pv, app, 20.0, MarketConfig(seed=2), "test")
    # app 1's pCVR three times too high, app 2's three times too low
    factor = np.select([app == 1, app == 2], [3.0, 1 / 3], 1.0)
    bid = bids(pc, pv * factor, world.target_cpa)
    won = run_auction(bid, world, AuctionConfig())
    out = summarise(won, world, bid, budget=1000.0)
    for key in ("won", "spend", "clicks", "conversions", "expected_conversions", "impressions"):
        assert sum(f[key] for f in out["by_app"].values()) == pytest.approx(out[key])
    assert out["cpa_ratio"] == pytest.approx(
        world.price[won].sum() / (20.0 * world.conversion[won].sum()))
    assert out["worst_app_expected"] == "2"
    ratios = out["cpa_ratio_expected_by_app"]
    assert out["worst_app_cpa_ratio_expected"] == ratios["2"] < ratios["0"] < ratios["1"]
    assert out["conversions_per_budget"] == pytest.approx(out["conversions"] / 1000.0)
    assert out["pcoc_by_app"] == pytest.approx({"0": 1.0, "1": 3.0, "2": 1 / 3})
    share = {a: f["overbid_spend_share"] for a, f in out["by_app"].items()}
    assert share["1"] > 0.0 == share["0"] == share["2"]   # truthful, calibrated: never above value


def test_log_deviation_is_symmetric_and_infinite_without_a_ratio():
    assert log_deviation(2.0) == pytest.approx(log_deviation(0.5))
    assert log_deviation(1.0) == 0.0
    assert math.isinf(log_deviation(None))
