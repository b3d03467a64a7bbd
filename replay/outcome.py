"""What a bidder bought on one replayed day: spend, wins, clicks, conversions and CPA
attainment, overall and per media app."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from replay.market import World


def _ratio(num: float, den: float) -> Optional[float]:
    return float(num / den) if den > 0 else None


def _figures(won: np.ndarray, world: World, bid: np.ndarray, rows: np.ndarray,
             multiplier: float) -> Dict[str, Any]:
    """The figures of the impressions in ``rows`` (a mask) that the bidder won."""
    won = won & rows
    spend = float(world.price[won].sum())
    conversions = int(world.conversion[won].sum())
    expected = float(world.p_conversion[won].sum())
    overbid = won & (world.value < world.price)
    return {
        "impressions": int(rows.sum()),
        "won": int(won.sum()),
        "spend": spend,
        "clicks": int(world.click[won].sum()),
        "conversions": conversions,
        "expected_conversions": expected,
        # realised CPA / target: the drawn conversions (1.0 is perfect)
        "cpa_ratio": _ratio(spend, world.target_cpa * conversions),
        # the same with the expected conversions (no label noise)
        "cpa_ratio_expected": _ratio(spend, world.target_cpa * expected),
        "conversions_per_spend": _ratio(conversions, spend),
        "expected_conversions_per_spend": _ratio(expected, spend),
        # the share of spend on impressions whose true value was below the price paid
        "overbid_spend_share": _ratio(float(world.price[overbid].sum()), spend),
        "mean_bid_over_value": _ratio(float(bid[won].sum()), float(world.value[won].sum())),
        # predicted over true conversion probability of every impression in rows, won or not
        # (bids / values; the multiplier divided out): the entire-space PCOC of pCTR x pCVR
        "pcoc": _ratio(float(bid[rows].sum()), float(world.value[rows].sum()) * multiplier),
    }


def log_deviation(ratio: Optional[float]) -> float:
    """``|log(ratio)|``: how far a CPA ratio is from 1.0, symmetric in over- and under-spend
    (inf for a missing ratio)."""
    if ratio is None or not ratio > 0 or not math.isfinite(ratio):
        return math.inf
    return abs(math.log(ratio))


def summarise(won: np.ndarray, world: World, bid: np.ndarray, budget: Optional[float],
              multiplier: float = 1.0) -> Dict[str, Any]:
    """The bidder's figures overall and ``by_app`` (keys: the processed app codes as strings),
    ``cpa_ratio_by_app`` / ``cpa_ratio_expected_by_app``, ``pcoc_by_app`` (its bid's predicted
    over true conversion probability; ``bid`` was made with ``multiplier``), the worst app (largest
    ``|log(CPA ratio)|``, expected conversions) and conversions per unit of budget."""
    overall = _figures(won, world, bid, np.ones(len(won), dtype=bool), multiplier)
    by_app = {str(int(a)): _figures(won, world, bid, world.app == a, multiplier)
              for a in np.unique(world.app)}
    out = dict(overall)
    out["by_app"] = by_app
    out["cpa_ratio_by_app"] = {a: f["cpa_ratio"] for a, f in by_app.items()}
    out["cpa_ratio_expected_by_app"] = {a: f["cpa_ratio_expected"] for a, f in by_app.items()}
    out["pcoc_by_app"] = {a: f["pcoc"] for a, f in by_app.items()}
    for suffix, key in (("", "cpa_ratio"), ("_expected", "cpa_ratio_expected")):
        worst = max(by_app, key=lambda a: log_deviation(by_app[a][key]))
        out[f"worst_app{suffix}"] = worst
        out[f"worst_app_cpa_ratio{suffix}"] = by_app[worst][key]
        out[f"worst_app_log_deviation{suffix}"] = log_deviation(by_app[worst][key])
    out["conversions_per_budget"] = _ratio(overall["conversions"], budget or 0.0)
    out["expected_conversions_per_budget"] = _ratio(overall["expected_conversions"],
                                                    budget or 0.0)
    return out
