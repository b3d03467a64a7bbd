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
  on the test day itself, each a logistic fit of ``a * logit(p) + b`` (level and sharpness):
  ``oracle_global_field_rce``, one function for all rows fitted on the labels (what any global
  calibrator can reach at best); ``oracle_field_rce``, one per field value fitted on the
  **labels** (values with fewer than ``--min-positives`` purchases keep the global one: what a
  per-value calibrator with one day's labels can reach at best); ``oracle_truth_field_rce``, one
  per value fitted on the **true probabilities** (values with at least ``--min-rows`` clicked
  rows: the whole per-value headroom, free of label noise). ``oracle_ratio`` is
  ``oracle_field_rce / oracle_global_field_rce``: near 1 means a day's labels leave no per-value
  distortion that a per-value calibrator could find.

Only ``long_tail_slots`` is implemented; the probes of ``deep_funnel`` (AutoHERI) and
``covariate_shift`` (UKD) are described in docs/worlds.md and not written yet, and the command
says so.
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


def platt_per_group(p: np.ndarray, t: np.ndarray, groups: np.ndarray, iters: int = 50,
                    ridge: float = 1e-6) -> np.ndarray:
    """Per group, the ``a * logit(p) + b`` closest to the targets ``t`` (labels or true
    probabilities) in cross-entropy (Newton, all groups at once); returns the fitted
    probabilities. The probe fits it on the rows it judges (an oracle, not a calibrator)."""
    x = _logit(p)
    codes = np.unique(groups, return_inverse=True)[1].reshape(-1)
    k = int(codes.max()) + 1 if len(codes) else 0
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
        if np.max(np.abs(da)) < 1e-9 and np.max(np.abs(db)) < 1e-9:
            break
    return _sigmoid(a[codes] * x + b[codes])


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
            for f in fields:
                g = np.asarray(fr[f])
                counts = np.bincount(np.unique(g, return_inverse=True)[1].reshape(-1))
                big = counts[np.unique(g, return_inverse=True)[1].reshape(-1)] >= args.min_rows
                zeros = np.zeros(len(p), dtype=np.int64)
                y = fr[PURCHASE].astype(np.float64)
                q_glob = platt_per_group(p, y, zeros)
                codes = np.unique(g, return_inverse=True)[1].reshape(-1)
                enough = np.bincount(codes, weights=y)[codes] >= args.min_positives
                q_val = np.where(enough, platt_per_group(p, y, np.where(enough, g, -1)), q_glob)
                q_truth = np.where(big, platt_per_group(p, t, np.where(big, g, -1)),
                                   platt_per_group(p, t, zeros))
                res[f] = {
                    "uncalibrated_field_rce_truth": field_rce_truth(t, p, g),
                    "oracle_global_field_rce": field_rce_truth(t, q_glob, g),
                    "oracle_field_rce": field_rce_truth(t, q_val, g),
                    "oracle_truth_field_rce": field_rce_truth(t, q_truth, g),
                    "uncalibrated_field_rce": field_rce(fr[PURCHASE], p, g),
                }
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


def _not_written(world: str):
    def probe(args):
        raise SystemExit(f"the {world} probe is not written yet (issue 33; docs/worlds.md "
                         f"describes it)")
    return probe


PROBES = {"long_tail_slots": long_tail_slots, "deep_funnel": _not_written("deep_funnel"),
          "covariate_shift": _not_written("covariate_shift")}


def _summary_rows(result: Dict[str, Any]) -> List[List[Any]]:
    rows = [["world", result["world"]]]
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
    parser.add_argument("--min-positives", type=int, default=10,
                        help="test purchases a value needs for its own label-fitted oracle")
    args = parser.parse_args(argv)
    result = {"world": args.world, **PROBES[args.world](args),
              "data": portable_path(args.data, "GEN_DIR"),
              "command": portable_command(["python", "-m", "benchmarks.mechanism_probe", *sys.argv[1:]])}
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, "probe.json"), json.dumps(result, indent=2) + "\n")
    print_table("benchmarks.mechanism_probe", _summary_rows(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
