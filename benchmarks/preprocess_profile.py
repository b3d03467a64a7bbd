"""Where ``preprocessing.run`` spends its time, and its wall time end to end.

Usage::

    python -m benchmarks.preprocess_profile --input GEN_DIR [--repeats 5] [--out FILE.json]
        [--work DIR]

Two measurements on the same input, each in child processes run one after the other:

1. ``--repeats`` plain runs of ``python -m preprocessing.run`` (wall time of the whole command
   as the parent sees it: interpreter start, imports and the run; and the run's own seconds);
2. one run under cProfile, whose cumulative seconds are grouped into the parts of the fast CPU
   path (``PARTS``: the fit's statistics and dtype sample, the executor's copies between ops,
   the Categorify encoding, the Parquet reads and writes, ...). The profiler's overhead is
   included, so the parts are shares, not exact seconds.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import pstats
import shutil
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

from benchmarks.run import StageError, run_child, versions

from preprocessing.device import machine_info
from common.atomic import atomic_write_text
from common.tables import markdown_table, print_table

# (label, [(file suffix, function name), ...]): cumulative seconds summed over the functions
PARTS: Tuple[Tuple[str, Tuple[Tuple[str, str], ...]], ...] = (
    ("preprocessing.run.run (merlin is imported inside it)", (("preprocessing/run.py", "run"),)),
    ("Workflow.fit", (("nvtabular/workflow/workflow.py", "fit"),)),
    ("fit: statistics (fit_phase)", (("merlin/dag/executors.py", "fit_phase"),)),
    ("fit: Categorify per-partition groupbys",
     (("nvtabular/ops/categorify.py", "_top_level_groupby"),)),
    ("fit: merlin's output-dtype sample", (("merlin/io/dataset.py", "sample_dtypes"),)),
    ("transform + write of the splits (to_parquet)", (("merlin/io/dataset.py", "to_parquet"),)),
    ("executor: column selections and concatenations between ops",
     (("merlin/dag/executors.py", "_merge_upstream_columns"),)),
    ("Categorify.transform (encoding, list helpers included)",
     (("nvtabular/ops/categorify.py", "transform"),)),
    ("Parquet write (Table.from_pandas + write_table)",
     (("merlin/io/parquet.py", "_write_table"),)),
    ("Parquet read to pandas (every read)", (("preprocessing/read_once.py", "read_partition"),)),
    ("input validation", (("preprocessing/validate.py", "validate_dataset"),)),
)


def profile_parts(stats: pstats.Stats) -> Dict[str, float]:
    """Cumulative seconds of each part of ``PARTS`` in a cProfile result."""
    out = {}
    for label, functions in PARTS:
        out[label] = sum(ct for (path, _, name), (_, _, _, ct, _) in stats.stats.items()
                         if any(path.endswith(suffix) and name == fn for suffix, fn in functions))
    return out


def _profile_child(input_dir: str, out: str, stats_path: str) -> int:
    from preprocessing.tensorflow_free import keep_tensorflow_out
    keep_tensorflow_out()  # as the command's own entry point does
    from preprocessing.run import main
    profiler = cProfile.Profile()
    rc = profiler.runcall(main, ["--input", input_dir, "--out", out, "--no-progress"])
    profiler.dump_stats(stats_path)
    return rc


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.preprocess_profile``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.preprocess_profile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="canonical dataset directory")
    parser.add_argument("--repeats", type=int, default=5, help="plain runs (default 5)")
    parser.add_argument("--out", default=None, help="results JSON (default: print only)")
    parser.add_argument("--work", default=None, help="where the outputs go (a fresh "
                        "sub-directory, deleted at the end)")
    parser.add_argument("--profile-child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile_child:
        return _profile_child(args.input, *args.profile_child)
    if args.repeats < 1:
        print("error: --repeats must be >= 1", file=sys.stderr)
        return 2

    if args.work:
        os.makedirs(args.work, exist_ok=True)
    work = tempfile.mkdtemp(prefix="extcvr-profile-", dir=args.work)
    out = os.path.join(work, "out")
    runs = []
    try:
        for i in range(args.repeats):
            wall, rss = run_child(["preprocessing.run", "--input", args.input, "--out", out,
                                   "--no-progress"], os.path.join(work, f"run{i}.log"))
            with open(os.path.join(out, "manifest.json")) as fh:
                m = json.load(fh)
            runs.append({"wall_s": wall, "seconds": m["seconds"], "child_peak_rss_mb": rss,
                         "loadavg_1min": os.getloadavg()[0]})
            shutil.rmtree(out)
        stats_path = os.path.join(work, "profile.out")
        run_child(["benchmarks.preprocess_profile", "--input", args.input, "--profile-child",
                   out, stats_path], os.path.join(work, "profile.log"))
        parts = profile_parts(pstats.Stats(stats_path))
        rows = sum(m["rows_in"].values())
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from common.provenance import portable_path  # recorded without this machine's paths
    doc = {"benchmark": "preprocess_profile", "date": dt.date.today().isoformat(),
           "machine": machine_info(), "versions": versions(),
           "input": portable_path(args.input, "INPUT"), "rows": rows, "runs": runs,
           "profile_s": parts}
    if args.out:
        atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    print(markdown_table(["part", "cumulative s (cProfile)"],
                         [[k, f"{v:.1f}"] for k, v in parts.items()]))
    print_table("benchmarks.preprocess_profile", [
        ("input", f"{os.path.abspath(args.input)} ({rows:,} rows)"),
        ("wall s per run", ", ".join(f"{r['wall_s']:.2f}" for r in runs)),
        ("results", os.path.abspath(args.out) if args.out else "not written (no --out)")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
