"""Replay benchmark: the oCPX bidding replay of N impressions on 2 cores.

Usage::

    python -m benchmarks.replay_bench --rows 10000000 [--out benchmarks/results] [--seed 0]

Synthetic days (no model needed): true ``p_click`` and ``p_purchase_given_click`` with
logit-normal spreads, 5 media apps (codes 3..7, unequal traffic), and a model bidder whose
logits are the truth plus noise and a per-app bias. Two days of N impressions each (the
controller's previous day and the replayed day), then, timed stage by stage:

- ``world_s``: both days' competing prices, outcomes and arrival orders (``make_world``);
- ``replay_s``: the model bidder and the oracle through ``replay_bidder`` (the controller on the
  previous day, the auction with a budget of 0.3 of the day's value and 24 pacing slots, the
  figures per app): what ``python -m replay`` does after predicting;
- ``baseline_s``, measured in the same run: one bare vectorised second-price pass of the same
  day (``bid > price`` and the sum of the prices won), the floor any replay pays per bidder.

The acceptance bound is ``world_s + replay_s`` < 60 s at N = 10M on 2 cores.
Results: ``OUT/replay_<date>.json`` (atomic write) with machine and versions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from benchmarks.run import parse_row_count

from preprocessing.device import machine_info
from common.atomic import atomic_write_text
from common.tables import package_versions, peak_rss_mb, print_table

DEFAULT_OUT = os.path.join("benchmarks", "results")
APP_SHARE = (0.35, 0.25, 0.2, 0.12, 0.08)
APP_BIAS = (0.0, 0.3, -0.3, 0.5, -0.5)
LIMIT_S = 60.0
TARGET_CPA = 50.0
BUDGET_SHARE = 0.3
PACING_SLOTS = 24


def synthetic_day(n: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """True probabilities, app codes and a noisy, per-app biased model's pCTR and pCVR."""
    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))
    app_index = rng.choice(len(APP_SHARE), size=n, p=APP_SHARE)
    z_click = rng.normal(-3.2, 0.8, n)
    z_cvr = rng.normal(-3.0, 1.0, n)
    bias = np.asarray(APP_BIAS)[app_index]
    return {"app": app_index + 3, "p_click": sigmoid(z_click), "p_cvr": sigmoid(z_cvr),
            "pctr": sigmoid(z_click + rng.normal(0, 0.3, n)),
            "pcvr": sigmoid(z_cvr + bias + rng.normal(0, 0.5, n))}


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.replay_bench``."""
    from replay.auction import AuctionConfig
    from replay.bidders import Bidder
    from replay.market import MarketConfig, make_world
    from replay.run import replay_bidder

    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        n = parse_row_count(args.rows)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    days = {split: synthetic_day(n, rng) for split in ("valid", "test")}
    loadavg_before = os.getloadavg()[0]

    t0 = time.perf_counter()
    market = MarketConfig(seed=args.seed)
    worlds = {s: make_world(d["p_click"], d["p_cvr"], d["app"], TARGET_CPA, market, s)
              for s, d in days.items()}
    world_s = time.perf_counter() - t0
    configs = {s: AuctionConfig(budget=BUDGET_SHARE * w.value.sum(), pacing_slots=PACING_SLOTS)
               for s, w in worlds.items()}
    model = Bidder("model", "model", "none", args.seed, "synthetic",
                   {s: (d["pctr"], d["pcvr"]) for s, d in days.items()})
    oracle = Bidder("oracle", "oracle", "none", None, "truth",
                    {s: (d["p_click"], d["p_cvr"]) for s, d in days.items()})
    t1 = time.perf_counter()
    results = [replay_bidder(b, worlds["test"], configs["test"], worlds["valid"],
                             configs["valid"]) for b in (model, oracle)]
    replay_s = time.perf_counter() - t1

    t2 = time.perf_counter()
    test = worlds["test"]
    bid = model.predictions["test"][0] * model.predictions["test"][1] * TARGET_CPA
    won = bid > test.price
    _ = float(test.price[won].sum())
    baseline_s = time.perf_counter() - t2

    total = world_s + replay_s
    date = dt.date.today().isoformat()
    from common.provenance import recorded_command  # the command without this machine's paths
    doc = {
        "benchmark": "replay", "date": date,
        "run_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(), "versions": package_versions(("numpy",), missing="-"),
        "command": recorded_command("benchmarks.replay_bench", argv or sys.argv[1:]),
        "rows": n, "bidders": 2, "seed": args.seed, "budget_share": BUDGET_SHARE,
        "pacing_slots": PACING_SLOTS, "loadavg_1min_before": loadavg_before,
        "world_s": round(world_s, 3), "replay_s": round(replay_s, 3),
        "total_s": round(total, 3), "baseline_pass_s": round(baseline_s, 4),
        "replay_per_bidder_over_baseline": round(replay_s / 2 / max(baseline_s, 1e-9), 1),
        "impressions_per_s": round(n / total, 1), "limit_s": LIMIT_S,
        "under_limit": bool(total < LIMIT_S), "peak_rss_mb": round(peak_rss_mb(), 1),
        "expected_conversions": {r["name"]: round(r["expected_conversions"], 3)
                                 for r in results},
        "loadavg_1min_after": os.getloadavg()[0],
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"replay_{date}.json")
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    print_table("benchmarks.replay_bench",
                [("impressions", f"{n:,}"), ("worlds (s)", f"{world_s:.2f}"),
                 ("replay of 2 bidders (s)", f"{replay_s:.2f}"),
                 ("total (s)", f"{total:.2f} (limit {LIMIT_S:.0f})"),
                 ("bare second-price pass (s)", f"{baseline_s:.3f}"),
                 ("replay per bidder / bare pass", doc["replay_per_bidder_over_baseline"]),
                 ("peak RSS (MB)", f"{peak_rss_mb():.0f}"), ("results", path)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
