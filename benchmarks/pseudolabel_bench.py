"""Pseudo-labelling benchmark: time and peak memory of ``python -m models.pseudolabel``.

Usage::

    python -m benchmarks.pseudolabel_bench --data PROC --teacher TEACHER_RUN [--out DIR]
    python -m benchmarks.pseudolabel_bench --rows 10000000 --work WORK_DIR [--out DIR]

With ``--rows``, generates the default data (seed 7) into ``WORK_DIR``, preprocesses it and
trains a UKD teacher for ``--teacher-steps`` steps first (the teacher's quality does not matter
here; reused when ``WORK_DIR`` already holds them). The pseudo-labelling runs in a child
process whose own peak RSS (``wait4``) is the number that the acceptance bound (3 GB at 10M
rows) is checked against. Results:
``OUT/pseudolabel_<date>.json`` (atomic write) with machine and versions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from typing import List, Optional

from benchmarks.run import run_child, versions

from preprocessing.device import machine_info
from common.atomic import atomic_write_text
from common.tables import print_table

DEFAULT_OUT = os.path.join("benchmarks", "results")
PEAK_RSS_LIMIT_MB = 3 * 1024


def _run(args: List[str]) -> None:
    subprocess.run([sys.executable, "-m", *args], check=True)


def prepare(rows: int, work: str, teacher_steps: int) -> tuple:
    """``(processed dir, teacher run)`` in ``work``, made when absent."""
    gen, proc, teacher = (os.path.join(work, d) for d in ("generated", "processed", "teacher"))
    if not os.path.exists(os.path.join(gen, "manifest.json")):
        _run(["preprocessing.generate", "--rows", str(rows), "--seed", "7", "--out", gen,
              "--no-progress"])
    if not os.path.exists(os.path.join(proc, "manifest.json")):
        _run(["preprocessing.run", "--input", gen, "--out", proc, "--no-progress"])
    if not os.path.exists(os.path.join(teacher, "saved_model")):
        config = os.path.join(work, "teacher.yaml")
        atomic_write_text(config, f"train: {{max_steps: {teacher_steps}, checkpoint_every: "
                                  f"{max(teacher_steps, 1)}}}\n")
        _run(["models.train", "--model", "ukd_teacher", "--data", proc, "--out", teacher,
              "--config", config, "--no-progress"])
    return proc, teacher


def measure(proc: str, teacher: str, out_dir: str) -> dict:
    """Pseudo-label ``proc`` with ``teacher`` into ``out_dir`` in a child process, whose own
    peak RSS (``wait4``'s ``ru_maxrss``) is the measured number."""
    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    seconds, peak_mb = run_child(["models.pseudolabel", "--teacher", teacher, "--data", proc,
                                  "--out", out_dir, "--no-progress"], out_dir + ".log")
    record = json.load(open(os.path.join(out_dir, "manifest.json")))["pseudolabel"]
    total = sum(record["rows"].values())
    return {"rows": record["rows"], "total_rows": total, "seconds": round(seconds, 2),
            "rows_per_second": round(total / seconds, 1), "peak_rss_mb": round(peak_mb, 1),
            "peak_rss_limit_mb": PEAK_RSS_LIMIT_MB, "within_limit": peak_mb < PEAK_RSS_LIMIT_MB}


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.pseudolabel_bench``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pseudolabel_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="processed dataset (with --teacher)")
    parser.add_argument("--teacher", help="UKD teacher run directory (with --data)")
    parser.add_argument("--rows", type=int, help="generate, preprocess and train a teacher")
    parser.add_argument("--work", help="working directory of --rows")
    parser.add_argument("--teacher-steps", type=int, default=50)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if bool(args.rows) == bool(args.data and args.teacher) or (args.rows and not args.work):
        parser.error("give --data and --teacher, or --rows and --work")
    if args.rows:
        os.makedirs(args.work, exist_ok=True)
        proc, teacher = prepare(args.rows, args.work, args.teacher_steps)
        labelled = os.path.join(args.work, "pseudolabelled")
    else:
        proc, teacher = args.data, args.teacher
        labelled = os.path.join(args.out, ".pseudolabel_bench_output")
    shutil.rmtree(labelled, ignore_errors=True)
    result = measure(proc, teacher, labelled)
    if not args.rows:
        shutil.rmtree(labelled, ignore_errors=True)
        os.remove(labelled + ".log")
    date = dt.date.today().isoformat()
    from common.provenance import portable_path, recorded_command  # no machine paths recorded
    roots = {args.work: "WORK"} if args.work else None
    doc = {"benchmark": "pseudolabel", "date": date,
           "run_at": dt.datetime.now().isoformat(timespec="seconds"),
           "machine": machine_info(), "versions": versions(),
           "command": recorded_command("benchmarks.pseudolabel_bench", argv or sys.argv[1:]),
           "data": portable_path(proc, "PROC", roots), "teacher": portable_path(
               teacher, "TEACHER", roots), **result}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"pseudolabel_{date}.json")
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    print_table("benchmarks.pseudolabel_bench", [
        ("results", os.path.abspath(path)),
        ("rows", f"{result['total_rows']:,}"),
        ("seconds / rows per second",
         f"{result['seconds']:.1f} / {result['rows_per_second']:,.0f}"),
        ("peak RSS MB (limit)", f"{result['peak_rss_mb']:,.0f} ({PEAK_RSS_LIMIT_MB:,})"),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
