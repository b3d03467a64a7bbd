"""The replay's world: one seed, one world; its prices follow the documented market model."""

import numpy as np
import pytest

from replay.market import MarketConfig, make_world, parse_spread_by_app


def _day(n=50_000, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.01, 0.2, n), rng.uniform(0.01, 0.3, n), rng.integers(3, 6, n)


def test_the_same_seed_and_split_give_the_same_world_and_another_seed_another():
    pc, pv, app = _day()
    a = make_world(pc, pv, app, 10.0, MarketConfig(seed=3), "test")
    b = make_world(pc, pv, app, 10.0, MarketConfig(seed=3), "test")
    c = make_world(pc, pv, app, 10.0, MarketConfig(seed=4), "test")
    d = make_world(pc, pv, app, 10.0, MarketConfig(seed=3), "valid")
    for field in ("price", "click", "conversion", "order"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
        assert not np.array_equal(getattr(a, field), getattr(c, field))
        assert not np.array_equal(getattr(a, field), getattr(d, field))


def test_informed_competitors_price_lognormally_around_the_true_value_with_each_apps_spread():
    pc, pv, app = _day(200_000)
    market = MarketConfig(spread=0.5, spread_by_app={4: 0.1}, median_ratio=1.2,
                          competitor_knowledge=1.0)
    world = make_world(pc, pv, app, 10.0, market, "test")
    log_ratio = np.log(world.price / world.value)
    assert np.median(log_ratio) == pytest.approx(np.log(1.2), abs=0.01)
    assert log_ratio[app == 4].std() == pytest.approx(0.1, rel=0.02)
    assert log_ratio[app == 3].std() == pytest.approx(0.5, rel=0.02)


def test_uninformed_competitors_price_around_the_apps_mean_value_whatever_the_impression():
    pc, pv, app = _day(200_000)
    world = make_world(pc, pv, app, 10.0, MarketConfig(spread=0.5, competitor_knowledge=0.0),
                       "test")
    for a in (3, 4, 5):
        rows = app == a
        log_price = np.log(world.price[rows])
        assert np.median(log_price) == pytest.approx(np.log(world.value[rows].mean()), abs=0.01)
        assert abs(np.corrcoef(log_price, np.log(world.value[rows]))[0, 1]) < 0.01
    half = make_world(pc, pv, app, 10.0, MarketConfig(spread=0.5, competitor_knowledge=0.5),
                      "test")
    corr = np.corrcoef(np.log(half.price), np.log(half.value))[0, 1]
    assert 0.2 < corr < 0.95


def test_outcomes_follow_the_true_probabilities_and_conversions_need_a_click():
    pc, pv, app = _day(200_000)
    world = make_world(pc, pv, app, 10.0, MarketConfig(), "test")
    assert world.click.mean() == pytest.approx(pc.mean(), rel=0.02)
    assert world.conversion.sum() == pytest.approx((pc * pv).sum(), rel=0.05)
    assert not np.any(world.conversion & ~world.click)
    assert sorted(world.order) == list(range(len(pc)))


def test_bad_inputs_are_refused_with_the_column_and_the_row_count():
    pc, pv, app = _day(100)
    pv[[3, 7]] = np.nan
    with pytest.raises(ValueError, match=r"p_purchase_given_click: 2 of 100 rows"):
        make_world(pc, pv, app, 10.0, MarketConfig(), "test")
    with pytest.raises(ValueError, match="target_cpa"):
        make_world(pc, pc, app, 0.0, MarketConfig(), "test")
    with pytest.raises(ValueError, match="spread"):
        MarketConfig(spread=-0.1)
    with pytest.raises(ValueError, match="'3:0.5' is not APP_CODE=SIGMA"):
        parse_spread_by_app("3:0.5")
    assert parse_spread_by_app("3=0.5, 4=1") == {3: 0.5, 4: 1.0}
