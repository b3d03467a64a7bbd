"""Mechanism probes (issue 33): is there headroom for a method's mechanism in a world, measured
from the ground truth and independently of the method?

Usage::

    python -m benchmarks.mechanism_probe --world long_tail_slots --data GEN_DIR --out DIR \\
        [--processed PROC_DIR --run RUN_DIR [RUN_DIR ...]] [--field slot_id --field app_id]

Writes ``DIR/probe.json`` (atomic) with ``world`` and the probe's figures, and prints a table.

``long_tail_slots`` (AdaCalib; docs/worlds.md):

- ``floor_field_rce``: the label-based Field-RCE of the **true** probabilities on the clicked
  rows of the generated test day (the last day of ``GEN_DIR``), per field: the label-noise
  floor under which no calibrator can be judged by the labels.
- with ``--run``: on the clicked test rows of each run, the truth-based Field-RCE
  (``models.metrics.field_rce_truth``) of the uncalibrated predictions and of oracles fitted
  on the test day itself, each a logistic fit of ``a * logit(p) + b`` (level and sharpness),
  fitted on one half of the day's clicked rows and judged on the other (2-fold, averaged: a
  per-value fit judged on its own rows would match each value's total by construction):
  ``oracle_global_field_rce``, one function for all rows fitted on the labels (what a global
  calibrator can reach); ``oracle_field_rce``, one per field value fitted on the **labels**
  (values with fewer than ``--min-positives`` purchases in the fitting half keep the global
  one: what a per-value level-and-shape correction from half a day's labels reaches);
  ``oracle_truth_field_rce``, one per value fitted on the **true probabilities** (values with
  at least ``--min-rows`` clicked rows in the fitting half: the per-value headroom free of label
  noise). ``oracle_ratio`` is ``oracle_field_rce / oracle_global_field_rce``: near 1 means the
  day's labels leave no per-value distortion that a per-value calibrator could find.

``deep_funnel`` (AutoHERI; ``--processed`` and ``--run`` with AutoHERI-family runs): on the
first ``--rows`` test rows (all impressions), the held-out R² (ridge, fitted on the first half,
scored on the second) of the true purchase logit ``logit(p_purchase_given_click)`` from the
purchase tower's hidden layers alone and from every tower's layers; ``r2_gain_upstream`` is the
difference (per run, and mean ± std per model; the headline figure is ``autoheri_all``'s), and
``auc_all_minus_none`` the entire-space CVR AUC of ``autoheri_all`` minus ``autoheri_none`` when
both are given. A gain near 0 on ``autoheri_none`` (no edges) means the upstream towers know
nothing about the purchase that its own tower lacks: no edge can help.

``covariate_shift`` (UKD; ``--processed`` the pseudo-labelled data of ``models.pseudolabel``,
``--run`` students trained at the settings to compare, e.g. head dropout 0.1 / 0.3 / 0.5 and KL
weight 0 / 1): on the unclicked rows among the first ``--rows`` validation rows, the Spearman
correlation between each student's head disagreement ``u`` (mean of ``--draws`` dropout draws;
both the paper's KL and the level-free logit gap) and the teacher's error against the truth, and
the mean error of the top ``u`` decile over the bottom one. The error is
``KL(truth || teacher_pcvr)`` (``*_kl``, the headline: the excess distillation loss a wrong soft
label costs its row, so it does not grow with the pCVR level as the absolute error does) and
``|teacher_pcvr - truth|`` (``*_abs``). The headline ``spearman_u_error`` / ``decile_error_ratio`` are the best
setting's (named in ``best_setting``): below 0.2 / 1.5, ``u`` does not find the bad
pseudo-labels and no lambda can help.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Any, Dict, List, Sequence

import numpy as np

from common.atomic import atomic_write_text
from common.provenance import portable_command, portable_path
from common.tables import print_table

WORLDS = ("long_tail_slots", "deep_funnel", "covariate_shift")
PURCHASE, CLICK, TRUTH = "purchase", "click", "p_purchase_given_click"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def fit_platt(p: np.ndarray, t: np.ndarray, groups: np.ndarray, iters: int = 50,
              ridge: float = 1e-6):
    """Per group, the ``a * logit(p) + b`` closest to the targets ``t`` (labels or true
    probabilities) in cross-entropy (Newton, all groups at once).

    Returns:
        ``(values, a, b)``: the sorted group values and their coefficients.
    """
    x = _logit(p)
    values, codes = np.unique(groups, return_inverse=True)
    codes = codes.reshape(-1)
    k = len(values)
    a, b = np.ones(k), np.zeros(k)

    def sums(w):
        return np.bincount(codes, weights=w, minlength=k)

    for _ in range(iters):
        q = _sigmoid(a[codes] * x + b[codes])
        r, w = q - t, q * (1 - q)
        ga, gb = sums(r * x), sums(r)
        haa, hab, hbb = sums(w * x * x) + ridge, sums(w * x), sums(w) + ridge
        det = haa * hbb - hab * hab
        ok = det > 1e-12
        da = np.where(ok, (hbb * ga - hab * gb) / np.where(ok, det, 1.0), 0.0)
        db = np.where(ok, (haa * gb - hab * ga) / np.where(ok, det, 1.0), 0.0)
        a, b = a - np.clip(da, -2, 2), b - np.clip(db, -5, 5)
        if np.max(np.abs(da), initial=0.0) < 1e-9 and np.max(np.abs(db), initial=0.0) < 1e-9:
            break
    return values, a, b


def apply_platt(p: np.ndarray, groups: np.ndarray, fitted, fallback=None) -> np.ndarray:
    """``fit_platt``'s functions applied to ``p`` by group; a group it has not seen uses
    ``fallback`` (another ``fit_platt`` result with one group) or the identity."""
    values, a, b = fitted
    x = _logit(p)
    pos = np.clip(np.searchsorted(values, groups), 0, max(len(values) - 1, 0))
    seen = (values[pos] == groups) if len(values) else np.zeros(len(p), dtype=bool)
    fa, fb = (fallback[1][0], fallback[2][0]) if fallback is not None else (1.0, 0.0)
    coef_a = np.where(seen, a[pos] if len(values) else fa, fa)
    coef_b = np.where(seen, b[pos] if len(values) else fb, fb)
    return _sigmoid(coef_a * x + coef_b)


def platt_per_group(p: np.ndarray, t: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``fit_platt`` fitted and applied on the same rows (the fitted probabilities)."""
    return apply_platt(p, groups, fit_platt(p, t, groups))


def test_day_frame(gen_dir: str, fields: Sequence[str]) -> Dict[str, np.ndarray]:
    """Clicked rows of the generated data's last day: labels, truth and the raw fields."""
    import pyarrow.parquet as pq
    days = sorted(glob.glob(os.path.join(gen_dir, "day_*.parquet")))
    if not days:
        raise FileNotFoundError(f"{gen_dir}: no day_*.parquet files (the output of "
                                f"`python -m preprocessing.generate`)")
    cols = [CLICK, PURCHASE, TRUTH, *fields]
    table = pq.read_table(days[-1], columns=cols)
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise ValueError(f"{days[-1]}: columns {missing} absent ({table.num_rows} rows)")
    click = table.column(CLICK).to_numpy() == 1
    return {c: table.column(c).to_numpy()[click] for c in cols}


def long_tail_slots(args) -> Dict[str, Any]:
    """The AdaCalib probe (see the module docstring)."""
    from models.metrics import field_rce, field_rce_truth
    fields = args.field or ["slot_id", "app_id"]
    test = test_day_frame(args.data, fields)
    out: Dict[str, Any] = {"fields": fields, "test_clicked_rows": int(len(test[TRUTH])),
                           "test_purchases": int(test[PURCHASE].sum())}
    per_value = {}
    for f in fields:
        pos = np.bincount(np.unique(test[f], return_inverse=True)[1].reshape(-1),
                          weights=test[PURCHASE])
        per_value[f] = {"values": int(len(pos)),
                        "median_test_purchases": float(np.median(pos))}
    out["per_value"] = per_value
    out["floor_field_rce"] = {f: field_rce(test[PURCHASE], test[TRUTH], test[f]) for f in fields}
    if args.run:
        if not args.processed:
            raise SystemExit("--run needs --processed (the preprocessed data the run used)")
        from calibration.worlds import cached_frame
        runs = {}
        for run in args.run:
            fr = cached_frame(run, args.processed, "test", fields, clicked_only=True)
            p, t = fr["pcvr"], fr[TRUTH]
            res: Dict[str, Any] = {}
            y = fr[PURCHASE].astype(np.float64)
            # 2-fold on the test day: fit on one half of the rows, judge on the other
            fold = np.random.default_rng(0).permutation(len(p)) % 2
            for f in fields:
                g = np.asarray(fr[f])
                sums = {k: 0.0 for k in ("oracle_global_field_rce", "oracle_field_rce",
                                         "oracle_truth_field_rce",
                                         "uncalibrated_field_rce_truth")}
                for half in (0, 1):
                    fit, judge = fold == half, fold != half
                    one = np.zeros(int(fit.sum()), dtype=np.int64)
                    glob = fit_platt(p[fit], y[fit], one)
                    glob_truth = fit_platt(p[fit], t[fit], one)
                    codes = np.unique(g[fit], return_inverse=True)[1].reshape(-1)
                    enough = np.bincount(codes, weights=y[fit])[codes] >= args.min_positives
                    big = np.bincount(codes)[codes] >= args.min_rows
                    own = fit_platt(p[fit][enough], y[fit][enough], g[fit][enough])
                    own_truth = fit_platt(p[fit][big], t[fit][big], g[fit][big])
                    pj, tj, gj = p[judge], t[judge], g[judge]
                    zeros = np.zeros(len(pj), dtype=np.int64)
                    sums["oracle_global_field_rce"] += field_rce_truth(
                        tj, apply_platt(pj, zeros, glob), gj)
                    sums["oracle_field_rce"] += field_rce_truth(
                        tj, apply_platt(pj, gj, own, fallback=glob), gj)
                    sums["oracle_truth_field_rce"] += field_rce_truth(
                        tj, apply_platt(pj, gj, own_truth, fallback=glob_truth), gj)
                    sums["uncalibrated_field_rce_truth"] += field_rce_truth(tj, pj, gj)
                res[f] = {k: v / 2.0 for k, v in sums.items()}
                res[f]["uncalibrated_field_rce"] = field_rce(y, p, g)
                res[f]["oracle_ratio"] = (res[f]["oracle_field_rce"]
                                          / max(res[f]["oracle_global_field_rce"], 1e-12))
            runs[portable_path(run, os.path.basename(os.path.normpath(run)))] = res
        out["runs"] = runs
        for f in fields:
            for key in ("oracle_field_rce", "oracle_global_field_rce", "oracle_truth_field_rce",
                        "uncalibrated_field_rce_truth", "oracle_ratio"):
                vals = [r[f][key] for r in runs.values()]
                out.setdefault(key, {})[f] = {"mean": float(np.mean(vals)),
                                              "std": float(np.std(vals, ddof=1))
                                              if len(vals) > 1 else 0.0}
    return out


def load_autoheri(run_dir: str, data):
    """The trained AutoHERI-family network of ``run_dir`` with its best weights, and its
    model name (the derived edges of a searched ``autoheri`` from its architecture file)."""
    import tensorflow as tf

    from models.autoheri.architecture import Architecture
    from models.autoheri.model import AUTOHERI_MODELS, build_autoheri
    from models.config import model_config_from_flat
    from models.data import batches, features_and_targets, model_columns, split_dataset
    from models.trainer import exported_weights
    with open(os.path.join(run_dir, "config.json")) as fh:
        recorded = json.load(fh)
    name = recorded["model"]
    if name not in AUTOHERI_MODELS:
        raise SystemExit(f"{run_dir}: a {name!r} run; the deep_funnel probe needs an "
                         f"AutoHERI-family run ({', '.join(sorted(AUTOHERI_MODELS))})")
    mcfg = model_config_from_flat(recorded["model_config"])
    features, targets, schema = features_and_targets(data)
    edges = None
    if name == "autoheri":
        edges = Architecture.load(os.path.join(run_dir, "autoheri_architecture.json")).kept
    model = build_autoheri(name, features, mcfg, targets, int(recorded["seed"]), edges=edges)
    ds = split_dataset(data, "valid", model_columns(schema, targets))
    for x, _ in batches(ds, 8, shuffle=False):
        model(x)
        break
    tf.train.Checkpoint(model=model).restore(exported_weights(run_dir)).expect_partial()
    return model, name


def held_out_r2(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3) -> float:
    """R² on the second half of the rows of a ridge regression fitted on the first half
    (features standardised on the first half)."""
    half = len(y) // 2
    mu, sd = x[:half].mean(0), x[:half].std(0) + 1e-9
    z = (x - mu) / sd
    design = np.column_stack([np.ones(len(z)), z])
    a, b = design[:half], y[:half]
    reg = ridge * half * np.eye(design.shape[1])
    reg[0, 0] = 0.0
    coef = np.linalg.solve(a.T @ a + reg, a.T @ b)
    resid = y[half:] - design[half:] @ coef
    return float(1.0 - resid.var() / y[half:].var())


def deep_funnel(args) -> Dict[str, Any]:
    """The AutoHERI probe: how much of the true purchase logit the click and cart towers'
    hidden layers add to the purchase tower's own (held-out R², ``--rows`` test rows of each
    run, all impressions), and each run's entire-space CVR AUC by model."""
    from models.data import batches, model_columns, split_dataset
    from models.predict import split_context
    from preprocessing.processed import ProcessedData
    if not (args.run and args.processed):
        raise SystemExit("the deep_funnel probe needs --processed and --run (trained "
                         "AutoHERI-family runs, autoheri_all for the issue's figure)")
    data = ProcessedData.open(args.processed)
    truth = split_context(data, "test")[TRUTH].to_numpy()[:args.rows]
    y = _logit(truth)
    runs, by_model = {}, {}
    for run in args.run:
        metrics_path = os.path.join(run, "metrics.json")
        with open(metrics_path) as fh:
            auc = json.load(fh)["test"]["entire_space_cvr_auc"]
        model, name = load_autoheri(run, data)
        ds = split_dataset(data, "test", model_columns(data.schema("test"), data.targets))
        layers: Dict[str, List[np.ndarray]] = {}
        seen = 0
        for x, _ in batches(ds, 16384, shuffle=False):
            for task, hs in model.hidden_layers(x).items():
                layers.setdefault(task, []).append(np.concatenate([h.numpy() for h in hs], 1))
            seen += len(next(iter(x.values())))
            if seen >= args.rows:
                break
        acts = {t: np.concatenate(v)[:len(y)] for t, v in layers.items()}
        own = held_out_r2(acts["purchase"], y)
        every = held_out_r2(np.concatenate([acts[t] for t in sorted(acts)], 1), y)
        key = portable_path(run, os.path.basename(os.path.normpath(run)))
        runs[key] = {"model": name, "r2_purchase_tower": own, "r2_all_towers": every,
                     "r2_gain_upstream": every - own, "entire_space_cvr_auc": auc}
        by_model.setdefault(name, []).append(runs[key])
    out: Dict[str, Any] = {"rows": int(len(y)), "runs": runs, "by_model": {}}
    for name, rs in by_model.items():
        entry = {}
        for key in ("r2_gain_upstream", "r2_purchase_tower", "entire_space_cvr_auc"):
            vals = [r[key] for r in rs]
            entry[key] = {"mean": float(np.mean(vals)),
                          "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}
        out["by_model"][name] = entry
    main_model = "autoheri_all" if "autoheri_all" in by_model else next(iter(by_model))
    out["r2_gain_upstream"] = out["by_model"][main_model]["r2_gain_upstream"]
    out["r2_gain_model"] = main_model
    if "autoheri_all" in by_model and "autoheri_none" in by_model:
        a = [r["entire_space_cvr_auc"] for r in by_model["autoheri_all"]]
        b = [r["entire_space_cvr_auc"] for r in by_model["autoheri_none"]]
        out["auc_all_minus_none"] = float(np.mean(a) - np.mean(b))
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).correlation)


def decile_ratio(u: np.ndarray, error: np.ndarray) -> float:
    """Mean ``error`` of the rows in the top decile of ``u`` over that of the bottom decile."""
    lo, hi = np.quantile(u, [0.1, 0.9])
    bottom = error[u <= lo].mean()
    return float(error[u >= hi].mean() / bottom) if bottom > 0 else float("inf")


def covariate_shift(args) -> Dict[str, Any]:
    """The UKD probe: on the first ``--rows`` unclicked validation rows, how well each
    student's head disagreement ``u`` (the KL and the level-free logit gap) finds the rows
    where the teacher's pseudo-label is wrong against the truth."""
    from models.config import model_config_from_flat, with_added_defaults
    from models.data import features_and_targets, model_columns, split_dataset
    from models.predict import split_context
    from models.ukd.config import UKDConfig
    from models.ukd.disagreement import head_disagreement, load_student
    from preprocessing.processed import ProcessedData
    if not (args.run and args.processed):
        raise SystemExit("the covariate_shift probe needs --processed (the pseudo-labelled "
                         "data of models.pseudolabel) and --run (ukd / ukd_base students)")
    data = ProcessedData.open(args.processed)
    context = split_context(data, "valid").iloc[:args.rows]
    try:
        teacher = data.read("valid", ["teacher_pcvr"])["teacher_pcvr"].to_numpy()[:args.rows]
    except (KeyError, ValueError) as e:
        raise SystemExit(f"{data.root}: no teacher_pcvr column (run models.pseudolabel "
                         f"first): {e}")
    t_hat = np.clip(teacher.astype(np.float64), 1e-7, 1 - 1e-7)
    truth = np.clip(context[TRUTH].to_numpy(np.float64), 1e-7, 1 - 1e-7)
    errors = {
        # the excess distillation loss a wrong soft label costs the row: KL(truth || teacher)
        "kl": truth * np.log(truth / t_hat) + (1 - truth) * np.log((1 - truth) / (1 - t_hat)),
        "abs": np.abs(t_hat - truth),
    }
    unclicked = context[CLICK].to_numpy() == 0
    _, targets, schema = features_and_targets(data)
    runs = {}
    for run in args.run:
        model, _ = load_student(run, data.root)
        with open(os.path.join(run, "config.json")) as fh:
            recorded = with_added_defaults(json.load(fh))
        options = model_config_from_flat(recorded["model_config"]).family(UKDConfig)
        res: Dict[str, Any] = {"model": recorded["model"], "head_dropout": options.head_dropout,
                               "kl_weight": options.kl_weight,
                               "uncertainty": options.uncertainty}
        for kind in ("kl", "logit"):
            dataset = split_dataset(data, "valid", model_columns(schema, targets))
            u, click = head_disagreement(model, dataset, 8192, args.draws, args.rows, kind)
            if not np.array_equal(click, context[CLICK].to_numpy()[:len(u)]):
                raise RuntimeError(f"{run}: disagreement rows and label rows are not aligned")
            keep = unclicked[:len(u)]
            uu = u[keep]
            res[kind] = {"median_u": float(np.median(uu))}
            for err_kind, err in errors.items():
                ee = err[:len(u)][keep]
                res[kind][f"spearman_u_error_{err_kind}"] = spearman(uu, ee)
                res[kind][f"decile_error_ratio_{err_kind}"] = decile_ratio(uu, ee)
            res[kind]["spearman_u_error"] = res[kind]["spearman_u_error_kl"]
            res[kind]["decile_error_ratio"] = res[kind]["decile_error_ratio_kl"]
        runs[portable_path(run, os.path.basename(os.path.normpath(run)))] = res
    best = max(runs.values(), key=lambda r: max(r["kl"]["spearman_u_error"],
                                                r["logit"]["spearman_u_error"]))
    kind = max(("kl", "logit"), key=lambda k: best[k]["spearman_u_error"])
    return {"rows": int(len(context)), "unclicked_rows": int(unclicked.sum()),
            "teacher_error_mean": {k: float(e[unclicked].mean()) for k, e in errors.items()},
            "runs": runs,
            "spearman_u_error": best[kind]["spearman_u_error"],
            "decile_error_ratio": best[kind]["decile_error_ratio"],
            "best_setting": {"head_dropout": best["head_dropout"],
                             "kl_weight": best["kl_weight"], "u": kind}}


PROBES = {"long_tail_slots": long_tail_slots, "deep_funnel": deep_funnel,
          "covariate_shift": covariate_shift}


def _summary_rows(result: Dict[str, Any]) -> List[List[Any]]:
    rows = [["world", result["world"]]]
    for name, entry in (result.get("by_model") or {}).items():
        for key, v in entry.items():
            rows.append([f"{key} ({name})", f"{v['mean']:.4f} ± {v['std']:.4f}"])
    if "auc_all_minus_none" in result:
        rows.append(["autoheri_all - autoheri_none AUC", f"{result['auc_all_minus_none']:+.4f}"])
    for key in ("floor_field_rce", "uncalibrated_field_rce_truth", "oracle_global_field_rce",
                "oracle_field_rce", "oracle_truth_field_rce", "oracle_ratio"):
        for f, v in (result.get(key) or {}).items():
            val = v if isinstance(v, float) else f"{v['mean']:.4f} ± {v['std']:.4f}"
            rows.append([f"{key} ({f})", f"{val:.4f}" if isinstance(val, float) else val])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mechanism_probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", required=True, choices=WORLDS)
    parser.add_argument("--data", required=True, help="the world's generated data (GEN_DIR)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--processed", default=None, help="preprocessing.run output of --data")
    parser.add_argument("--run", nargs="+", default=[], help="models.train run directories")
    parser.add_argument("--field", action="append", default=[])
    parser.add_argument("--min-rows", type=int, default=20,
                        help="clicked rows a value needs for its own truth-fitted oracle")
    parser.add_argument("--rows", type=int, default=200_000,
                        help="rows the deep_funnel (test) and covariate_shift (valid) probes "
                             "read")
    parser.add_argument("--draws", type=int, default=4,
                        help="dropout draws per row of the covariate_shift probe's u")
    parser.add_argument("--min-positives", type=int, default=10,
                        help="test purchases a value needs for its own label-fitted oracle")
    args = parser.parse_args(argv)
    command = list(sys.argv[1:] if argv is None else argv)
    result = {"world": args.world, **PROBES[args.world](args),
              "data": portable_path(args.data, "GEN_DIR"),
              "command": portable_command(["python", "-m", "benchmarks.mechanism_probe",
                                           *command])}
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, "probe.json"), json.dumps(result, indent=2) + "\n")
    print_table("benchmarks.mechanism_probe", _summary_rows(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
