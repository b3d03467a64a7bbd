"""The auction and the CPA controller on a toy lognormal market whose answers are known in
closed form (competitors who know each impression's value, ``competitor_knowledge = 1``): a
bidder bidding k x the true value against prices v exp(sigma z) wins when z < ln(k) / sigma,
pays v e^(sigma^2/2) Phi(ln(k)/sigma - sigma) per impression in expectation and buys
p Phi(ln(k)/sigma) conversions."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from replay.auction import (AuctionConfig, bids, cpa_ratio_expected, fit_bid_multiplier,
                                   run_auction)
from replay.market import MarketConfig, make_world

SIGMA = 0.5
N = 200_000


def toy_day(split, seed=0, n=N, sigma=SIGMA):
    rng = np.random.default_rng(123 if split == "valid" else 456)
    p_click = rng.uniform(0.02, 0.2, n)
    p_cvr = rng.uniform(0.05, 0.3, n)
    app = rng.integers(0, 3, n)
    world = make_world(p_click, p_cvr, app, target_cpa=40.0,
                       market=MarketConfig(spread=sigma, competitor_knowledge=1.0,
                                                       seed=seed), split=split)
    return world, p_click, p_cvr


def closed_form_spend_per_value(k, sigma=SIGMA):
    """E[price; win] / v for a bid of k x v."""
    return math.exp(sigma ** 2 / 2) * norm.cdf(math.log(k) / sigma - sigma)


def test_truthful_oracle_pays_the_closed_form_second_price():
    world, pc, pv = toy_day("test")
    won = run_auction(bids(pc, pv, world.target_cpa), world, AuctionConfig())
    # CPA / target of truthful bids: e^(s^2/2) Phi(-s) / Phi(0) < 1 (the second price's discount)
    want = closed_form_spend_per_value(1.0) / norm.cdf(0.0)
    assert cpa_ratio_expected(won, world) == pytest.approx(want, rel=0.02)
    assert won.mean() == pytest.approx(0.5, abs=0.01)


def test_doubling_every_pcvr_overspends_by_the_expected_amount():
    world, pc, pv = toy_day("test")
    truthful = run_auction(bids(pc, pv, world.target_cpa), world, AuctionConfig())
    doubled = run_auction(bids(pc, 2 * pv, world.target_cpa), world, AuctionConfig())
    spend_ratio = world.price[doubled].sum() / world.price[truthful].sum()
    want = closed_form_spend_per_value(2.0) / closed_form_spend_per_value(1.0)
    assert spend_ratio == pytest.approx(want, rel=0.03)       # ~2.63 at sigma 0.5
    cpa = cpa_ratio_expected(doubled, world)
    want_cpa = closed_form_spend_per_value(2.0) / norm.cdf(math.log(2.0) / SIGMA)
    assert cpa == pytest.approx(want_cpa, rel=0.02)
    assert cpa > cpa_ratio_expected(truthful, world) * 1.3


def test_the_controller_makes_the_oracle_meet_the_target_cpa_on_the_next_day():
    valid, pc_v, pv_v = toy_day("valid")
    test, pc_t, pv_t = toy_day("test")
    config = AuctionConfig()
    fitted = fit_bid_multiplier(pc_v, pv_v, valid, config)
    assert fitted["budget"] is None
    m = fitted["multiplier"]
    assert m == fitted["cpa"] > 1.0                      # the second price's discount is bid back
    won = run_auction(bids(pc_t, pv_t, test.target_cpa, m), test, config)
    assert cpa_ratio_expected(won, test) == pytest.approx(1.0, abs=0.02)
    realised = test.price[won].sum() / (test.target_cpa * test.conversion[won].sum())
    assert realised == pytest.approx(1.0, abs=0.06)


def test_the_controller_absorbs_a_global_overprediction():
    valid, pc_v, pv_v = toy_day("valid")
    config = AuctionConfig()
    m_true = fit_bid_multiplier(pc_v, pv_v, valid, config)["multiplier"]
    m_doubled = fit_bid_multiplier(pc_v, 2 * pv_v, valid, config)["multiplier"]
    assert m_doubled == pytest.approx(m_true / 2, rel=1e-3)


def test_a_tight_budget_lowers_the_multiplier_below_the_cpa_one_and_lasts_the_day():
    valid, pc_v, pv_v = toy_day("valid")
    test, pc_t, pv_t = toy_day("test")
    share = 0.2                                   # truthful bids alone would spend ~0.35
    fitted = fit_bid_multiplier(pc_v, pv_v, valid, AuctionConfig(budget=share * valid.value.sum()))
    assert fitted["budget"] < 1.0 < fitted["cpa"] and fitted["multiplier"] == fitted["budget"]
    budget = share * test.value.sum()
    won = run_auction(bids(pc_t, pv_t, test.target_cpa, fitted["multiplier"]), test,
                      AuctionConfig(budget=budget, pacing_slots=24))
    assert test.price[won].sum() == pytest.approx(budget, rel=0.03)
    assert cpa_ratio_expected(won, test) < 0.8               # budget-bound: below the target


def test_the_budget_is_never_exceeded_and_stops_the_campaign_early():
    world, pc, pv = toy_day("test")
    budget = 0.1 * world.value.sum()
    won = run_auction(bids(pc, pv, world.target_cpa), world, AuctionConfig(budget=budget))
    assert budget * 0.99 < world.price[won].sum() <= budget
    position = np.empty(len(world), dtype=np.int64)
    position[world.order] = np.arange(len(world))
    assert position[won].max() < 0.5 * len(world)         # the money ran out before noon


def test_pacing_spreads_the_budget_over_the_day():
    world, pc, pv = toy_day("test")
    budget, slots = 0.1 * world.value.sum(), 4
    won = run_auction(bids(pc, pv, world.target_cpa), world,
                      AuctionConfig(budget=budget, pacing_slots=slots))
    assert world.price[won].sum() <= budget
    position = np.empty(len(world), dtype=np.int64)
    position[world.order] = np.arange(len(world))
    quarter = position * slots // len(world)
    spent = np.array([world.price[won & (quarter == q)].sum() for q in range(slots)])
    before = np.concatenate([[0.0], spent.cumsum()[:-1]])
    allowance = (budget - before) / (slots - np.arange(slots))
    assert np.all(spent <= allowance * (1 + 1e-12))
    assert np.all(spent > 0.9 * budget / slots)


def test_a_bad_budget_is_refused_by_name():
    with pytest.raises(ValueError, match="budget"):
        AuctionConfig(budget=-1.0)
    with pytest.raises(ValueError, match="pacing_slots"):
        AuctionConfig(budget=1.0, pacing_slots=-2)
