"""The replay's report: ``replay.json``, ``replay.md`` and two plots (CPA attainment by media app,
conversions against spend)."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from preprocessing.app_names import app_label
from common.tables import markdown_table


def fmt(cell: Optional[Mapping[str, Any]], digits: int = 3) -> str:
    """``mean ± std`` of a cell's values that are numbers (``models.metrics.format_mean_std``:
    one value alone); ``-`` when there is none."""
    from models.metrics import format_mean_std
    from replay.run import finite_values
    finite = finite_values((cell or {}).get("values", []))
    return format_mean_std(finite, digits) if finite else "-"


def group_order(groups: Sequence[str]) -> List[str]:
    """Models first (uncalibrated before calibrated, in the given order), the oracle last."""
    return [g for g in groups if g != "oracle"] + [g for g in groups if g == "oracle"]


def markdown(report: Dict[str, Any]) -> str:
    """The report as markdown: the settings, the per-group table and the CPA ratios by app."""
    cfg, groups = report["config"], report["groups"]
    names = {int(k): v for k, v in report["app_names"].items()}
    order = group_order(list(groups))
    budget = "unlimited" if cfg["budget"] is None else format(cfg["budget"], ".6g")
    if cfg["budget_share"] is not None:
        budget += f" ({cfg['budget_share']:g} of the day's true value)"
    lines = ["# oCPX bidding replay", "",
             f"Data `{cfg['data']}`, split `{cfg['split']}` ({cfg['impressions']} impressions); "
             f"target CPA {cfg['target_cpa']:g}; budget {budget}"
             f"; pacing slots {cfg['pacing_slots']}; market: lognormal spread "
             f"{cfg['market']['spread']:g} (by app {cfg['market']['spread_by_app'] or 'none'}), "
             f"median ratio {cfg['market']['median_ratio']:g}, competitor knowledge "
             f"{cfg['market']['competitor_knowledge']:g}, seed {cfg['market']['seed']}; "
             f"bid multiplier: {cfg['bid_multiplier_rule']}.", "",
             "Mean ± std over each group's seeds. `cpa_ratio` = spend / (target x conversions) "
             "(1.0 is perfect); `expected`: with the expected conversions of the won impressions "
             "(no label noise); worst app: the app whose ratio is farthest from 1.0 in log; "
             "`overbid`: the share of spend on impressions whose true value was below the price.",
             ""]
    header = ["group", "seeds", "multiplier", "spend", "conversions", "expected conv.",
              "conv. / budget", "cpa_ratio", "cpa_ratio expected", "worst app ratio",
              "worst app ratio expected", "overbid"]
    rows = []
    for g in order:
        s = groups[g]
        rows.append([g, len(s["seeds"]), fmt(s["bid_multiplier"]), fmt(s["spend"], 1),
                     fmt(s["conversions"], 1), fmt(s["expected_conversions"], 1),
                     fmt(s["conversions_per_budget"], 5), fmt(s["cpa_ratio"]),
                     fmt(s["cpa_ratio_expected"]), fmt(s["worst_app_cpa_ratio"]),
                     fmt(s["worst_app_cpa_ratio_expected"]), fmt(s["overbid_spend_share"])])
    lines += [markdown_table(header, rows), ""]
    for key, title in (("cpa_ratio_expected_by_app", "CPA / target by media app (expected "
                        "conversions)"), ("cpa_ratio_by_app", "CPA / target by media app "
                                          "(drawn conversions)"),
                       ("pcoc_by_app", "Predicted over true conversion probability (pCTR x pCVR, "
                        "every impression) by media app")):
        apps = sorted({a for g in order for a in groups[g][key]}, key=int)
        lines += [f"## {title}", "",
                  markdown_table(["group"] + [app_label(a, names) for a in apps],
                                 [[g] + [fmt(groups[g][key].get(a)) for a in apps]
                                  for g in order]), ""]
    for model in dict.fromkeys(s["model"] for s in report["bidders"].values()):
        lines += adacalib_verdict(report, model)
    return "\n".join(lines)


def _at_least_as_good(key: str, a: Optional[float], b: Optional[float]) -> bool:
    """Lower is better for a worst-app deviation (a missing one is infinite: an app without a
    conversion), higher for conversions (a missing one counts as none)."""
    if key.startswith("worst"):
        return _or(a, math.inf) <= _or(b, math.inf)
    return _or(a, -math.inf) >= _or(b, -math.inf)


def _or(value: Optional[float], default: float) -> float:
    return default if value is None or not math.isfinite(value) else float(value)


def _num(value: Optional[float], digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _by_seed(report: Dict[str, Any], group: str, key: str) -> Dict[Any, float]:
    return {b["seed"]: b[key] for b in report["bidders"].values() if b["group"] == group}


def adacalib_verdict(report: Dict[str, Any], model: str) -> List[str]:
    """Markdown lines: per seed, the worst app's ``|log(CPA / target)|`` (expected and drawn
    conversions) and the expected conversions per unit of budget of ``model`` uncalibrated and
    with each calibrator, and whether AdaCalib beats the uncalibrated and the isotonic bidder
    (closer to 1.0; at least as many conversions; the oracle above every bidder)."""
    groups = [g for g in report["groups"] if g == model or g.startswith(model + "+")]
    ada = f"{model}+adacalib"
    if ada not in groups:
        return []
    keys = (("worst_app_log_deviation_expected", "worst app, expected", 3),
            ("worst_app_log_deviation", "worst app, drawn", 3),
            ("expected_conversions_per_budget", "exp. conv. / budget", 5))
    lines = [f"## AdaCalib against the other {model} bidders, per seed", "",
             "Worst app: `|log(CPA / target)|` of the app farthest from the target (0 is "
             "perfect). Conversions per budget: expected conversions bought per unit of budget.",
             ""]
    header = ["seed"] + [f"{g}: {label}" for key, label, _ in keys for g in groups]
    seeds = sorted(_by_seed(report, ada, keys[0][0]), key=lambda v: (v is None, v))
    values = {(key, g): _by_seed(report, g, key) for key, _, _ in keys for g in groups}
    rows = [[seed] + [_num(values[(key, g)].get(seed), d) for key, _, d in keys for g in groups]
            for seed in seeds]
    lines += [markdown_table(header, rows), ""]
    oracle = report["groups"].get("oracle", {}).get("expected_conversions_per_budget", {})
    for other in (g for g in (model, f"{model}+isotonic") if g in groups):
        for key, label, _ in keys:
            wins = sum(_at_least_as_good(key, values[(key, ada)][s], values[(key, other)][s])
                       for s in seeds)
            mean_ada = report["groups"][ada][key]["mean"]
            mean_other = report["groups"][other][key]["mean"]
            holds = _at_least_as_good(key, mean_ada, mean_other)
            lines.append(f"- {ada} vs {other}, {label}: at least as good in {wins}/{len(seeds)} "
                         f"seeds; by means {_num(mean_ada, 4)} vs {_num(mean_other, 4)} "
                         f"({'holds' if holds else 'does not hold'})")
    if oracle.get("mean") is not None:
        below = all(_or(report["groups"][g]["expected_conversions_per_budget"]["mean"],
                        -math.inf) < oracle["mean"] for g in groups)
        lines.append(f"- every {model} bidder below the oracle in conversions per budget: "
                     f"{'yes' if below else 'no'} (oracle {oracle['mean']:.5f})")
    return lines + [""]


def plot_cpa_by_app(report: Dict[str, Any], path: str,
                    key: str = "cpa_ratio_expected_by_app") -> None:
    """Grouped bars: CPA / target per media app, one bar per group (± std over seeds), the
    target as a line at 1.0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = report["groups"]
    order = group_order(list(groups))
    apps = sorted({a for g in order for a in groups[g][key]}, key=int)
    width = 0.8 / max(1, len(order))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(apps), 4.0))
    drawn = [1.0]
    for i, g in enumerate(order):
        cells = [groups[g][key].get(a) or {} for a in apps]
        means = [c.get("mean") if c.get("mean") is not None else np.nan for c in cells]
        stds = [c.get("std") or 0.0 for c in cells]
        drawn += [m + sign * sd for m, sd in zip(means, stds) for sign in (-1, 1)
                  if np.isfinite(m)]
        ax.bar(np.arange(len(apps)) + (i - (len(order) - 1) / 2) * width, means, width,
               yerr=stds, capsize=3, label=g)
    ax.axhline(1.0, color="k", ls="--", lw=1, label="target")
    span = max(drawn) - min(drawn)
    ax.set_ylim(min(drawn) - 0.25 * span - 0.01, max(drawn) + 0.25 * span + 0.01)
    ax.set_xticks(np.arange(len(apps)))
    names = {int(k): v for k, v in report["app_names"].items()}
    ax.set_xticklabels([app_label(a, names) for a in apps], rotation=20,
                       fontsize=8)
    ax.set_ylabel("realised CPA / target")
    ax.set_title("CPA attainment by media app" + (" (expected conversions)"
                                                  if "expected" in key else ""))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_conversions_vs_spend(curves: Mapping[str, Mapping[str, np.ndarray]], path: str,
                              budget: Optional[float]) -> None:
    """Cumulative expected conversions against cumulative spend over the day's arrivals, one
    line per bidder (``curves[name] = {"spend": ..., "conversions": ...}``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for name, c in curves.items():
        ax.plot(c["spend"], c["conversions"], lw=1.2,
                ls="--" if name == "oracle" else "-", label=name)
    if budget is not None:
        ax.axvline(budget, color="grey", ls=":", lw=1, label="budget")
    ax.set_xlabel("cumulative spend")
    ax.set_ylabel("cumulative expected conversions")
    ax.set_title("Conversions bought against spend")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
