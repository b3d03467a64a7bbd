"""Calibration benchmark: fit and transform time of every calibrator on N predictions.

Usage::

    python -m benchmarks.calibration_bench --rows 10000000 [--methods all]
        [--fields app_id] [--out benchmarks/results] [--seed 0]

Synthetic predictions (no model needed): a true pCVR with logit ~ N(-4, 1), labels drawn from
it, ``app_id`` (5 media apps, Categorify-like codes 3..7, unequal traffic) and ``category_id``
(60 values, Zipf-like) and ``slot_id`` (300 placements, Zipf 1.1, issue 33's long-tail field:
``--fields slot_id`` times a field with hundreds of values), and a base pCVR whose logit is off
by an app-dependent bias, so that field-aware methods have something to fix. For each method, in one process (one method after
the other):

- ``fit_s``: ``fit`` on all N rows (the statistics; the methods that subsample for their
  optimiser say so in their config);
- ``transform_s``: the fitted calibrator's ``transform`` of all N rows;
- ``artifact_transform_s``: save, ``load_calibrator`` (the numpy-only serving path) and its
  ``transform`` of all N rows, with the largest difference to ``transform``;
- Field-RCE by app and PCOC before and after (on the same rows: a sanity check, not the
  evaluation protocol, which is ``python -m calibration.calibrate``).

The acceptance bound is ``transform_s`` < 60 s for AdaCalib at N = 10M on 2 cores.
Results: ``OUT/calibration_<date>.json`` (atomic write) with machine and versions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np

from benchmarks.run import parse_row_count

from preprocessing.device import machine_info
from common.atomic import atomic_write_text
from common.tables import markdown_table, package_versions, peak_rss_mb, print_table

DEFAULT_OUT = os.path.join("benchmarks", "results")
PACKAGES = ("numpy", "scipy", "scikit-learn")
APP_BIAS = {3: 0.8, 4: -0.6, 5: 0.3, 6: -1.0, 7: 0.5}
APP_SHARE = (0.35, 0.25, 0.2, 0.12, 0.08)
TRANSFORM_LIMIT_S = 60.0
N_SLOTS = 300


def synthetic_predictions(n: int, seed: int):
    """``(p, y, fields)``: N base predictions miscalibrated per app, labels, field columns."""
    rng = np.random.default_rng(seed)
    apps = np.array(sorted(APP_BIAS))
    app = apps[rng.choice(len(apps), size=n, p=APP_SHARE)]
    cat_p = 1.0 / np.arange(1, 61)
    cat = rng.choice(60, size=n, p=cat_p / cat_p.sum()) + 3
    z = rng.normal(-4.0, 1.0, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    bias = np.zeros(int(apps.max()) + 1)
    for a, b in APP_BIAS.items():
        bias[a] = b
    p = 1.0 / (1.0 + np.exp(-(z + bias[app])))
    # drawn last, so that the other columns are those of the benchmark before it existed
    slot_p = np.arange(1, N_SLOTS + 1) ** -1.1
    slot = rng.choice(N_SLOTS, size=n, p=slot_p / slot_p.sum()) + 3
    return p, y, {"app_id": app, "category_id": cat, "slot_id": slot}


def bench_method(name: str, p, y, fields, field_names, work: str) -> Dict[str, object]:
    """Time fit, transform and the artifact's transform of one method."""
    from models import metrics as M
    from calibration import load_calibrator, make_calibrator

    cal = make_calibrator(name, fields=field_names)
    t0 = time.perf_counter()
    cal.fit(p, y, fields)
    t1 = time.perf_counter()
    q = cal.transform(p, fields)
    t2 = time.perf_counter()
    path = os.path.join(work, name)
    cal.save(path)
    t3 = time.perf_counter()
    loaded = load_calibrator(path)
    q2 = loaded.transform(p, fields)
    t4 = time.perf_counter()
    return {"fit_s": round(t1 - t0, 3), "transform_s": round(t2 - t1, 3),
            "artifact_load_and_transform_s": round(t4 - t3, 3),
            "artifact_max_abs_diff": float(np.abs(q - q2).max()),
            "artifact_bytes": os.path.getsize(os.path.join(path, "calibrator.json")),
            "field_rce_app": M.field_rce(y, q, fields["app_id"]), "pcoc": M.pcoc(y, q),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.calibration_bench``."""
    from calibration.calibrate import parse_fields, parse_methods
    from models import metrics as M

    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibration_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000000")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--fields", default="app_id", help="comma list: app_id,category_id")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        n = parse_row_count(args.rows)
        methods = parse_methods(args.methods)
        fields = parse_fields([args.fields])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    p, y, cols = synthetic_predictions(n, args.seed)
    gen_s = time.perf_counter() - t0
    date = dt.date.today().isoformat()
    from common.provenance import recorded_command  # the command without this machine's paths
    doc: Dict[str, object] = {
        "benchmark": "calibration", "date": date,
        "run_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(), "versions": package_versions(PACKAGES, missing="-"),
        "command": recorded_command("benchmarks.calibration_bench", argv or sys.argv[1:]),
        "rows": n, "fields": list(fields), "seed": args.seed, "generate_s": round(gen_s, 2),
        "loadavg_1min_before": os.getloadavg()[0],
        "before": {"field_rce_app": M.field_rce(y, p, cols["app_id"]), "pcoc": M.pcoc(y, p)},
        "transform_limit_s": TRANSFORM_LIMIT_S, "methods": {},
    }
    work = tempfile.mkdtemp(prefix="calibration_bench-")
    try:
        for name in methods:
            doc["methods"][name] = bench_method(name, p, y, cols, fields, work)
            print(f"{name}: {doc['methods'][name]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc["loadavg_1min_after"] = os.getloadavg()[0]
    if "adacalib" in doc["methods"]:
        ada = doc["methods"]["adacalib"]
        doc["adacalib_transform_under_limit"] = bool(ada["transform_s"] < TRANSFORM_LIMIT_S)
        doc["adacalib_fit_under_limit"] = bool(ada["fit_s"] < TRANSFORM_LIMIT_S)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"calibration_{date}.json")
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    table = markdown_table(["method", "fit s", "transform s", "artifact transform s",
                            "Field-RCE app", "PCOC"],
                           [[m, r["fit_s"], r["transform_s"],
                             r["artifact_load_and_transform_s"], f"{r['field_rce_app']:.4f}",
                             f"{r['pcoc']:.4f}"] for m, r in doc["methods"].items()])
    print(table)
    print_table("benchmarks.calibration_bench",
                [("rows", f"{n:,}"), ("fields", ", ".join(fields)), ("results", path),
                 ("adacalib transform < 60 s", doc.get("adacalib_transform_under_limit", "-")),
                 ("peak RSS (MB)", f"{peak_rss_mb():.0f}")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
