"""Evaluate trained runs on a split and write the report (mean ± std over seeds, plots).

Usage::

    python -m models.evaluate --runs RUN_DIR [RUN_DIR ...] --data PROC_DIR --out REPORT_DIR
        [--split test]

Predictions come from each run's exported SavedModel (the artifact that is served), fed by the
Merlin loader in file order; labels, ground truth and field ids are read from the same Parquet
parts, and the row alignment is checked. Writes ``REPORT_DIR/report.json`` (per model, per
metric: mean, std, values, seeds), ``report.md``, ``auc_bars.png`` and ``reliability.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from common.atomic import atomic_output_dir
from common.provenance import relative_record
from common.tables import markdown_table, print_table
from models import metrics as M
from models.predict import OUTPUTS, predict_frame, split_context
from preprocessing import columns as C
from preprocessing.processed import ProcessedData

#: The metrics every report shows first (the acceptance keys of the harness).
HEADLINE = ("ctr_auc", "cvr_auc_clicked", "ctcvr_auc", "entire_space_cvr_auc", "field_rce_app",
            "cvr_pcoc_clicked", "cvr_ece_eqfreq10_clicked")


def score_run_split(run_dir: str, data, split: str,
                    context: Optional[pd.DataFrame] = None) -> Tuple[Dict, pd.DataFrame]:
    """Metrics and predictions of one run on one split (``context`` is read when not given);
    also writes ``RUN_DIR/predictions_<split>.parquet``."""
    frame = predict_frame(run_dir, data, split, context=context)
    out = frame[[k for k in OUTPUTS if k in frame.columns]]
    path = os.path.join(run_dir, f"predictions_{split}.parquet")
    tmp = path + ".partial"
    out.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    metrics = M.evaluate_predictions({c: frame[c].to_numpy() for c in frame.columns
                                      if c != "pctcvr"})
    return metrics, out


def evaluate_run_split(run_dir: str, data, split: str = "test") -> Dict:
    """Metrics of one run on one split; also writes ``RUN_DIR/predictions_<split>.parquet``."""
    return score_run_split(run_dir, data, split)[0]


def aggregate(per_run: List[Dict]) -> Dict[str, Dict[str, Dict]]:
    """``{model: {metric: {mean, std, values, seeds}}}`` from per-run metric dicts."""
    grouped: Dict[str, List[Dict]] = defaultdict(list)
    for run in per_run:
        grouped[run["model"]].append(run)
    report = {}
    for model, runs in grouped.items():
        keys = sorted(set().union(*(r["metrics"] for r in runs)))
        report[model] = {}
        for k in keys:
            values = [float(r["metrics"][k]) for r in runs if k in r["metrics"]]
            mean, std = M.mean_std(values)
            report[model][k] = {"mean": mean, "std": std, "values": values,
                                "seeds": [r["seed"] for r in runs if k in r["metrics"]]}
    return report


def oracle_row(report: Dict) -> List:
    """The report table's last row: the AUCs of the true probabilities (the same for every
    model on one split), ``-`` where a headline metric has no oracle."""
    first = next(iter(report.values()), {})
    cells = []
    for k in HEADLINE:
        oracle = first.get(f"oracle_{k}")
        cells.append(f"{oracle['mean']:.4f}" if oracle else "-")
    return ["oracle (true probabilities)", "", *cells]


def plot_auc_bars(report: Dict, path: str) -> None:
    """AUC bars with ±std error bars per model, oracle AUCs as dashed lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [k for k in ("ctr_auc", "cvr_auc_clicked", "ctcvr_auc", "entire_space_cvr_auc")
            if any(k in m for m in report.values())]
    models = list(report)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        means = [report[m].get(key, {}).get("mean", np.nan) for m in models]
        stds = [report[m].get(key, {}).get("std", 0.0) for m in models]
        ax.bar(range(len(models)), means, yerr=stds, capsize=4, color="tab:blue")
        oracle = report[models[0]].get(f"oracle_{key}", {}).get("mean")
        if oracle is not None:
            ax.axhline(oracle, ls="--", color="k", label=f"oracle {oracle:.3f}")
            ax.legend(loc="lower right", fontsize=8)
        finite = [v for v in means if np.isfinite(v)] + ([oracle] if oracle else [])
        if finite:
            ax.set_ylim(max(0.5, min(finite) - 0.05), min(1.0, max(finite) + 0.03))
        ax.set_xticks(range(len(models)), models, rotation=20)
        ax.set_title(key)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(curves: Dict[str, tuple], path: str) -> None:
    """Reliability diagram of pCVR on clicked rows, one line per model (pooled seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 4.5))
    top = 0.0
    for model, (mean_p, mean_y, _) in curves.items():
        ax.plot(mean_p, mean_y, marker="o", label=model)
        top = max(top, np.nanmax(mean_p), np.nanmax(mean_y))
    ax.plot([0, top], [0, top], ls="--", color="k", label="perfect")
    ax.set_xlabel("mean predicted pCVR (equal-frequency bins)")
    ax.set_ylabel("observed CVR (clicked test rows)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_runs(run_dirs: List[str], data_dir, out: str, split: str = "test") -> Dict:
    """Evaluate every run, aggregate by model over seeds, write the report directory."""
    per_run, pooled = [], defaultdict(lambda: ([], []))
    data = ProcessedData.open(data_dir)
    context = split_context(data, split)
    clicked = context[C.CLICK].to_numpy() == 1
    for run_dir in run_dirs:
        cfg_path = os.path.join(run_dir, "config.json")
        if not os.path.exists(cfg_path):
            raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
        cfg = json.load(open(cfg_path))
        metrics, preds = score_run_split(run_dir, data, split, context)
        per_run.append({"run": relative_record(run_dir, out), "model": cfg["model"],
                        "seed": cfg["seed"], "metrics": metrics})
        pcvr = preds["pcvr"].to_numpy()
        pooled[cfg["model"]][0].append(context[C.PURCHASE].to_numpy()[clicked])
        pooled[cfg["model"]][1].append(pcvr[clicked])
    report = aggregate(per_run)
    with atomic_output_dir(out) as staging:
        with open(os.path.join(staging, "report.json"), "w") as fh:
            json.dump({"split": split, "data": relative_record(data.root, out), "models": report,
                       "runs": per_run}, fh, indent=2)
        rows = []
        for model, m in report.items():
            rows.append([model, len(m[HEADLINE[0]]["values"]) if HEADLINE[0] in m else 0]
                        + [M.format_mean_std(m[k]["values"]) if k in m else "-"
                           for k in HEADLINE])
        rows.append(oracle_row(report))
        table = markdown_table(["model", "seeds", *HEADLINE], rows)
        with open(os.path.join(staging, "report.md"), "w") as fh:
            fh.write(f"# Evaluation on the {split} split\n\n{table}\n")
        plot_auc_bars(report, os.path.join(staging, "auc_bars.png"))
        curves = {model: M.reliability_curve(np.concatenate(ys), np.concatenate(ps), 10)
                  for model, (ys, ps) in pooled.items()}
        plot_reliability(curves, os.path.join(staging, "reliability.png"))
    return report


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m models.evaluate``."""
    parser = argparse.ArgumentParser(prog="python -m models.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    args = parser.parse_args(argv)
    try:
        report = evaluate_runs(args.runs, args.data, args.out, args.split)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(open(os.path.join(args.out, "report.md")).read())
    rows = [("report", os.path.join(os.path.abspath(args.out), "report.json")),
            ("models", ", ".join(report))]
    print_table("models.evaluate", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
