"""Replay bidders on a day: the CPA / budget controller on the previous day, the auction on the
replayed day, and the figures of what each bidder bought; then mean ± std over seeds per group."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence

from models import metrics as M
from replay.auction import AuctionConfig, bids, fit_bid_multiplier, run_auction
from replay.bidders import Bidder
from replay.market import World
from replay.outcome import summarise

#: The per-bidder figures aggregated over seeds (besides the per-app CPA ratios).
AGGREGATED = ("bid_multiplier", "multiplier_cpa", "multiplier_budget", "spend", "won", "clicks",
              "conversions", "expected_conversions", "conversions_per_budget",
              "expected_conversions_per_budget", "cpa_ratio", "cpa_ratio_expected",
              "worst_app_cpa_ratio", "worst_app_cpa_ratio_expected", "worst_app_log_deviation",
              "worst_app_log_deviation_expected", "overbid_spend_share", "mean_bid_over_value",
              "pcoc")


def replay_bidder(bidder: Bidder, world: World, config: AuctionConfig,
                  controller_world: Optional[World] = None,
                  controller_config: Optional[AuctionConfig] = None,
                  multiplier: Optional[float] = None, split: str = "test",
                  controller_split: str = "valid") -> Dict[str, Any]:
    """One bidder's replay of ``world``; its multiplier is ``multiplier`` when given, else the
    controller's fit on ``controller_world`` under ``controller_config`` (the previous day and
    its budget). Returns the figures of :func:`replay.outcome.summarise` plus who the
    bidder is and its multipliers."""
    controller: Dict[str, Optional[float]] = {"cpa": None, "budget": None}
    if multiplier is None:
        if controller_world is None or controller_config is None:
            raise ValueError("either a fixed bid multiplier or a controller day is needed")
        pctr_c, pcvr_c = bidder.predictions[controller_split]
        controller = fit_bid_multiplier(pctr_c, pcvr_c, controller_world, controller_config)
        multiplier = controller["multiplier"]
    pctr, pcvr = bidder.predictions[split]
    bid = bids(pctr, pcvr, world.target_cpa, multiplier)
    won = run_auction(bid, world, config)
    out = {"name": bidder.name, "group": bidder.group, "model": bidder.model,
           "calibrator": bidder.calibrator, "seed": bidder.seed, "source": bidder.source,
           "bid_multiplier": float(multiplier), "multiplier_cpa": controller["cpa"],
           "multiplier_budget": controller["budget"]}
    out.update(summarise(won, world, bid, config.budget, multiplier))
    return out


def finite_values(values: Sequence[Optional[float]]) -> List[float]:
    """The values that are numbers (a missing ratio, None or inf, is left out)."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _mean_std(values: Sequence[Optional[float]]) -> Dict[str, Any]:
    finite = finite_values(values)
    if not finite:
        return {"mean": None, "std": None, "values": list(values)}
    mean, std = M.mean_std(finite)
    return {"mean": mean, "std": std, "values": list(values)}


def aggregate(results: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per group (``esmm+adacalib``, ``oracle``, ...): mean ± std over its bidders (seeds) of
    every figure in ``AGGREGATED`` and of ``cpa_ratio_by_app`` / ``cpa_ratio_expected_by_app`` /
    ``pcoc_by_app`` per app, with the seeds."""
    grouped: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for r in results:
        grouped[r["group"]].append(r)
    out = {}
    for group, runs in grouped.items():
        summary: Dict[str, Any] = {"seeds": [r["seed"] for r in runs],
                                   "bidders": [r["name"] for r in runs]}
        for key in AGGREGATED:
            summary[key] = _mean_std([r.get(key) for r in runs])
        for key in ("cpa_ratio_by_app", "cpa_ratio_expected_by_app", "pcoc_by_app"):
            apps = sorted({a for r in runs for a in r[key]}, key=int)
            summary[key] = {a: _mean_std([r[key].get(a) for r in runs]) for a in apps}
        out[group] = summary
    return out
