"""What each lever of the fast CPU path gives: ``preprocessing.run`` with the levers added one
at a time, on the same input, one after the other.

Usage::

    python -m benchmarks.preprocess_levers --input GEN_DIR [--from-step 0] [--out FILE.json]
        [--work DIR]

The ladder (each step keeps the levers above it):

0. stock NVTabular 23.08 on pandas: merlin's Parquet reader, Categorify's merge-based encoding,
   merlin-core's list helpers, TensorFlow imported by merlin (the value-only hash is on
   everywhere, see ``benchmarks.stock_equality``);
1. + the vectorised list helpers (``merlin_patches``, the foundation's fix);
2. + TensorFlow kept out of the process (``preprocessing.tensorflow_free``);
3. + the read-once reader (``preprocessing.read_once``);
4. + the vectorised Categorify encoding (``merlin_patches.encode_categories``): as shipped.

Each step is a child process (``python -m benchmarks.preprocess_levers --step K ...``) whose
wall time, the command's own timings and its peak RSS are recorded, with the ratio to the first
step run. ``--from-step 1`` skips the stock step (its list helpers take minutes at 10M rows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from typing import List, Optional

from benchmarks.run import StageError, run_child, versions

from preprocessing.device import machine_info
from common.atomic import atomic_write_text
from common.tables import markdown_table, print_table

STEPS = (
    "stock NVTabular 23.08 (TensorFlow imported)",
    "+ vectorised list helpers",
    "+ TensorFlow kept out",
    "+ read-once reader",
    "+ vectorised Categorify encoding (shipped)",
)


def run_step(step: int, input_dir: str, out: str) -> int:
    """Run ``preprocessing.run`` in this process with the levers of ``step``."""
    if step >= 2:
        from preprocessing.tensorflow_free import keep_tensorflow_out
        keep_tensorflow_out()
    from benchmarks.stock_equality import nvtabular_levers
    from preprocessing.run import main
    with nvtabular_levers(read_once=step >= 3, vectorised_encode=step >= 4,
                          vectorised_lists=step >= 1):
        return main(["--input", input_dir, "--out", out, "--no-progress"])


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.preprocess_levers``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.preprocess_levers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="canonical dataset directory")
    parser.add_argument("--from-step", type=int, default=0, choices=range(len(STEPS)))
    parser.add_argument("--out", default=None, help="results JSON (default: print only)")
    parser.add_argument("--work", default=None, help="where the outputs go (a fresh "
                        "sub-directory, deleted at the end)")
    parser.add_argument("--step", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--step-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step is not None:
        return run_step(args.step, args.input, args.step_out)

    if args.work:
        os.makedirs(args.work, exist_ok=True)
    work = tempfile.mkdtemp(prefix="extcvr-levers-", dir=args.work)
    results = []
    try:
        for step in range(args.from_step, len(STEPS)):
            out = os.path.join(work, f"step{step}")
            wall, rss = run_child(["benchmarks.preprocess_levers", "--input", args.input,
                                   "--step", str(step), "--step-out", out],
                                  os.path.join(work, f"step{step}.log"))
            with open(os.path.join(out, "manifest.json")) as fh:
                m = json.load(fh)
            results.append({"step": step, "levers": STEPS[step], "wall_s": wall,
                            "child_peak_rss_mb": rss, "seconds": m["seconds"],
                            "timings_s": m["timings_s"], "rows": sum(m["rows_in"].values()),
                            "rows_per_second_wall": sum(m["rows_in"].values()) / wall})
            shutil.rmtree(out, ignore_errors=True)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results[0]["wall_s"]
    for r in results:
        r["speedup_vs_first"] = base / r["wall_s"]
    from common.provenance import portable_path  # recorded without this machine's paths
    doc = {"benchmark": "preprocess_levers", "date": dt.date.today().isoformat(),
           "machine": machine_info(), "versions": versions(),
           "input": portable_path(args.input, "INPUT"), "results": results}
    if args.out:
        atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    print(markdown_table(
        ["step", "levers", "wall s", "fit s", "transform s", "rows/s (wall)", "peak RSS MB",
         "speed-up vs first"],
        [[str(r["step"]), r["levers"], f"{r['wall_s']:.1f}", f"{r['timings_s']['fit']:.1f}",
          f"{sum(v for k, v in r['timings_s'].items() if k != 'fit'):.1f}",
          f"{r['rows_per_second_wall']:,.0f}", f"{r['child_peak_rss_mb']:,.0f}",
          f"{r['speedup_vs_first']:.2f}x"] for r in results]))
    print_table("benchmarks.preprocess_levers", [
        ("input", os.path.abspath(args.input)), ("rows", f"{results[0]['rows']:,}"),
        ("results", os.path.abspath(args.out) if args.out else "not written (no --out)")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
