"""Calibration metrics before and after each method, seed aggregation, markdown and plots.

Metrics are those of :func:`models.metrics.evaluate_predictions` (computed on the clicked rows
of the evaluation split for pCVR), renamed to short keys:

- ``field_rce_app`` / ``field_ece_app``: Field-RCE / Field-ECE by media app;
- ``field_rce_<f>`` / ``field_ece_<f>`` for every other field (``category`` for
  ``category_id``, else the column name);
- ``ece`` (= ``ece_eqfreq10``: equal-frequency, 10 bins) and ``ece_eqwidth100``
  (equal-width, 100 bins); ``ece_binning`` names the binning of ``ece``;
- ``pcoc``, ``auc`` (CVR AUC on clicked rows), ``logloss``;
- ``ctcvr_auc`` (pCTR x calibrated pCVR) and, on synthetic data, ``entire_space_cvr_auc``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from models import metrics as M
from preprocessing.report import markdown_table

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
    return out


def aggregate_runs(per_run: List[Dict[str, Any]], best_global: Sequence[str] = ("platt",
                                                                               "isotonic")
                   ) -> Dict[str, Any]:
    """Mean ± std over runs (seeds) of every method's metrics, and the acceptance ratio.

    Args:
        per_run: the ``calibration.json`` of each run (one seed each).
        best_global: the global methods whose lowest Field-RCE by app (per seed) is the
            denominator of ``ratio_field_rce_app``.

    Returns:
        ``{"methods": {method: {metric: {mean, std, values}}}, "ratio_field_rce_app": {...},
        "acceptance": {...}}``; the ratio is AdaCalib's Field-RCE by app over the best global
        method's, per seed, then averaged.
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
    globals_present = [g for g in best_global if g in methods]
    if "adacalib" in methods and globals_present:
        ratios, best = [], []
        for r in per_run:
            g_rce = {g: r["methods"][g]["after"]["field_rce_app"] for g in globals_present}
            g_best = min(g_rce, key=g_rce.get)
            best.append(g_best)
            ratios.append(r["methods"]["adacalib"]["after"]["field_rce_app"] / g_rce[g_best])
        mean, std = M.mean_std(ratios)
        out["ratio_field_rce_app"] = {"mean": mean, "std": std, "values": ratios,
                                      "best_global": best}
        auc_drop = [r["methods"]["uncalibrated"]["after"]["auc"]
                    - r["methods"]["adacalib"]["after"]["auc"] for r in per_run]
        pcocs = [r["methods"]["adacalib"]["after"]["pcoc"] for r in per_run]
        out["acceptance"] = {
            "ratio_at_most_0.7": bool(mean <= 0.7),
            "auc_drop_at_most_0.001": bool(M.mean_std(auc_drop)[0] <= 0.001),
            "pcoc_within_0.95_1.05": bool(0.95 <= M.mean_std(pcocs)[0] <= 1.05),
            "auc_drop": {"mean": M.mean_std(auc_drop)[0], "values": auc_drop},
        }
    return out


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
    return (f"# Calibration of pCVR ({result['run']})\n\n"
            f"Fit on the clicked rows of `{result['fit_split']}`, evaluated on the clicked rows "
            f"of `{result['eval_split']}`; fields {fields}. `ece`: {ECE_BINNING}; "
            "`ece_eqwidth100`: equal-width, 100 bins. The `uncalibrated` row is the 'before' "
            "of every method.\n\n" + table + "\n")


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
    if "ratio_field_rce_app" in agg:
        r = agg["ratio_field_rce_app"]
        text += (f"\nAdaCalib Field-RCE(app) / best global (platt, isotonic): "
                 f"{r['mean']:.3f} ± {r['std']:.3f} (per seed: "
                 f"{', '.join(f'{v:.3f}' for v in r['values'])})\n\n"
                 f"Acceptance: {agg['acceptance']}\n")
    return text


def _fmt(v: Optional[float], digits: int = 4) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}"


def plot_reliability_by_app(y: np.ndarray, app: np.ndarray, curves: Mapping[str, np.ndarray],
                            path: str, n_bins: int = 10) -> None:
    """One panel per media app, one line per method: mean prediction vs observed rate in
    ``n_bins`` equal-frequency bins of that method's predictions (clicked rows)."""
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
        ax.set_title(f"app_id {a} ({int(mask.sum())} clicks, {int(y[mask].sum())} conv.)",
                     fontsize=9)
        ax.set_xlabel("mean predicted pCVR")
        ax.set_ylabel("observed CVR")
    for ax in axes.reshape(-1)[len(apps):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
