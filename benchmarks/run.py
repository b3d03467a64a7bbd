"""Foundation benchmark: generator throughput, NVTabular preprocessing and a plain-pandas yardstick.

Usage::

    python -m benchmarks.run --rows 1000000,10000000 [--cluster-workers 2,4]
        [--threads-per-worker 1] [--out benchmarks/results] [--seed 7] [--workdir DIR] [--keep]
        [--no-progress]

For every row count N, these child processes run one after the other (nothing else of the
benchmark runs meanwhile):

1. ``python -m preprocessing.generate --rows N --seed S --out W/gen_N --no-progress``;
2. ``python -m preprocessing.run --input W/gen_N --out W/proc_N --no-progress`` (NVTabular,
   one process);
3. for each K of ``--cluster-workers``: ``python -m preprocessing.run ... --workers K
   --threads-per-worker T`` (a dask ``LocalCluster`` of K worker processes), whose output is
   compared column by column with the one-process output (``outputs_equal``);
4. ``python -m benchmarks.pandas_baseline --input W/gen_N --out W/pandas_N --no-progress``.

Each command's own ``manifest.json`` gives its rows/s and peak RSS (timed inside the process,
after imports); the benchmark adds the child's wall time (interpreter start and imports
included, e.g. TensorFlow through merlin) and its peak RSS as the kernel reports it to the
parent (``wait4``; for a cluster run, the largest of the command and its workers). The ratio is
NVTabular rows/s divided by pandas rows/s; each cluster run also has its ratio to the
one-process run.

Results go to ``OUT/foundation_<date>.json`` (written atomically). A file of the same date is
updated: entries for other row counts are kept, the row counts of this run replaced, provided
the machine is the same. The work directory (``--workdir``, default the system temp dir) gets a
fresh sub-directory that is deleted at the end unless ``--keep``; each N's data is deleted as
soon as its three stages are done, so disk use is one N at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

from common.atomic import atomic_write_text
from preprocessing.device import machine_info
from common.tables import markdown_table, package_versions, print_table

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join("benchmarks", "results")
PACKAGES = ("nvtabular", "merlin-core", "pandas", "numpy", "pyarrow", "dask")


class StageError(RuntimeError):
    """A child process of the benchmark failed."""


def parse_row_count(text: str) -> int:
    """The one row count of ``--rows`` (``ValueError`` for none or several)."""
    rows = parse_rows(text)
    if len(rows) != 1:
        raise ValueError("--rows: give one row count")
    return rows[0]


def parse_rows(text: str) -> List[int]:
    """``"1000000,10_000_000"`` -> ``[1000000, 10000000]``; every entry must be >= 1."""
    out = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        if not part:
            continue
        try:
            n = int(float(part)) if ("e" in part.lower()) else int(part)
        except ValueError:
            raise ValueError(f"--rows: '{part}' is not a row count") from None
        if n < 1:
            raise ValueError(f"--rows: row counts must be >= 1, got {n}")
        out.append(n)
    if not out:
        raise ValueError("--rows: give at least one row count")
    return out


def versions() -> Dict[str, str]:
    """Python and package versions, read from the installed metadata (nothing is imported)."""
    return package_versions(PACKAGES, missing="not installed")


def run_child(args: List[str], log_path: str) -> Tuple[float, float]:
    """Run ``python -m ...args`` from the repo root; returns (wall seconds, peak RSS MB).

    stdout and stderr go to ``log_path``; a non-zero exit raises ``StageError`` with the log's
    tail. The peak RSS is the child's ``ru_maxrss`` from ``wait4`` (it includes grandchildren
    the child waited for, e.g. dask worker processes).
    """
    cmd = [sys.executable, "-m", *args]
    with open(log_path, "wb") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        with open(log_path, "rb") as fh:
            tail = fh.read()[-4000:].decode("utf-8", "replace")
        raise StageError(f"`{' '.join(cmd)}` exited with {proc.returncode}; log tail:\n{tail}")
    return wall, usage.ru_maxrss / 1024.0


def _manifest(directory: str) -> dict:
    with open(os.path.join(directory, "manifest.json")) as fh:
        return json.load(fh)


def _pick(manifest: dict, keys) -> dict:
    return {k: manifest[k] for k in keys if k in manifest}


def parse_workers(text: str) -> List[int]:
    """``"2,4"`` -> ``[2, 4]``; ``""`` or ``"none"`` -> no cluster runs; each entry >= 2."""
    if text.strip().lower() in ("", "none"):
        return []
    out = []
    for part in text.split(","):
        try:
            k = int(part)
        except ValueError:
            raise ValueError(f"--cluster-workers: '{part}' is not a worker count") from None
        if k < 2:
            raise ValueError(f"--cluster-workers: a cluster has >= 2 workers, got {k}")
        out.append(k)
    return out


NVTABULAR_KEYS = ("backend", "dask", "rows_in", "rows_out", "timings_s", "seconds",
                  "rows_per_second", "peak_rss_mb")
PANDAS_KEYS = ("implementation", "rows_in", "rows_out", "timings_s", "seconds",
               "rows_per_second", "peak_rss_mb", "imports_nvtabular")


def _stage_entry(directory: str, keys, wall: float, rss: float) -> dict:
    """A preprocessing command's manifest fields plus what the parent measured."""
    m = _manifest(directory)
    return {**_pick(m, keys), "other_s": m["seconds"] - sum(m["timings_s"].values()),
            "wall_s": wall, "rows_per_second_wall": sum(m["rows_in"].values()) / wall,
            "child_peak_rss_mb": rss}


def bench_one(n: int, seed: int, work: str, advance, cluster_workers: Sequence[int] = (),
              threads_per_worker: int = 1) -> dict:
    """Every stage for ``n`` rows; returns the result entry of ``n``."""
    from preprocessing.splits import differing_columns
    gen, proc, base = (os.path.join(work, f"{k}_{n}") for k in ("gen", "proc", "pandas"))
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)

    load_before = os.getloadavg()
    advance(f"N={n:,}: generate")
    wall, rss = run_child(["preprocessing.generate", "--rows", str(n), "--seed", str(seed),
                           "--out", gen, "--no-progress"], os.path.join(logs, f"gen_{n}.log"))
    m = _manifest(gen)
    generator = {**_pick(m, ("rows", "seconds", "rows_per_second", "peak_rss_mb")),
                 "wall_s": wall, "child_peak_rss_mb": rss,
                 "bytes_on_disk": sum(os.path.getsize(os.path.join(gen, f))
                                      for f in os.listdir(gen) if f.endswith(".parquet"))}

    advance(f"N={n:,}: NVTabular")
    wall, rss = run_child(["preprocessing.run", "--input", gen, "--out", proc, "--no-progress"],
                          os.path.join(logs, f"proc_{n}.log"))
    nvt = _stage_entry(proc, NVTABULAR_KEYS, wall, rss)

    cluster = {}
    for k in cluster_workers:
        advance(f"N={n:,}: NVTabular, {k} workers")
        out = f"{proc}_workers{k}"
        wall, rss = run_child(["preprocessing.run", "--input", gen, "--out", out,
                               "--no-progress", "--workers", str(k), "--threads-per-worker",
                               str(threads_per_worker)],
                              os.path.join(logs, f"proc_{n}_workers{k}.log"))
        entry = _stage_entry(out, NVTABULAR_KEYS, wall, rss)
        entry["differing_columns"] = differing_columns(out, proc)
        entry["outputs_equal"] = not entry["differing_columns"]
        entry["vs_one_process"] = entry["rows_per_second"] / nvt["rows_per_second"]
        cluster[str(k)] = entry
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(proc, ignore_errors=True)

    advance(f"N={n:,}: pandas baseline")
    wall, rss = run_child(["benchmarks.pandas_baseline", "--input", gen, "--out", base,
                           "--no-progress"], os.path.join(logs, f"pandas_{n}.log"))
    pandas = _stage_entry(base, PANDAS_KEYS, wall, rss)
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(gen, ignore_errors=True)

    return {
        "rows": n,
        "seed": seed,
        "run_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        # 1-minute load average before and after: anything well above 0 before, or above ~1
        # after, means other work shared the CPUs with the benchmark
        "loadavg_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "generator": generator,
        "nvtabular": nvt,
        "nvtabular_cluster": cluster,
        "pandas": pandas,
        "rows_out_equal": nvt["rows_out"] == pandas["rows_out"],
        "ratio": {
            # > 1 means NVTabular is faster
            "rows_per_second": nvt["rows_per_second"] / pandas["rows_per_second"],
            "rows_per_second_wall": nvt["rows_per_second_wall"] / pandas["rows_per_second_wall"],
            "fit_transform": (sum(pandas["timings_s"].values())
                              / sum(nvt["timings_s"].values())),
            "cluster_rows_per_second": {k: c["rows_per_second"] / pandas["rows_per_second"]
                                        for k, c in cluster.items()},
        },
    }


def results_path(out: str, date: str) -> str:
    """``OUT/foundation_<date>.json``."""
    return os.path.join(out, f"foundation_{date}.json")


def merge_results(path: str, doc: dict) -> dict:
    """Keep the entries of other row counts from an existing same-machine file at ``path``."""
    with contextlib.suppress(OSError, ValueError):
        with open(path) as fh:
            old = json.load(fh)
        if old.get("machine") == doc["machine"] and isinstance(old.get("results"), dict):
            merged = {**old["results"], **doc["results"]}
            doc["results"] = {k: merged[k] for k in sorted(merged, key=int)}
    return doc


def summary_rows(results: Dict[str, dict]) -> List[List[str]]:
    """One markdown row per row count."""
    rows = []
    for key in sorted(results, key=int):
        r = results[key]
        g, v, p = r["generator"], r["nvtabular"], r["pandas"]
        rows.append([f"{r['rows']:,}",
                     f"{g['rows_per_second']:,.0f}", f"{g['peak_rss_mb']:,.0f}",
                     f"{v['rows_per_second']:,.0f}", f"{v['wall_s']:.1f}",
                     f"{v['peak_rss_mb']:,.0f}",
                     f"{p['rows_per_second']:,.0f}", f"{p['wall_s']:.1f}",
                     f"{p['peak_rss_mb']:,.0f}",
                     f"{r['ratio']['rows_per_second']:.2f}"])
    return rows


SUMMARY_HEADER = ["rows", "generator rows/s", "generator peak RSS MB", "NVTabular rows/s",
                  "NVTabular wall s", "NVTabular peak RSS MB", "pandas rows/s", "pandas wall s",
                  "pandas peak RSS MB", "NVT/pandas rows/s"]


def cluster_rows(results: Dict[str, dict]) -> List[List[str]]:
    """One markdown row per (row count, worker count), the one-process run first."""
    rows = []
    for key in sorted(results, key=int):
        r = results[key]
        runs = [("1 (in-process)", r["nvtabular"], None)] + [
            (k, c, c) for k, c in sorted(r.get("nvtabular_cluster", {}).items(),
                                         key=lambda kv: int(kv[0]))]
        for label, entry, cluster in runs:
            rows.append([f"{r['rows']:,}", label, f"{entry['rows_per_second']:,.0f}",
                         f"{entry['wall_s']:.1f}", f"{entry['child_peak_rss_mb']:,.0f}",
                         f"{entry['rows_per_second'] / r['nvtabular']['rows_per_second']:.2f}",
                         f"{entry['rows_per_second'] / r['pandas']['rows_per_second']:.2f}",
                         "" if cluster is None else ("yes" if cluster["outputs_equal"]
                                                     else "NO")])
    return rows


CLUSTER_HEADER = ["rows", "workers", "rows/s", "wall s", "peak RSS MB (largest process)",
                  "vs one process", "vs pandas", "output equal"]


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.run``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000000,10000000",
                        help="comma-separated row counts (default 1000000,10000000)")
    parser.add_argument("--cluster-workers", default="2,4",
                        help="LocalCluster worker counts to run too (default 2,4; none: skip)")
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--out", default=DEFAULT_OUT, help="results directory")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", default=None,
                        help="where the generated and processed data go (a fresh "
                             "sub-directory; default: the system temp directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        row_counts = parse_rows(args.rows)
        cluster_workers = parse_workers(args.cluster_workers)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from tqdm import tqdm
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="extcvr-bench-", dir=args.workdir)
    date = dt.date.today().isoformat()
    from common.provenance import recorded_command  # the command without this machine's paths
    doc = {"benchmark": "foundation", "date": date, "machine": machine_info(),
           "versions": versions(), "command": recorded_command(
               "benchmarks.run", argv if argv is not None else sys.argv[1:]), "results": {}}
    bar = tqdm(total=(3 + len(cluster_workers)) * len(row_counts), unit="stage",
               disable=args.no_progress,
               file=sys.stderr)
    state = {"started": False}

    def advance(desc: str) -> None:
        if state["started"]:
            bar.update(1)
        state["started"] = True
        bar.set_description(desc)

    try:
        for n in row_counts:
            doc["results"][str(n)] = bench_one(n, args.seed, work, advance, cluster_workers,
                                               args.threads_per_worker)
            r = doc["results"][str(n)]
            tqdm.write(f"N={n:,}: NVTabular {r['nvtabular']['rows_per_second']:,.0f} rows/s, "
                       f"pandas {r['pandas']['rows_per_second']:,.0f} rows/s, ratio "
                       f"{r['ratio']['rows_per_second']:.2f}", file=sys.stderr)
        bar.update(1)
    except StageError as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    os.makedirs(args.out, exist_ok=True)
    path = results_path(args.out, date)
    doc = merge_results(path, doc)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    print(markdown_table(SUMMARY_HEADER, summary_rows(doc["results"])))
    if any(r.get("nvtabular_cluster") for r in doc["results"].values()):
        print(markdown_table(CLUSTER_HEADER, cluster_rows(doc["results"])))
    m = doc["machine"]
    print_table("benchmarks.run", [
        ("results", os.path.abspath(path)),
        ("machine", f"{m['cpu_model']}, {m['nproc']} CPUs, {m['mem_total_gb']} GB"),
        ("versions", ", ".join(f"{k} {v}" for k, v in doc["versions"].items())),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
