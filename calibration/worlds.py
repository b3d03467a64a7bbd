"""Calibration judged across generated worlds: several datasets, several base-model seeds each.

Usage::

    python -m calibration.worlds --out CAL_WORLDS \\
        --world seed7  W7/proc  W7/runs/esmm_seed0  W7/runs/esmm_seed1  W7/runs/esmm_seed2 \\
        --world seed23 W23/proc W23/runs/esmm_seed0 W23/runs/esmm_seed1 W23/runs/esmm_seed2 \\
        [--holdout seed59] [--method all] [--field app_id] [--history-split train] \\
        [--variants FILE] [--decompose] [--config FILE]

Each ``--world NAME PROC_DIR RUN_DIR...`` is one generated dataset (a generator seed or config)
and the base-model runs trained on it. For every run, every method (and every variant of
``--variants``) is fitted on the clicked rows of ``valid`` and scored on the clicked rows of
``test`` (:func:`calibration.calibrate.calibrate_frames`); the true probabilities are scored too
(``true_probabilities``: the label-noise floor of each dataset). ``--decompose`` adds the
ground-truth decomposition of the remaining per-app error (:mod:`calibration.decompose`).

Output (atomic): ``CAL_WORLDS/worlds.json`` (per world and over all runs: mean ± std per
method, AdaCalib's and every candidate's Field-RCE by app over the best global method and over
NeuCalib, per run and by means, the acceptance checks), ``worlds.md``, ``field_rce_by_world.png``,
``decomposition.png`` (with ``--decompose``), and ``<world>/<run>/`` with each run's
``calibration.json`` and artifacts.

Predictions are cached beside each run (``RUN/calibration_frames/<split>.npz``, recomputed when
the SavedModel is newer), so re-running with other variants costs only the fits.

``--variants FILE``: YAML ``{name: {method: M, config: {...}, extra_days: K}}``, each reported
under its own name (:class:`calibration.calibrate.Variant`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from common.atomic import atomic_output_dir
from common.provenance import portable_path
from common.tables import markdown_table, print_table
from preprocessing.processed import ProcessedData

#: Methods whose remaining error ``--decompose`` takes apart (those present in the run), besides
#: every variant of ``--variants``.
DECOMPOSED = ("uncalibrated", "platt", "histogram", "neucalib", "adacalib", "adacalib_trend")
#: The numerators of the ratio report: the paper's method, then our extension.
CANDIDATES = ("adacalib", "adacalib_trend")
FRAME_COLUMNS_EXTRA = ("day",)


def cached_frame(run_dir: str, data_dir: str, split: str, fields: Sequence[str],
                 clicked_only: bool = False) -> Dict[str, np.ndarray]:
    """:func:`calibration.calibrate.split_frame`, cached in ``RUN/calibration_frames/<split>.npz``
    (recomputed when the run's SavedModel is newer than the cache or a column is missing)."""
    from calibration.calibrate import split_frame
    cache_dir = os.path.join(run_dir, "calibration_frames")
    path = os.path.join(cache_dir, f"{split}{'_clicked' if clicked_only else ''}.npz")
    saved = os.path.join(run_dir, "saved_model", "saved_model.pb")
    if (os.path.exists(path) and os.path.exists(saved)
            and os.path.getmtime(path) >= os.path.getmtime(saved)):
        with np.load(path) as z:
            frame = {k: z[k] for k in z.files}
        if all(f in frame for f in fields):
            return frame
    frame = split_frame(run_dir, data_dir, split, fields, FRAME_COLUMNS_EXTRA)
    if clicked_only:
        keep = frame["click"] == 1
        frame = {k: v[keep] for k, v in frame.items()}
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".partial.npz"
    np.savez(tmp, **frame)
    os.replace(tmp, path)
    return frame


def load_variants(path: Optional[str]) -> List[Any]:
    """The variants of a YAML ``{name: {method, config, extra_days}}`` file (none without)."""
    from calibration.calibrate import Variant
    from calibration import METHODS
    if not path:
        return []
    import yaml
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    out = []
    for name, spec in raw.items():
        spec = dict(spec or {})
        unknown = set(spec) - {"method", "config", "extra_days"}
        if unknown or "method" not in spec:
            raise ValueError(f"--variants {path}: variant {name!r} needs 'method' and may have "
                             f"'config', 'extra_days'; got {sorted(spec)}")
        if spec["method"] not in METHODS:
            raise ValueError(f"--variants {path}: variant {name!r}: unknown method "
                             f"{spec['method']!r}; choose from {list(METHODS)}")
        cls = type(METHODS[spec["method"]].default_config())
        out.append(Variant(str(name), spec["method"], cls(**(spec.get("config") or {})),
                           int(spec.get("extra_days", 0))))
    return out


def truth_metrics(evaluation: Mapping[str, np.ndarray], fields: Sequence[str]) -> Dict:
    """The report's metrics of the true probabilities (the label-noise floor)."""
    from calibration.decompose import TRUTH
    from calibration.report import calibration_metrics
    return calibration_metrics(evaluation, np.asarray(evaluation[TRUTH], dtype=np.float64),
                               fields)


def evaluate_run(world: str, data_dir: str, run_dir: str, out_dir: str, methods: Sequence[str],
                 fields: Sequence[str], configs: Mapping[str, Any], variants: Sequence[Any],
                 history_split: Optional[str], decompose: bool, replicates: int
                 ) -> Dict[str, Any]:
    """One run: calibrate, score the truth, optionally decompose; writes ``out_dir``."""
    from calibration.calibrate import Variant, calibrate_frames
    from calibration.decompose import TRUTH, drift_decomposition
    from calibration.calibrate import run_meta
    fit = cached_frame(run_dir, data_dir, "valid", fields)
    evaluation = cached_frame(run_dir, data_dir, "test", fields)
    history = (cached_frame(run_dir, data_dir, history_split, fields, clicked_only=True)
               if history_split else None)
    meta = run_meta(run_dir, data_dir, world=world, fit_split="valid", eval_split="test",
                    history_split=history_split)
    os.makedirs(out_dir, exist_ok=True)
    result = calibrate_frames(fit, evaluation, methods, fields, out_dir, configs, meta,
                              history, variants)
    if TRUTH in evaluation:
        floor = truth_metrics(evaluation, fields)
        result["methods"]["true_probabilities"] = {**floor, "after": floor,
                                                   "before": result["methods"]["uncalibrated"]
                                                   ["before"]}
    if decompose and TRUTH in evaluation:
        by_name = {v.name: v for v in variants}
        result["decomposition"] = {}
        for name in list(DECOMPOSED) + [v.name for v in variants]:
            if name == "uncalibrated":
                variant = None
            elif name in by_name:
                variant = by_name[name]
            elif name in methods:
                variant = Variant(name, name, configs.get(name))
            else:
                continue
            result["decomposition"][name] = drift_decomposition(
                fit, evaluation, variant, fields, replicates=replicates, history=history)
    with open(os.path.join(out_dir, "calibration.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    return result


def candidate_names(per_run: Sequence[Mapping[str, Any]]) -> List[str]:
    """The field-aware candidates present in every run: AdaCalib, the extension, variants."""
    from calibration import BEST_GLOBAL_CANDIDATES
    names = [m for m in per_run[0]["methods"]
             if m not in BEST_GLOBAL_CANDIDATES + ("uncalibrated", "neucalib",
                                                   "true_probabilities")]
    return [m for m in names if all(m in r["methods"] for r in per_run)]


def summarise(per_run: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Mean ± std per method over ``per_run`` and every candidate's ratios and checks."""
    from models import metrics as M
    from calibration import BEST_GLOBAL_CANDIDATES
    from calibration.report import adacalib_ratios, aggregate_runs
    agg = aggregate_runs(list(per_run), BEST_GLOBAL_CANDIDATES)
    agg.pop("ratio_field_rce_app", None)
    agg.pop("acceptance", None)
    agg["candidates"] = {}
    for name in candidate_names(per_run):
        ratios = adacalib_ratios(per_run, BEST_GLOBAL_CANDIDATES, method=name)
        auc_drop = [r["methods"]["uncalibrated"]["after"]["auc"]
                    - r["methods"][name]["after"]["auc"] for r in per_run]
        pcoc = [r["methods"][name]["after"]["pcoc"] for r in per_run]
        agg["candidates"][name] = {
            "ratios_field_rce_app": ratios,
            "auc_drop": dict(zip(("mean", "std"), M.mean_std(auc_drop)), values=auc_drop),
            "pcoc": dict(zip(("mean", "std"), M.mean_std(pcoc)), values=pcoc)}
    if "decomposition" in per_run[0]:
        agg["decomposition"] = summarise_decomposition(per_run)
    return agg


def summarise_decomposition(per_run: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Mean ± std over runs of each decomposed quantity, per method."""
    from models import metrics as M
    out: Dict[str, Any] = {}
    for name in per_run[0]["decomposition"]:
        rows = [r["decomposition"][name] for r in per_run if name in r.get("decomposition", {})]
        entry: Dict[str, Any] = {}
        for key in ("capacity", "drift", "estimation"):
            vals = [d["field_rce_truth"][key] for d in rows]
            entry[f"truth_{key}"] = dict(zip(("mean", "std"), M.mean_std(vals)), values=vals)
        for key in ("field_rce_observed", "floor"):
            vals = [d[key] for d in rows]
            entry[key] = dict(zip(("mean", "std"), M.mean_std(vals)), values=vals)
        for key in ("total", "level", "shape", "refinement"):
            vals = [d["kl"][key] for d in rows]
            entry[f"kl_{key}"] = dict(zip(("mean", "std"), M.mean_std(vals)), values=vals)
        out[name] = entry
    return out


def acceptance(worlds: Mapping[str, Mapping[str, Any]], overall: Mapping[str, Any],
               name: str) -> Dict[str, Any]:
    """The issue's checks for one candidate: <= 0.7x the best global method by means over all
    runs, at or below it in every world, not above NeuCalib by means, AUC within 0.1 point of
    uncalibrated, PCOC in [0.95, 1.05]."""
    cand = overall["candidates"].get(name)
    if not cand or "best_global" not in cand["ratios_field_rce_app"]:
        return {}
    r = cand["ratios_field_rce_app"]
    per_world = {w: s["candidates"][name]["ratios_field_rce_app"]["best_global"]["by_means"]
                 for w, s in worlds.items() if name in s["candidates"]}
    return {
        "ratio_best_global_by_means": r["best_global"]["by_means"],
        "ratio_at_most_0.7": bool(r["best_global"]["by_means"] <= 0.7),
        "ratio_best_global_by_world": per_world,
        "at_or_below_best_global_in_every_world": bool(all(v <= 1.0
                                                           for v in per_world.values())),
        "ratio_neucalib_by_means": r.get("neucalib", {}).get("by_means"),
        "not_above_neucalib": bool(r.get("neucalib", {}).get("by_means", np.inf) <= 1.0),
        "auc_drop_mean": cand["auc_drop"]["mean"],
        "auc_drop_at_most_0.001": bool(cand["auc_drop"]["mean"] <= 0.001),
        "pcoc_mean": cand["pcoc"]["mean"],
        "pcoc_within_0.95_1.05": bool(0.95 <= cand["pcoc"]["mean"] <= 1.05),
    }


def _ms(stats: Optional[Mapping[str, Any]], digits: int = 4) -> str:
    if not stats:
        return "-"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def markdown(result: Mapping[str, Any]) -> str:
    """``worlds.md``: per world and over all runs, the methods' metrics, the ratios, the
    acceptance checks and the decomposition."""
    cols = ("field_rce_app", "field_rce_app_q5", "field_ece_app", "pcoc", "auc", "logloss")
    listing = ", ".join(f"{w} ({len(s['runs'])} runs)" for w, s in result["worlds"].items())
    lines = ["# Calibration across generated worlds", "",
             f"Worlds: {listing}"
             + (f"; never tuned on: {result['holdout']}" if result.get("holdout") else "")
             + f". Fields {result['fields']}; fit on the clicked rows of `valid`, scored on the "
             "clicked rows of `test`. `true_probabilities`: the simulator's truth, the floor set "
             "by label noise.", ""]
    lines += ["## Field-RCE by app, by world", "", markdown_by_world(result), ""]
    blocks = [(f"## World {w}", s) for w, s in result["worlds"].items()]
    blocks.append((f"## All {result['overall']['n_runs']} runs", result["overall"]))
    for title, s in blocks:
        rows = [[m] + [_ms(s["methods"][m].get(k)) for k in cols] for m in s["methods"]]
        lines += [title, "", markdown_table(["method", *cols], rows), ""]
        for name, c in s["candidates"].items():
            for key, label in (("best_global", "best global"), ("neucalib", "NeuCalib")):
                r = c["ratios_field_rce_app"].get(key)
                if not r:
                    continue
                per = ", ".join(f"{v:.3f}" for v in r["values"])
                lines.append(f"- {name} / {label}: by means **{r['by_means']:.3f}** "
                             f"({r['by_means_reference']}); per run {per}")
        lines.append("")
    if result.get("acceptance"):
        lines += ["## Acceptance checks", ""]
        for name, checks in result["acceptance"].items():
            lines.append(f"- {name}: " + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in checks.items() if not isinstance(v, dict)))
            if "ratio_best_global_by_world" in checks:
                lines.append("  - by world: " + ", ".join(
                    f"{w} {v:.3f}" for w, v in checks["ratio_best_global_by_world"].items()))
        lines.append("")
    dec = result["overall"].get("decomposition")
    if dec:
        lines += ["## Where the remaining per-app error comes from (all runs)", "",
                  "Field-RCE by app on the test day against the **truth** (no label noise), "
                  "fitted on the test day's truth (capacity), on the calibration day's truth "
                  "(+ drift), on its labels (+ estimation: the real fit); then the observed "
                  "Field-RCE (against labels) and the true probabilities' (floor). KL: excess "
                  "log loss over the truth, x1000 nats per clicked row, split into per-app "
                  "level, per-app shape and refinement.", ""]
        rows = []
        for m, d in dec.items():
            rows.append([m] + [_ms(d[k], 4) for k in ("truth_capacity", "truth_drift",
                                                        "truth_estimation",
                                                        "field_rce_observed", "floor")]
                        + [f"{1000 * d[k]['mean']:.3f}" for k in ("kl_total", "kl_level",
                                                                   "kl_shape",
                                                                   "kl_refinement")])
        lines += [markdown_table(["method", "capacity", "+ drift", "+ estimation", "observed",
                                  "floor", "KL", "level", "shape", "refinement"], rows), ""]
    return "\n".join(lines) + "\n"


def markdown_by_world(result: Mapping[str, Any], metric: str = "field_rce_app") -> str:
    """One table: a row per method, a column per world and one over all runs (mean ± std)."""
    worlds = list(result["worlds"])
    head = [w + (" (never tuned on)" if w == result.get("holdout") else "") for w in worlds]
    rows = []
    for m in result["overall"]["methods"]:
        cells = [_ms(result["worlds"][w]["methods"].get(m, {}).get(metric)) for w in worlds]
        rows.append([m] + cells + [_ms(result["overall"]["methods"][m].get(metric))])
    n = result["overall"]["n_runs"]
    return markdown_table(["method", *head, f"all {n} runs"], rows)


def plot_by_world(result: Mapping[str, Any], path: str) -> None:
    """Field-RCE by app, mean ± std per method, one group of bars per world."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    worlds = list(result["worlds"])
    methods = [m for m in result["overall"]["methods"]]
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(methods) * len(worlds) / 2), 4.5))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        means = [result["worlds"][w]["methods"][m]["field_rce_app"]["mean"] for w in worlds]
        stds = [result["worlds"][w]["methods"][m]["field_rce_app"]["std"] for w in worlds]
        ax.bar(np.arange(len(worlds)) + i * width, means, width, yerr=stds, label=m,
               capsize=2)
    ax.set_xticks(np.arange(len(worlds)) + 0.4 - width / 2)
    ax.set_xticklabels([w + (" (holdout)" if w == result.get("holdout") else "")
                        for w in worlds])
    ax.set_ylabel("Field-RCE by app (test day)")
    ax.set_title("Calibration across generated worlds (mean ± std over base-model seeds)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_decomposition(dec: Mapping[str, Any], path: str) -> None:
    """Left: the Field-RCE-against-truth ladder per method (capacity, + drift, + estimation)
    with the observed value and the floor. Right: KL split into level, shape, refinement."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(dec)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5))
    keys = [("truth_capacity", "vs truth: fitted on test-day truth (capacity)"),
            ("truth_drift", "vs truth: fitted on day-5 truth (+ drift)"),
            ("truth_estimation", "vs truth: fitted on day-5 labels (+ estimation)"),
            ("field_rce_observed", "observed (vs labels)")]
    width = 0.8 / len(keys)
    x = np.arange(len(names))
    for i, (k, label) in enumerate(keys):
        a1.bar(x + i * width, [dec[n][k]["mean"] for n in names], width,
               yerr=[dec[n][k]["std"] for n in names], label=label, capsize=2)
    floor = float(np.mean([dec[n]["floor"]["mean"] for n in names]))
    a1.axhline(floor, color="k", ls="--", lw=1, label=f"true probabilities (floor) {floor:.3f}")
    a1.set_xticks(x + 0.4 - width / 2)
    a1.set_xticklabels(names, rotation=20)
    a1.set_ylabel("Field-RCE by app, test day")
    a1.legend(fontsize=7)
    a1.set_title("Per-app level error: capacity, drift, estimation")
    bottom = np.zeros(len(names))
    for k, label in (("kl_level", "per-app level"), ("kl_shape", "per-app shape")):
        v = np.array([1000 * dec[n][k]["mean"] for n in names])
        a2.bar(x, v, 0.6, bottom=bottom, label=label)
        bottom += v
    for xi, n, top in zip(x, names, bottom):      # refinement dwarfs both: a number, no bar
        a2.annotate(f"+{1000 * dec[n]['kl_refinement']['mean']:.1f}\nrefinement", (xi, top),
                    ha="center", va="bottom", fontsize=7)
    a2.set_ylim(0, 1.3 * float(bottom.max()))
    a2.set_xticks(x)
    a2.set_xticklabels(names, rotation=20)
    a2.set_ylabel("excess log loss over the truth (x1000 nats / click)")
    a2.legend(fontsize=7)
    a2.set_title("What a per-app monotone calibrator could still fix\n"
                 "(refinement: ranking error, no calibrator can fix it)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def calibrate_worlds(worlds: Sequence[Sequence[str]], out: str, methods: Sequence[str],
                     fields: Sequence[str], configs: Mapping[str, Any], variants: Sequence[Any],
                     history_split: Optional[str] = None, decompose: bool = False,
                     holdout: Optional[str] = None, replicates: int = 20) -> Dict[str, Any]:
    """The whole command (module docstring); ``out`` appears atomically."""
    from tqdm import tqdm
    parsed = []
    for spec in worlds:
        if len(spec) < 3:
            raise ValueError(f"--world needs NAME PROC_DIR RUN_DIR [RUN_DIR ...]; got {spec}")
        parsed.append((spec[0], spec[1], list(spec[2:])))
    names = [w for w, _, _ in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"--world names must be distinct; got {names}")
    if holdout is not None and holdout not in names:
        raise ValueError(f"--holdout {holdout!r} is not one of the worlds {names}")
    from calibration.calibrate import run_names
    result: Dict[str, Any] = {"fields": list(fields), "holdout": holdout, "worlds": {},
                              "methods": list(methods), "variants": [v.name for v in variants],
                              "history_split": history_split}
    with atomic_output_dir(out) as staging:
        all_runs = []
        bar = tqdm(total=sum(len(r) for _, _, r in parsed), desc="calibrate runs", unit="run")
        for world, data_dir, runs in parsed:
            data_dir = ProcessedData.open(data_dir)  # once per world, for every run
            per_run = []
            for sub, run_dir in zip(run_names(runs), runs):
                per_run.append(evaluate_run(world, data_dir, run_dir,
                                            os.path.join(staging, world, sub), methods, fields,
                                            configs, variants, history_split, decompose,
                                            replicates))
                bar.update(1)
            summary = summarise(per_run)
            summary["runs"] = [r["run"] for r in per_run]
            summary["data"] = portable_path(data_dir.root, "PROC")
            result["worlds"][world] = summary
            all_runs += per_run
        bar.close()
        result["overall"] = summarise(all_runs)
        result["acceptance"] = {name: acceptance(result["worlds"], result["overall"], name)
                                for name in result["overall"]["candidates"]}
        with open(os.path.join(staging, "worlds.json"), "w") as fh:
            json.dump(result, fh, indent=2)
        with open(os.path.join(staging, "worlds.md"), "w") as fh:
            fh.write(markdown(result))
        plot_by_world(result, os.path.join(staging, "field_rce_by_world.png"))
        if result["overall"].get("decomposition"):
            plot_decomposition(result["overall"]["decomposition"],
                               os.path.join(staging, "decomposition.png"))
    return result


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m calibration.worlds``."""
    from calibration.calibrate import load_method_configs, parse_fields, parse_methods
    parser = argparse.ArgumentParser(prog="python -m calibration.worlds",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", action="append", nargs="+", required=True,
                        metavar="NAME PROC_DIR RUN_DIR", help="a dataset and its runs")
    parser.add_argument("--out", required=True)
    parser.add_argument("--method", default="all")
    parser.add_argument("--field", action="append", default=[])
    parser.add_argument("--history-split", default=None, choices=("train",))
    parser.add_argument("--variants", default=None, help="YAML {name: {method, config, "
                                                          "extra_days}}")
    parser.add_argument("--config", default=None, help="YAML {method: {field: value}}")
    parser.add_argument("--decompose", action="store_true",
                        help="ground-truth decomposition of the remaining per-app error")
    parser.add_argument("--replicates", type=int, default=20,
                        help="label draws per row of the ground-truth fits of --decompose")
    parser.add_argument("--holdout", default=None, help="the world never tuned on (reported)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        methods = parse_methods(args.method, history=args.history_split is not None)
        fields = parse_fields(args.field)
        configs = load_method_configs(args.config, methods)
        variants = load_variants(args.variants)
        result = calibrate_worlds(args.world, args.out, methods, fields, configs, variants,
                                  args.history_split, args.decompose, args.holdout,
                                  args.replicates)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(open(os.path.join(args.out, "worlds.md")).read())
    rows = [("output", os.path.abspath(args.out)),
            ("worlds", ", ".join(result["worlds"])),
            ("runs", result["overall"]["n_runs"])]
    for name, checks in result["acceptance"].items():
        if checks:
            rows.append((f"{name} / best global, by means",
                         f"{checks['ratio_best_global_by_means']:.3f}"))
            if checks["ratio_neucalib_by_means"] is not None:
                rows.append((f"{name} / neucalib, by means",
                             f"{checks['ratio_neucalib_by_means']:.3f}"))
    rows.append(("seconds", f"{time.perf_counter() - t0:.1f}"))
    print_table("calibration.worlds", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
