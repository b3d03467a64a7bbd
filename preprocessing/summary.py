"""Summarise a processed dataset: splits, funnel rates per media app, selection bias, roles.

Usage::

    python -m preprocessing.summary --proc PROC_DIR [--plot FILE.png]

Prints a table and, with ``--plot``, draws per-app CTR / CVR bars and the distribution of the
true pCVR on clicked vs all impressions (the sample-selection bias that UKD and ESCM2 target).
Ground-truth columns are read here for reporting only; no model ever sees them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

import numpy as np

from preprocessing import columns as C
from common.tables import markdown_table, print_table
from preprocessing.splits import read_split

SPLITS = ("train", "valid", "test")


def summarise(proc_dir: str) -> dict:
    """Per-split rows and rates, per-app rates on the test split, selection-bias figures."""
    spec = C.DatasetSpec.load(proc_dir)
    manifest = json.load(open(os.path.join(proc_dir, "manifest.json")))
    want = [c for c in (*spec.targets, C.APP_ID, C.P_PURCHASE_GIVEN_CLICK) if
            c in spec.all_columns]
    test = read_split(os.path.join(proc_dir, "test"), want)
    out = {"rows": manifest["rows_out"], "backend": manifest["backend"],
           "rows_per_second": manifest["rows_per_second"],
           "features": spec.features, "media_private": spec.media_private,
           "targets": list(spec.targets), "ground_truth": list(spec.ground_truth)}
    clicked = test[C.CLICK] == 1
    out["test_ctr"] = float(test[C.CLICK].mean())
    out["test_cvr_given_click"] = float(test.loc[clicked, C.PURCHASE].mean())
    if C.APP_ID in test:
        per_app = test.groupby(C.APP_ID).agg(
            impressions=(C.CLICK, "size"), ctr=(C.CLICK, "mean"))
        per_app["cvr_given_click"] = test[clicked].groupby(C.APP_ID)[C.PURCHASE].mean()
        if C.P_PURCHASE_GIVEN_CLICK in test:
            per_app["true_pcvr"] = test.groupby(C.APP_ID)[C.P_PURCHASE_GIVEN_CLICK].mean()
        out["per_app"] = per_app.reset_index().to_dict(orient="records")
    if C.P_PURCHASE_GIVEN_CLICK in test:
        p = test[C.P_PURCHASE_GIVEN_CLICK]
        out["true_pcvr_all"] = float(p.mean())
        out["true_pcvr_clicked"] = float(p[clicked].mean())
    return out


def plot(summary: dict, proc_dir: str, path: str) -> None:
    """Per-app CTR / CVR bars and clicked-vs-all true pCVR histograms, to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    apps = summary.get("per_app", [])
    if apps:
        x = np.arange(len(apps))
        axes[0].bar(x - 0.2, [a["ctr"] for a in apps], 0.4, label="CTR")
        axes[0].bar(x + 0.2, [a["cvr_given_click"] for a in apps], 0.4, label="CVR | click")
        axes[0].set_xticks(x, [str(a[C.APP_ID]) for a in apps])
        axes[0].set_xlabel("app_id (encoded)")
        axes[0].set_title("Test split: rates per media app")
        axes[0].legend()
    if "true_pcvr_all" in summary:
        test = read_split(os.path.join(proc_dir, "test"), [C.CLICK, C.P_PURCHASE_GIVEN_CLICK])
        p = test[C.P_PURCHASE_GIVEN_CLICK].to_numpy()
        bins = np.logspace(np.log10(max(p.min(), 1e-6)), np.log10(p.max()), 50)
        clicked = p[test[C.CLICK].to_numpy() == 1]
        axes[1].hist(p, bins=bins, weights=np.full(len(p), 1 / len(p)), alpha=0.5,
                     label="all impressions")
        axes[1].hist(clicked, bins=bins, weights=np.full(len(clicked), 1 / max(len(clicked), 1)),
                     alpha=0.5, label="clicked impressions")
        axes[1].set_ylabel("share of impressions")
        axes[1].set_xscale("log")
        axes[1].set_xlabel("true p(purchase | click)")
        axes[1].set_title("Sample-selection bias")
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m preprocessing.summary``."""
    parser = argparse.ArgumentParser(prog="python -m preprocessing.summary",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--proc", required=True, help="output directory of preprocessing.run")
    parser.add_argument("--plot", default=None, help="write a PNG summary here")
    args = parser.parse_args(argv)
    try:
        s = summarise(args.proc)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if s.get("per_app"):
        header = [k for k in s["per_app"][0]]
        rows = [[f"{v:.4f}" if isinstance(v, float) else v for v in r.values()]
                for r in s["per_app"]]
        print(markdown_table(header, rows))
    rows = [(f"{k} rows", f"{v:,}") for k, v in s["rows"].items()]
    rows += [("backend", s["backend"]),
             ("preprocessing rows/s", f"{s['rows_per_second']:,.0f}"),
             ("test CTR", f"{s['test_ctr']:.4f}"),
             ("test CVR | click", f"{s['test_cvr_given_click']:.4f}"),
             ("features", len(s["features"])),
             ("media-private features", f"{len(s['media_private'])} (media_*)")]
    if "true_pcvr_all" in s:
        rows += [("true pCVR, all impressions", f"{s['true_pcvr_all']:.4f}"),
                 ("true pCVR, clicked impressions", f"{s['true_pcvr_clicked']:.4f}")]
    if args.plot:
        plot(s, args.proc, args.plot)
        rows.append(("plot", os.path.abspath(args.plot)))
    print_table("extcvr dataset summary", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
