"""The second-price auction of the replay, with a daily budget, a pacing rule and the CPA
controller's bid multiplier.

A bidder bids ``b_i = m x pCTR_i x pCVR_i x target_cpa`` per impression (eCPM = 1000 x b_i).
It wins impression ``i`` when ``b_i`` exceeds the highest competing bid (ties lose) and pays that
competing bid (the second price). Impressions arrive in the world's order; with a budget, the
campaign stops buying once the next win would exceed it. With ``pacing_slots = K`` the day is cut
into K equal slots of arrivals and slot ``k`` may spend at most ``(budget - spent so far) /
(K - k)``: the budget is spread over the day and what a slot leaves is carried forward.

The bid multiplier ``m`` is the oCPX platform's controller (ours, as the platforms run one): one
number per bidder, set on the previous day: the largest at which the bidder's cost per
conversion there stays at most the target and its spend within the budget
(:func:`fit_bid_multiplier`). It absorbs a
bidder's global over- or under-prediction and the second price's discount, so what is left on
the replayed day is how the predictions rank and how they are calibrated *relative to each
other* (per media app).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from replay.market import World
from common.params import check_param

#: The smallest and largest bid multiplier the controller may set (the platform's bid caps).
MULTIPLIER_BRACKET = (1.0 / 64.0, 64.0)


@dataclass(frozen=True)
class AuctionConfig:
    """Budget and pacing of one campaign day.

    Args:
        budget: the day's budget in currency (None: unlimited).
        pacing_slots: 0 or 1 for no pacing; K > 1 spreads the budget over K slots of arrivals.
    """

    budget: Optional[float] = None
    pacing_slots: int = 0

    def __post_init__(self):
        if self.budget is not None:
            check_param(math.isfinite(self.budget) and self.budget > 0, "budget",
                        "a finite number > 0 (or None for unlimited)", self.budget)
        check_param(isinstance(self.pacing_slots, int) and 0 <= self.pacing_slots <= 100_000,
                    "pacing_slots", "an integer in [0, 100000]", self.pacing_slots)


def bids(pctr: np.ndarray, pcvr: np.ndarray, target_cpa: float,
         multiplier: float = 1.0) -> np.ndarray:
    """``multiplier x pCTR x pCVR x target_cpa`` per impression (the oCPX bid; eCPM / 1000)."""
    return (multiplier * target_cpa) * (np.asarray(pctr, np.float64) * np.asarray(pcvr, np.float64))


def run_auction(bid: np.ndarray, world: World, config: AuctionConfig) -> np.ndarray:
    """The impressions won (a boolean mask in file order) under the budget and pacing rule."""
    wins = np.asarray(bid) > world.price
    if config.budget is None:
        return wins
    won_in_order = wins[world.order]
    cost = np.where(won_in_order, world.price[world.order], 0.0)
    keep = np.zeros(len(cost), dtype=bool)
    slots = max(1, config.pacing_slots)
    bounds = np.linspace(0, len(cost), slots + 1).astype(np.int64)
    spent = 0.0
    for k in range(slots):
        lo, hi = bounds[k], bounds[k + 1]
        allowance = (config.budget - spent) / (slots - k)
        cum = np.cumsum(cost[lo:hi])
        n_keep = int(np.searchsorted(cum, allowance, side="right"))   # cum is non-decreasing
        keep[lo:lo + n_keep] = True
        if n_keep:
            spent += float(cum[n_keep - 1])
    out = np.zeros(len(cost), dtype=bool)
    out[world.order] = won_in_order & keep
    return out


def cpa_ratio_expected(won: np.ndarray, world: World) -> float:
    """Spend over the target times the expected conversions of the won impressions (no label
    noise: the limit a long-running controller sees); NaN when nothing was won."""
    expected = float(world.p_conversion[won].sum())
    if expected <= 0:
        return float("nan")
    return float(world.price[won].sum()) / (world.target_cpa * expected)


def _largest_feasible(thresholds: np.ndarray, feasible: np.ndarray) -> float:
    """The largest multiplier whose won set is feasible, given the thresholds sorted ascending
    (a multiplier ``m`` wins every impression whose threshold is below ``m``) and
    ``feasible[j]``, whether winning the first ``j + 1`` is; clipped to ``MULTIPLIER_BRACKET``
    (the bracket's low end when no won set is feasible)."""
    lo, hi = MULTIPLIER_BRACKET
    good = np.flatnonzero(feasible)
    if len(good) == 0:
        return lo
    last = int(good[-1])
    if last + 1 >= len(thresholds) or not np.isfinite(thresholds[last + 1]):
        return hi
    # the first last + 1 impressions are won; the next one (a tie loses) is not
    return float(np.clip(thresholds[last + 1], lo, hi))


def fit_bid_multiplier(pctr: np.ndarray, pcvr: np.ndarray, world: World,
                       config: AuctionConfig) -> Dict[str, Optional[float]]:
    """The controller on ``world`` (the previous day): ``{"cpa": m_cpa, "budget": m_budget,
    "multiplier": min of the two}``.

    ``m_cpa`` is the largest multiplier at which the bidder's cost per (expected) conversion over
    the day is at most the target, with no budget: the most conversions the CPA target allows.
    ``m_budget`` (None without a budget) is the largest at which its spend stays within the
    budget. Bidding
    with the smaller buys the most conversions that both allow, as far as one multiplier can (a
    budget-bound campaign ends below the target CPA). Both are exact: without a budget, the
    impressions won at ``m`` are those whose price over the unit bid is below ``m``, so one sort
    gives spend and conversions at every ``m``. The result is clipped to ``MULTIPLIER_BRACKET``
    (the platform's bid caps)."""
    unit = bids(pctr, pcvr, world.target_cpa)
    with np.errstate(divide="ignore", invalid="ignore"):
        threshold = np.where(unit > 0, world.price / unit, np.inf)
    order = np.argsort(threshold, kind="stable")
    thresholds = threshold[order]
    spend = np.cumsum(world.price[order])
    expected = np.cumsum(world.p_conversion[order])
    m_cpa = _largest_feasible(thresholds, spend <= world.target_cpa * expected)
    m_budget = (None if config.budget is None
                else _largest_feasible(thresholds, spend <= config.budget))
    return {"cpa": m_cpa, "budget": m_budget,
            "multiplier": m_cpa if m_budget is None else min(m_cpa, m_budget)}
