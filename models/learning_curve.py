"""Learning curve: each model's test metrics against the training data size, from reports.

Usage::

    python -m models.learning_curve --reports REPORT_DIR [REPORT_DIR ...] --out OUT_DIR
        [--metrics entire_space_cvr_auc ctcvr_auc] [--models naive esmm mmoe autoheri]

Each ``REPORT_DIR`` is a ``models.compare`` / ``models.evaluate`` report (``report.json``).
Its dataset's size and generator seed are read from the data's manifests (``PROC/manifest.json``
-> the input's ``manifest.json``: ``rows`` and ``seed``), so several reports of one dataset
(e.g. the baselines' and AutoHERI's) merge into one point. The most frequent generator seed
draws the curve; any other seed's points are drawn as hollow markers beside it. Writes
``learning_curve.json``, ``learning_curve.md`` (mean ± std per model and size, and which model
leads) and ``learning_curve.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from models import metrics as M
from common.atomic import atomic_output_dir
from common.provenance import resolve_record
from common.tables import markdown_table, print_table

DEFAULT_METRICS = ("entire_space_cvr_auc", "ctcvr_auc")


def dataset_identity(data_dir: str) -> Tuple[int, Optional[int]]:
    """``(rows, generator seed)`` of a processed dataset: the rows of all its splits and the
    seed of the generated input (``None`` for data that was not generated)."""
    manifest = json.load(open(os.path.join(data_dir, "manifest.json")))
    rows = int(sum(manifest["rows_out"].values()))
    raw_manifest = os.path.join(manifest.get("input", ""), "manifest.json")
    seed = None
    if os.path.exists(raw_manifest):
        seed = json.load(open(raw_manifest)).get("seed")
    return rows, seed


def collect(report_dirs: Sequence[str], metrics: Sequence[str],
            models: Optional[Sequence[str]] = None) -> List[Dict]:
    """One row per (generator seed, rows, model, metric): ``mean``, ``std``, ``values``,
    ``seeds`` (the model seeds) and the reports it came from. A model reported twice for one
    dataset is an error (which report would count?)."""
    points: Dict[Tuple, Dict] = {}
    for report_dir in report_dirs:
        path = os.path.join(report_dir, "report.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{report_dir}: no report.json (a models.compare or "
                                    f"models.evaluate report directory)")
        report = json.load(open(path))
        rows, gen_seed = dataset_identity(resolve_record(report["data"], report_dir))
        for model, entry in report["models"].items():
            if models and model not in models:
                continue
            for metric in metrics:
                if metric not in entry:
                    continue
                key = (gen_seed, rows, model, metric)
                if key in points:
                    raise ValueError(f"{model} on the {rows:,}-row data (generator seed "
                                     f"{gen_seed}) is in two reports: {points[key]['report']} "
                                     f"and {report_dir}")
                e = entry[metric]
                points[key] = {"generator_seed": gen_seed, "rows": rows, "model": model,
                               "metric": metric, "mean": e["mean"], "std": e["std"],
                               "values": e["values"], "seeds": e["seeds"],
                               "report": os.path.abspath(report_dir)}
    return sorted(points.values(), key=lambda p: (str(p["generator_seed"]), p["rows"],
                                                  p["model"], p["metric"]))


def _cell(values: Sequence[float]) -> str:
    """``mean ± std (n)``, or ``value (1)`` for a single seed (no spread to show)."""
    if len(values) == 1:
        return f"{values[0]:.4f} (1)"
    return f"{M.format_mean_std(values)} ({len(values)})"


def leaders(points: List[Dict], metric: str) -> Dict[Tuple, str]:
    """The model with the best mean per (generator seed, rows) for ``metric``."""
    best: Dict[Tuple, Dict] = {}
    for p in points:
        if p["metric"] != metric:
            continue
        key = (p["generator_seed"], p["rows"])
        if key not in best or p["mean"] > best[key]["mean"]:
            best[key] = p
    return {k: v["model"] for k, v in best.items()}


def plot_curves(points: List[Dict], metrics: Sequence[str], path: str) -> None:
    """One panel per metric: mean ± std against rows (log scale), a line per model for the
    main generator seed, hollow markers for other seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    main_seed = Counter(p["generator_seed"] for p in points).most_common(1)[0][0]
    models = sorted({p["model"] for p in points})
    colours = {m: f"C{k}" for k, m in enumerate(models)}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for k, model in enumerate(models):
            mine = [p for p in points if p["model"] == model and p["metric"] == metric]
            main = sorted((p for p in mine if p["generator_seed"] == main_seed),
                          key=lambda p: p["rows"])
            shift = 1 + 0.015 * (k - (len(models) - 1) / 2)  # keep error bars apart
            if main:
                ax.errorbar([p["rows"] * shift for p in main], [p["mean"] for p in main],
                            yerr=[p["std"] for p in main], marker="o", capsize=3,
                            color=colours[model], label=model)
            other = [p for p in mine if p["generator_seed"] != main_seed]
            if other:
                ax.errorbar([p["rows"] * shift * 1.06 for p in other],
                            [p["mean"] for p in other], yerr=[p["std"] for p in other],
                            marker="o", mfc="none", linestyle="none", capsize=3,
                            color=colours[model])
        ax.set_xscale("log")
        ax.set_xlabel("rows generated (7 days; train = first 5)")
        ax.set_ylabel(f"{metric} (test day)")
        ax.set_title(f"{metric}\nlines: generator seed {main_seed}; hollow: other seeds",
                     fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def learning_curve(report_dirs: Sequence[str], out: str,
                   metrics: Sequence[str] = DEFAULT_METRICS,
                   models: Optional[Sequence[str]] = None) -> Dict:
    """Collect, tabulate and plot; writes ``OUT`` atomically and returns the JSON content."""
    points = collect(report_dirs, metrics, models)
    if not points:
        raise ValueError(f"no metric of {list(metrics)} for the models asked in the reports")
    doc = {"metrics": list(metrics), "points": points,
           "leaders": {m: [{"generator_seed": k[0], "rows": k[1], "model": v}
                           for k, v in sorted(leaders(points, m).items(),
                                              key=lambda kv: (str(kv[0][0]), kv[0][1]))]
                       for m in metrics}}
    by_model = sorted({p["model"] for p in points})
    sections = []
    for metric in metrics:
        cells = defaultdict(dict)
        for p in points:
            if p["metric"] == metric:
                cells[(p["generator_seed"], p["rows"])][p["model"]] = p
        lead = leaders(points, metric)
        rows = []
        main_seed = Counter(p["generator_seed"] for p in points).most_common(1)[0][0]
        for (gen_seed, n), entry in sorted(cells.items(), key=lambda kv: (
                kv[0][0] != main_seed, str(kv[0][0]), kv[0][1])):
            rows.append([f"{n:,}", str(gen_seed)]
                        + [_cell(entry[m]["values"]) if m in entry else "-" for m in by_model]
                        + [lead[(gen_seed, n)]])
        sections.append(f"## {metric} (test day; mean ± std (seeds))\n\n"
                        + markdown_table(["rows", "generator seed", *by_model, "leader"], rows))
    with atomic_output_dir(out) as staging:
        with open(os.path.join(staging, "learning_curve.json"), "w") as fh:
            json.dump(doc, fh, indent=2)
        with open(os.path.join(staging, "learning_curve.md"), "w") as fh:
            fh.write("# Learning curve\n\n" + "\n\n".join(sections) + "\n")
        plot_curves(points, metrics, os.path.join(staging, "learning_curve.png"))
    return doc


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m models.learning_curve``."""
    parser = argparse.ArgumentParser(prog="python -m models.learning_curve",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", nargs="+", required=True,
                        help="report directories (report.json) of models.compare / evaluate")
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--models", nargs="+", default=None, help="default: every model")
    args = parser.parse_args(argv)
    try:
        doc = learning_curve(args.reports, args.out, args.metrics, args.models)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(open(os.path.join(args.out, "learning_curve.md")).read())
    rows = [(f"{m} leader at {p['rows']:,} rows (seed {p['generator_seed']})", p["model"])
            for m in args.metrics for p in doc["leaders"][m]]
    rows.append(("written", os.path.abspath(args.out)))
    print_table("models.learning_curve", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
