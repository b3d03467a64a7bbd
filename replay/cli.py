"""``python -m replay``: replay an oCPX campaign day with each model's bids.

Usage::

    python -m replay --data PROC_DIR --runs RUN_DIR [RUN_DIR ...]
        [--calibrators CAL_DIR [CAL_DIR ...]] [--served URL] --target-cpa X
        [--budget B | --budget-share S] [--pacing-slots K] [--bid-multiplier auto|M]
        [--spread 0.5] [--spread-by-app CODE=SIGMA,...] [--median-ratio 1.0]
        [--competitor-knowledge 1.0] [--seed 0]
        [--split test] [--controller-split valid] [--max-rows N] --out DIR

Every run bids with its SavedModel's pCTR x pCVR; each ``--calibrators`` directory (as
``calibration.calibrate`` writes it, ``CAL/adacalib``; ``{run}`` in it stands for each run
directory's name, for a several-run ``calibration.calibrate`` output: ``CAL/{run}/adacalib``)
adds a bidder that bids with the calibrated pCVR. ``--served URL`` adds a bidder whose predictions come from the
served Triton ensemble, queried with the split's raw rows. The oracle (the true probabilities)
is always replayed. ``--bid-multiplier auto`` (the default) runs each bidder's CPA / budget
controller on ``--controller-split`` (the previous day); a number fixes the multiplier for every
bidder (1: truthful bids). ``--budget-share S`` sets the budget to S x the replayed day's total true
value (``sum p_click x p_purchase_given_click x target``), the controller day's to S x its own.

Writes ``DIR/replay.json`` (per bidder and per group ``esmm``, ``esmm+adacalib``, ``oracle``,
...: spend, conversions, ``cpa_ratio_by_app`` and the rest, mean ± std over seeds),
``DIR/replay.md``, ``DIR/cpa_by_app.png`` and ``DIR/conversions_vs_spend.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any, Dict, List, Optional

import numpy as np

from preprocessing import columns as C
from common.atomic import atomic_output_dir
from common.tables import print_table

from replay.auction import AuctionConfig, bids, run_auction
from replay.bidders import (Bidder, oracle_bidder, read_day, run_bidders,
                                   served_bidder)
from replay.market import MarketConfig, World, make_world, parse_spread_by_app
from replay.report import (group_order, markdown, plot_conversions_vs_spend,
                                  plot_cpa_by_app)
from replay.run import aggregate, replay_bidder

#: The most points of one conversions-against-spend curve.
CURVE_POINTS = 2000


def parse_multiplier(text: str) -> Optional[float]:
    """``"auto"`` -> None (the controller); a number > 0 -> that fixed multiplier."""
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError as e:
        raise ValueError(f"--bid-multiplier must be 'auto' or a number > 0; got {text!r}") from e
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"--bid-multiplier must be 'auto' or a number > 0; got {text!r}")
    return value


def day_budget(world: World, budget: Optional[float], share: Optional[float]) -> Optional[float]:
    """The budget of one day: ``budget``, or ``share`` x the day's total true value."""
    if share is not None:
        return float(share * world.value.sum())
    return budget


def spend_curve(bidder: Bidder, world: World, config: AuctionConfig, multiplier: float,
                split: str) -> Dict[str, np.ndarray]:
    """Cumulative spend and expected conversions of the bidder's wins in arrival order."""
    pctr, pcvr = bidder.predictions[split]
    won = run_auction(bids(pctr, pcvr, world.target_cpa, multiplier), world, config)
    ordered = won[world.order]
    spend = np.cumsum(np.where(ordered, world.price[world.order], 0.0))
    conv = np.cumsum(np.where(ordered, world.p_conversion[world.order], 0.0))
    keep = np.unique(np.linspace(0, len(spend) - 1, CURVE_POINTS).astype(np.int64))
    return {"spend": np.concatenate([[0.0], spend[keep]]),
            "conversions": np.concatenate([[0.0], conv[keep]])}


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(prog="python -m replay", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="processed dataset (with ground truth)")
    p.add_argument("--runs", nargs="+", default=[], help="trained run directories")
    p.add_argument("--calibrators", nargs="*", default=[],
                   help="calibrator directories, applied to every run ({run}: the run's name)")
    p.add_argument("--served", default=None, help="URL of a served ensemble to replay too")
    p.add_argument("--protocol", default="http", choices=("http", "grpc"))
    p.add_argument("--target-cpa", type=float, required=True)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget", type=float, default=None, help="the day's budget")
    budget.add_argument("--budget-share", type=float, default=None,
                        help="the budget as a share of the day's total true value")
    p.add_argument("--pacing-slots", type=int, default=0)
    p.add_argument("--bid-multiplier", default="auto")
    p.add_argument("--spread", type=float, default=MarketConfig.spread)
    p.add_argument("--spread-by-app", default="")
    p.add_argument("--median-ratio", type=float, default=MarketConfig.median_ratio)
    p.add_argument("--competitor-knowledge", type=float,
                   default=MarketConfig.competitor_knowledge,
                   help="weight of the impression's own true value in the competing price")
    p.add_argument("--seed", type=int, default=0, help="the world's seed")
    p.add_argument("--split", default="test")
    p.add_argument("--controller-split", default="valid")
    p.add_argument("--max-rows", type=int, default=None, help="the first N rows of each split")
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")
    return p


def replay(args: argparse.Namespace) -> Dict[str, Any]:
    """The whole command; returns the report that ``replay.json`` holds."""
    from tqdm import tqdm

    from calibration.artifact import load_calibrator
    from preprocessing.app_names import app_names
    from preprocessing.processed import ProcessedData
    from replay.bidders import calibrator_dir

    started = time.perf_counter()
    multiplier = parse_multiplier(args.bid_multiplier)
    if args.budget_share is not None and not (0 < args.budget_share <= 10):
        raise ValueError(f"--budget-share must be in (0, 10]; got {args.budget_share}")
    if not args.runs and not args.served:
        raise ValueError("nothing to replay: give --runs and/or --served")
    names = [os.path.basename(os.path.normpath(r)) for r in args.runs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"--runs: several run directories are named {clash}; the replay names "
                         "each bidder (and fills {run}) by its run directory's name")
    market = MarketConfig(spread=args.spread, spread_by_app=parse_spread_by_app(args.spread_by_app),
                          median_ratio=args.median_ratio,
                          competitor_knowledge=args.competitor_knowledge, seed=args.seed)
    splits = [args.split] + ([args.controller_split] if multiplier is None else [])
    fields = sorted({f for t in args.calibrators for r in args.runs
                     for f in load_calibrator(calibrator_dir(t, r)).fields})
    data = ProcessedData.open(args.data)  # once for every split, run and calibrator
    days = {s: read_day(data, s, fields, args.max_rows) for s in splits}
    worlds = {s: make_world(d[C.P_CLICK].to_numpy(), d[C.P_PURCHASE_GIVEN_CLICK].to_numpy(),
                            d[C.APP_ID].to_numpy(), args.target_cpa, market, s)
              for s, d in days.items()}
    configs = {s: AuctionConfig(budget=day_budget(w, args.budget, args.budget_share),
                                pacing_slots=args.pacing_slots) for s, w in worlds.items()}

    bidders: List[Bidder] = []
    for run in tqdm(args.runs, desc="predict", unit="run", disable=args.no_progress,
                    file=sys.stderr):
        bidders += run_bidders(run, args.calibrators, data, days)
    if args.served:
        bidders.append(served_bidder(args.served, data.root, days, args.protocol,
                                     progress=not args.no_progress))
    bidders.append(oracle_bidder(days))

    controller = worlds.get(args.controller_split) if multiplier is None else None
    controller_config = configs.get(args.controller_split) if multiplier is None else None
    results = [replay_bidder(b, worlds[args.split], configs[args.split], controller,
                             controller_config, multiplier, args.split, args.controller_split)
               for b in tqdm(bidders, desc="replay", unit="bidder", disable=args.no_progress,
                             file=sys.stderr)]
    curves, seen = {}, set()
    for r, b in zip(results, bidders):
        if r["group"] not in seen:
            seen.add(r["group"])
            label = r["group"] + ("" if r["seed"] is None else f" (seed {r['seed']})")
            curves[label] = spend_curve(b, worlds[args.split], configs[args.split],
                                        r["bid_multiplier"], args.split)
    test_world = worlds[args.split]
    from common.provenance import portable_path  # recorded without this machine's paths
    report = {
        "config": {"data": portable_path(args.data, "PROC"), "split": args.split,
                   "controller_split": args.controller_split if multiplier is None else None,
                   "impressions": len(test_world), "target_cpa": args.target_cpa,
                   "budget": configs[args.split].budget, "budget_share": args.budget_share,
                   "pacing_slots": args.pacing_slots, "max_rows": args.max_rows,
                   "market": {**asdict(market), "spread_by_app": {
                       str(k): v for k, v in market.spread_by_app.items()}},
                   "bid_multiplier_rule": ("CPA / budget controller on the previous day "
                                           f"('{args.controller_split}')" if multiplier is None
                                           else f"fixed {multiplier:g}"),
                   "runs": [portable_path(r, "RUN", {os.path.dirname(os.path.abspath(r)): "RUNS"})
                            for r in args.runs],
                   "calibrators": list(args.calibrators), "served": args.served},
        "day": {"true_value": float(test_world.value.sum()),
                "conversions": int(test_world.conversion.sum()),
                "expected_conversions": float(test_world.p_conversion.sum())},
        "app_names": {str(k): v for k, v in app_names(data.root).items()},
        "bidders": {r["name"]: r for r in results},
        "groups": aggregate(results),
        "seconds": time.perf_counter() - started,
    }
    with atomic_output_dir(args.out) as staging:
        with open(os.path.join(staging, "replay.json"), "w") as fh:
            json.dump(report, fh, indent=2)
        with open(os.path.join(staging, "replay.md"), "w") as fh:
            fh.write(markdown(report))
        plot_cpa_by_app(report, os.path.join(staging, "cpa_by_app.png"))
        plot_conversions_vs_spend(curves, os.path.join(staging, "conversions_vs_spend.png"),
                                  configs[args.split].budget)
    return report


def summary_rows(report: Dict[str, Any]) -> List:
    """The closing table: per group, conversions, CPA ratio and the worst app's ratio."""
    from replay.report import fmt
    rows = [("impressions", report["config"]["impressions"]),
            ("budget", "unlimited" if report["config"]["budget"] is None
             else f"{report['config']['budget']:.6g}")]
    for g in group_order(list(report["groups"])):
        s = report["groups"][g]
        rows.append((f"{g}: conversions (expected)",
                     f"{fmt(s['conversions'], 1)} ({fmt(s['expected_conversions'], 1)})"))
        rows.append((f"{g}: CPA/target, worst app (expected)",
                     f"{fmt(s['cpa_ratio_expected'])}, {fmt(s['worst_app_cpa_ratio_expected'])}"))
    rows.append(("seconds", f"{report['seconds']:.1f}"))
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m replay``."""
    args = build_parser().parse_args(argv)
    try:
        report = replay(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table(f"replay -> {args.out}", summary_rows(report))
    return 0
