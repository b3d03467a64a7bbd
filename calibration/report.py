"""Calibration metrics before and after each method, seed aggregation, markdown and plots.

Metrics are those of :func:`models.metrics.evaluate_predictions` (computed on the clicked rows
of the evaluation split for pCVR), renamed to short keys:

- ``field_rce_app`` / ``field_ece_app``: Field-RCE / Field-ECE by media app;
- ``field_rce_<f>`` / ``field_ece_<f>`` for every other field (``category`` for
  ``category_id``, else the column name);
- ``ece`` (= ``ece_eqfreq10``: equal-frequency, 10 bins) and ``ece_eqwidth100``
  (equal-width, 100 bins); ``ece_binning`` names the binning of ``ece``;
- ``field_rce_truth_<f>`` (app and every field, on generated data): Field-RCE against the
  true pCVR instead of the labels (``models.metrics.field_rce_truth``), free of the label
  noise that hides every method on a value with few conversions;
- ``field_rce_app_q5``: Field-RCE over cells of app x quintile of the base pCVR within the
  app (:func:`app_quintile_cells`): the per-app *shape* of the calibration;
- ``pcoc``, ``auc`` (CVR AUC on clicked rows), ``logloss``;
- ``ctcvr_auc`` (pCTR x calibrated pCVR) and, on synthetic data, ``entire_space_cvr_auc``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from models import metrics as M
from calibration import BEST_GLOBAL_CANDIDATES
from common.tables import markdown_table

ECE_BINNING = "equal_frequency_10"
#: evaluate_predictions key -> calibration report key.
RENAME = {
    "field_rce_app": "field_rce_app", "field_ece_app": "field_ece_app",
    "field_rce_category": "field_rce_category", "field_ece_category": "field_ece_category",
    "cvr_ece_eqfreq10_clicked": "ece_eqfreq10", "cvr_ece_eqwidth100_clicked": "ece_eqwidth100",
    "cvr_pcoc_clicked": "pcoc", "cvr_auc_clicked": "auc", "cvr_logloss_clicked": "logloss",
    "ctcvr_auc": "ctcvr_auc", "entire_space_cvr_auc": "entire_space_cvr_auc",
}
#: Columns of the markdown table.
HEADLINE = ("field_rce_app", "field_ece_app", "ece", "ece_eqwidth100", "pcoc", "auc", "logloss")


#: The simulator's true pCVR (``p_purchase_given_click``), present in generated data only.
TRUTH_COLUMN = "p_purchase_given_click"


def field_suffix(field: str) -> str:
    """The metric-key suffix of a field column: ``app_id`` -> ``app``, ``category_id`` ->
    ``category``, anything else its own name."""
    return {"app_id": "app", "category_id": "category"}.get(field, field)


def calibration_metrics(frame: Mapping[str, np.ndarray], pcvr: np.ndarray,
                        fields: Sequence[str]) -> Dict[str, float]:
    """The report's metrics of ``pcvr`` on ``frame`` (click, purchase, pctr and context).

    Args:
        frame: evaluation-split columns (``click``, ``purchase``, ``pctr`` and optional
            ``purchase_counterfactual``, ``app_id``, ``category_id``, other fields).
        pcvr: the (calibrated or base) pCVR of every row.
        fields: field columns to report Field-RCE / Field-ECE for (besides app and category).
    """
    full = M.evaluate_predictions({**frame, "pcvr": pcvr})
    out = {RENAME[k]: float(v) for k, v in full.items() if k in RENAME}
    out["ece"] = out["ece_eqfreq10"]
    clicked = np.asarray(frame["click"]) == 1
    y = np.asarray(frame["purchase"])[clicked]
    for f in fields:
        s = field_suffix(f)
        if f"field_rce_{s}" not in out:
            z = np.asarray(frame[f])[clicked]
            out[f"field_rce_{s}"] = M.field_rce(y, pcvr[clicked], z)
            out[f"field_ece_{s}"] = M.field_ece(y, pcvr[clicked], z)
    if TRUTH_COLUMN in frame:  # generated data: the error against the truth, not the labels
        truth = np.asarray(frame[TRUTH_COLUMN], dtype=np.float64)[clicked]
        for f in dict.fromkeys(["app_id", *fields]):
            if f in frame:
                out[f"field_rce_truth_{field_suffix(f)}"] = M.field_rce_truth(
                    truth, pcvr[clicked], np.asarray(frame[f])[clicked])
    if "app_id" in frame and "pcvr" in frame:
        cells = app_quintile_cells(np.asarray(frame["app_id"])[clicked],
                                   np.asarray(frame["pcvr"])[clicked])
        out["field_rce_app_q5"] = M.field_rce(y, pcvr[clicked], cells)
    return out


def app_quintile_cells(app: np.ndarray, base_pcvr: np.ndarray, bins: int = 5) -> np.ndarray:
    """Cell id of each row: its app and the quintile of the **base** pCVR within that app.

    ``field_rce_app_q5``, the Field-RCE over these cells, sees the *shape* of each app's
    calibration (is the app right at its low and its high predictions?), which Field-RCE by
    app, a sum over the app's rows, cannot. The cells come from the base prediction, so
    they are the same for every calibrator.
    """
    cells = np.empty(len(app), dtype=np.int64)
    for v in np.unique(app):
        rows = np.flatnonzero(app == v)
        rank = np.argsort(np.argsort(base_pcvr[rows], kind="stable"), kind="stable")
        cells[rows] = int(v) * bins + (rank * bins) // max(len(rows), 1)
    return cells


def _after(run: Mapping[str, Any], method: str, metric: str) -> Optional[float]:
    value = run["methods"].get(method, {}).get("after", {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def adacalib_ratios(per_run: Sequence[Mapping[str, Any]], best_global: Sequence[str],
                    metric: str = "field_rce_app", method: str = "adacalib") -> Dict[str, Any]:
    """AdaCalib's ``metric`` (lower is better) against the best global method and NeuCalib.

    Args:
        per_run: the ``calibration.json`` of each run (one seed each).
        best_global: the global methods whose lowest ``metric`` is the reference.
        method: the numerator (``adacalib``, or a variant or extension of it).

    Returns:
        ``{"best_global": {...}, "neucalib": {...}}`` (each only when that reference is in the
        runs): ``values`` (per seed: AdaCalib over the reference of that seed; for the best
        global method, the best of that seed, named in ``reference``), their ``mean`` and
        ``std``, and ``by_means`` (AdaCalib's mean over the reference's mean, the best global
        method being the one with the lowest mean, named in ``by_means_reference``).
    """
    out: Dict[str, Any] = {}
    ada = [_after(r, method, metric) for r in per_run]
    if not per_run or None in ada:
        return out
    present = [g for g in best_global if all(_after(r, g, metric) is not None for r in per_run)]
    if present:
        per_seed = [min(present, key=lambda g: _after(r, g, metric)) for r in per_run]
        values = [a / _after(r, g, metric) for a, r, g in zip(ada, per_run, per_seed)]
        means = {g: float(np.mean([_after(r, g, metric) for r in per_run])) for g in present}
        best = min(means, key=means.get)
        mean, std = M.mean_std(values)
        out["best_global"] = {"values": values, "reference": per_seed, "mean": mean, "std": std,
                              "by_means": float(np.mean(ada)) / means[best],
                              "by_means_reference": best, "candidates": list(present)}
    if all(_after(r, "neucalib", metric) is not None for r in per_run):
        neu = [_after(r, "neucalib", metric) for r in per_run]
        values = [a / n for a, n in zip(ada, neu)]
        mean, std = M.mean_std(values)
        out["neucalib"] = {"values": values, "reference": ["neucalib"] * len(per_run),
                           "mean": mean, "std": std,
                           "by_means": float(np.mean(ada)) / float(np.mean(neu)),
                           "by_means_reference": "neucalib"}
    return out


def aggregate_runs(per_run: List[Dict[str, Any]],
                   best_global: Sequence[str] = BEST_GLOBAL_CANDIDATES) -> Dict[str, Any]:
    """Mean ± std over runs (seeds) of every method's metrics, and AdaCalib's ratios.

    Args:
        per_run: the ``calibration.json`` of each run (one seed each).
        best_global: the global methods whose lowest Field-RCE by app (per seed) is the
            denominator of ``ratio_field_rce_app``.

    Returns:
        ``{"methods": {method: {metric: {mean, std, values}}}, "ratio_field_rce_app": {...},
        "ratios_field_rce_app": {...}, "acceptance": {...}}``: ``ratio_field_rce_app`` is
        AdaCalib's Field-RCE by app over the best global method's, per seed, then averaged;
        ``ratios_field_rce_app`` is :func:`adacalib_ratios` (against the best global method and
        NeuCalib, per seed and by means).
    """
    methods: Dict[str, Dict[str, Any]] = {}
    names = ["uncalibrated"] + [m for m in per_run[0]["methods"] if m != "uncalibrated"]
    for m in names:
        methods[m] = {}
        keys = sorted(set().union(*(r["methods"][m]["after"] for r in per_run
                                    if m in r["methods"])))
        for k in keys:
            vals = [r["methods"][m]["after"][k] for r in per_run
                    if m in r["methods"] and k in r["methods"][m]["after"]]
            if not all(isinstance(v, (int, float)) for v in vals):
                continue
            mean, std = M.mean_std(vals)
            methods[m][k] = {"mean": mean, "std": std, "values": vals}
    out: Dict[str, Any] = {"n_runs": len(per_run), "methods": methods}
    ratios = adacalib_ratios(per_run, best_global)
    if ratios:
        out["ratios_field_rce_app"] = ratios
    if "best_global" in ratios:
        best = ratios["best_global"]
        out["ratio_field_rce_app"] = {"mean": best["mean"], "std": best["std"],
                                      "values": best["values"], "best_global": best["reference"]}
        auc_drop = [r["methods"]["uncalibrated"]["after"]["auc"]
                    - r["methods"]["adacalib"]["after"]["auc"] for r in per_run]
        pcocs = [r["methods"]["adacalib"]["after"]["pcoc"] for r in per_run]
        out["acceptance"] = {
            "ratio_at_most_0.7": bool(best["mean"] <= 0.7),
            "auc_drop_at_most_0.001": bool(M.mean_std(auc_drop)[0] <= 0.001),
            "pcoc_within_0.95_1.05": bool(0.95 <= M.mean_std(pcocs)[0] <= 1.05),
            "auc_drop": {"mean": M.mean_std(auc_drop)[0], "values": auc_drop},
        }
    return out


def per_run_from_aggregate(agg: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The per-run results (``{"methods": {m: {"after": {metric: value}}}}``) stored in an
    aggregate's per-seed ``values``: what :func:`aggregate_runs` needs to recompute it."""
    runs: List[Dict[str, Any]] = [{"methods": {}} for _ in range(agg["n_runs"])]
    for m, metrics in agg["methods"].items():
        for k, stats in metrics.items():
            if len(stats["values"]) != agg["n_runs"]:
                continue
            for run, v in zip(runs, stats["values"]):
                run["methods"].setdefault(m, {"after": {}})["after"][k] = v
    return runs


def ratio_lines(ratios: Mapping[str, Any]) -> str:
    """Markdown lines: AdaCalib's Field-RCE by app over the best global method and NeuCalib,
    per seed and by means."""
    lines = []
    for key, label in (("best_global", "the best global method"), ("neucalib", "NeuCalib")):
        if key not in ratios:
            continue
        r = ratios[key]
        seeds = ", ".join(f"{v:.3f}" + (f" ({ref})" if key == "best_global" else "")
                          for v, ref in zip(r["values"], r["reference"]))
        among = (f" (of {', '.join(r['candidates'])})" if key == "best_global" else "")
        spread = (f"mean of the per-seed ratios {r['mean']:.3f} ± {r['std']:.3f}; "
                  if len(r["values"]) > 1 else "")
        lines.append(f"- AdaCalib Field-RCE(app) / {label}{among}: per seed {seeds}; {spread}"
                     f"by means {r['by_means']:.3f} ({r['by_means_reference']})")
    return "\n".join(lines) + ("\n" if lines else "")


def markdown_single(result: Mapping[str, Any]) -> str:
    """``calibration.md`` of one run: before (uncalibrated) and after, per method."""
    fields = result["fields"]
    extra = [f"field_rce_{field_suffix(f)}" for f in fields if field_suffix(f) != "app"]
    cols = list(HEADLINE) + extra
    rows = []
    for m, res in result["methods"].items():
        rows.append([m] + [_fmt(res["after"].get(k)) for k in cols]
                    + [_fmt(res.get("fit_seconds"), 2)])
    table = markdown_table(["method", *cols, "fit_s"], rows)
    ratios = result.get("ratios_field_rce_app")  # set by calibrate_frames / rerender
    return (f"# Calibration of pCVR ({result['run']})\n\n"
            f"Fit on the clicked rows of `{result['fit_split']}`, evaluated on the clicked rows "
            f"of `{result['eval_split']}`; fields {fields}. `ece`: {ECE_BINNING}; "
            "`ece_eqwidth100`: equal-width, 100 bins. The `uncalibrated` row is the 'before' "
            "of every method.\n\n" + table + "\n"
            + ("\n" + ratio_lines(ratios) if ratios else ""))


def markdown_multi(agg: Mapping[str, Any], fields: Sequence[str]) -> str:
    """``calibration.md`` over seeds: mean ± std per method, and the acceptance ratio."""
    extra = [f"field_rce_{field_suffix(f)}" for f in fields if field_suffix(f) != "app"]
    cols = list(HEADLINE) + extra
    rows = []
    for m, res in agg["methods"].items():
        rows.append([m] + [f"{res[k]['mean']:.4f} ± {res[k]['std']:.4f}" if k in res else "-"
                           for k in cols])
    text = (f"# Calibration of pCVR over {agg['n_runs']} runs (mean ± std)\n\n"
            + markdown_table(["method", *cols], rows) + "\n")
    if agg.get("ratios_field_rce_app"):
        text += "\n" + ratio_lines(agg["ratios_field_rce_app"])
    if "acceptance" in agg:
        text += f"\nAcceptance: {agg['acceptance']}\n"
    return text


def _fmt(v: Optional[float], digits: int = 4) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}"


def reliability_plot_methods(result: Mapping[str, Any], candidates: Sequence[str]) -> List[str]:
    """The methods the per-app reliability figure shows by default: uncalibrated, the best of
    the global ``candidates`` by Field-RCE by app, and AdaCalib (those that were run)."""
    methods = result["methods"]
    ran = [c for c in candidates if c in methods]
    best = min(ran, key=lambda m: methods[m].get("field_rce_app", float("inf")), default=None)
    return [m for m in ("uncalibrated", best, "adacalib") if m is not None and m in methods]


def plot_reliability_by_app(y: np.ndarray, app: np.ndarray, curves: Mapping[str, np.ndarray],
                            path: str, n_bins: int = 10,
                            names: Optional[Mapping[int, str]] = None) -> None:
    """One panel per media app (titled with its name when ``names`` has it), one line per
    method: mean prediction vs observed rate in ``n_bins`` equal-frequency bins of that
    method's predictions (clicked rows)."""
    from preprocessing.app_names import app_label
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    apps = np.unique(app)
    ncol = min(3, len(apps))
    nrow = int(np.ceil(len(apps) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.8 * nrow), squeeze=False)
    for ax, a in zip(axes.reshape(-1), apps):
        mask = app == a
        top = 0.0
        for name, p in curves.items():
            mp, my, cnt = M.reliability_curve(y[mask], p[mask], n_bins)
            ok = cnt > 0
            style = dict(ls="--", color="gray") if name == "uncalibrated" else {}
            ax.plot(mp[ok], my[ok], marker=".", label=name, **style)
            top = max(top, np.nanmax(mp[ok], initial=0), np.nanmax(my[ok], initial=0))
        ax.plot([0, top], [0, top], ls=":", color="k")
        ax.set_title(f"app_id {app_label(a, names or {})} ({int(mask.sum())} clicks, "
                     f"{int(y[mask].sum())} conv.)", fontsize=9)
        ax.set_xlabel("mean predicted pCVR")
        ax.set_ylabel("observed CVR")
    for ax in axes.reshape(-1)[len(apps):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def rerender(results_dir: str) -> Dict[str, Any]:
    """Recompute AdaCalib's ratios of a calibration output from its ``calibration.json`` (the
    per-seed values it stores; nothing is refitted) and rewrite ``calibration.json`` and
    ``calibration.md``; returns the new ``calibration.json`` content."""
    import json
    import os

    from common.atomic import atomic_write_text
    path = os.path.join(results_dir, "calibration.json")
    with open(path) as fh:
        result = json.load(fh)
    if "n_runs" in result:
        fresh = aggregate_runs(per_run_from_aggregate(result))
        for key in ("ratios_field_rce_app", "ratio_field_rce_app", "acceptance"):
            if key in fresh:
                result[key] = fresh[key]
        text = markdown_multi(result, result.get("fields", ["app_id"]))
    else:
        result["ratios_field_rce_app"] = adacalib_ratios([result], BEST_GLOBAL_CANDIDATES)
        text = markdown_single(result)
    atomic_write_text(path, json.dumps(result, indent=2))
    atomic_write_text(os.path.join(results_dir, "calibration.md"), text)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: ``python -m calibration.report --results CAL_DIR [...]``
    rewrites each output's ratios and ``calibration.md`` from its stored values."""
    import argparse

    from common.tables import print_table
    parser = argparse.ArgumentParser(prog="python -m calibration.report",
                                     description=rerender.__doc__.split(";")[0])
    parser.add_argument("--results", nargs="+", required=True,
                        help="output directories of calibration.calibrate")
    args = parser.parse_args(argv)
    rows = []
    for d in args.results:
        try:
            ratios = rerender(d).get("ratios_field_rce_app", {})
        except (OSError, KeyError, ValueError) as e:
            print(f"error: {d}: {type(e).__name__}: {e}")
            return 2
        for key in ("best_global", "neucalib"):
            if key in ratios:
                r = ratios[key]
                rows.append((f"{d}: adacalib / {key}",
                             f"per seed {', '.join(f'{v:.3f}' for v in r['values'])}; "
                             f"by means {r['by_means']:.3f} ({r['by_means_reference']})"))
    print_table("calibration.report", rows)
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
