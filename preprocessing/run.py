"""Fit the NVTabular workflow on the training days and transform every split.

Usage::

    python -m preprocessing.run --input GEN_DIR --out PROC_DIR [--workers N]
        [--threads-per-worker T] [--scheduler-address ADDR] [--config WORKFLOW.yaml]
        [--on-funnel-violation {error,drop}]

The input is a canonical dataset directory (Parquet files, one day each, plus
``dataset_spec.json``), as written by ``preprocessing.generate`` or ``preprocessing.convert``.
The last ``test_days`` days are the test split, the ``valid_days`` before them the validation
split, the rest the training split; the workflow is fitted on the training split only.

Output, written atomically::

    PROC_DIR/train|valid|test/   Parquet parts, schema.pbtxt, _file_list.txt, _metadata.json
    PROC_DIR/workflow/           the saved NVTabular workflow (cloudpickle: load only our own),
                                 with dataset_spec.json and request_facts.json (what serving
                                 needs: ``preprocessing/request_facts.py``)
    PROC_DIR/dataset_spec.json   the input's column roles
    PROC_DIR/manifest.json       rows per split, days, funnel drops, timing, versions

Backends: cuDF and dask-cuDF on a GPU, pandas and dask otherwise, as ``preprocessing.device``
decides (``EXTCVR_FORCE_CPU=1`` forces pandas); the same graph either way. ``--workers N``
(N > 1) starts a dask ``LocalCluster`` of N worker processes with ``--threads-per-worker`` threads
each (default 1) and work stealing off (see ``dask_client``);
``--scheduler-address`` uses an existing dask scheduler, on one machine or many, instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import pyarrow.parquet as pq

from preprocessing import columns as C
from common.atomic import atomic_output_dir
from preprocessing.device import detect
from preprocessing.read_once import read_once_dataset
from common.quiet import silence_known_warnings
from common.tables import package_versions, peak_rss_mb, print_table
from preprocessing.request_facts import write_request_facts
from preprocessing.splits import point_file_list_at
from preprocessing.validate import (InputValidationError, funnel_rules, list_parquet_files,
                                    validate_dataset)
from preprocessing.workflow import WorkflowConfig, build_workflow, load_workflow_config

SPLITS = ("train", "valid", "test")


def split_files_by_day(files: List[str], spec: C.DatasetSpec, config: WorkflowConfig
                       ) -> Dict[str, List[str]]:
    """Assign each file (one day each) to train / valid / test by its day."""
    day_of: Dict[str, int] = {}
    for path in files:
        days = np.unique(pq.read_table(path, columns=[spec.split]).column(0).to_numpy())
        if len(days) > 1:
            raise InputValidationError(
                f"{path}: column '{spec.split}' holds {len(days)} different days "
                f"({days[:5].tolist()}...); write one file per day")
        if len(days) == 1:
            day_of[path] = int(days[0])
    ordered = sorted(set(day_of.values()))
    need = config.valid_days + config.test_days + 1
    if len(ordered) < need:
        raise InputValidationError(
            f"{len(files)} input file(s) hold {len(ordered)} day(s) {ordered} in column "
            f"'{spec.split}'; need at least {need} (train + {config.valid_days} valid + "
            f"{config.test_days} test)")
    test_days = set(ordered[-config.test_days:])
    valid_days = set(ordered[-(config.test_days + config.valid_days):-config.test_days])
    out: Dict[str, List[str]] = {s: [] for s in SPLITS}
    for path, day in sorted(day_of.items(), key=lambda kv: (kv[1], kv[0])):
        split = "test" if day in test_days else "valid" if day in valid_days else "train"
        out[split].append(path)
    return out


def prepare_worker() -> None:
    """What every dask worker needs before it runs a task of ours: TensorFlow kept out (as
    in the command itself) and the fixes of ``preprocessing.merlin_patches`` installed. Without
    them a worker runs merlin's slow list helpers and its index-dependent hash, so a cluster
    run was slower than one process and hashed the long tail differently."""
    from preprocessing import merlin_patches
    from preprocessing.tensorflow_free import keep_tensorflow_out
    keep_tensorflow_out()
    merlin_patches.apply()


@contextlib.contextmanager
def dask_client(workers: int, scheduler_address: Optional[str], threads_per_worker: int = 1):
    """A dask client for the run: an existing scheduler, a LocalCluster, or none (in-process).

    Every worker, present or joining later, runs ``prepare_worker`` first (a worker plugin).
    The LocalCluster's scheduler does not steal work: a stolen task takes its input partition
    with it, and a partition with a list column pickles element by element (at 10M rows one
    such transfer took 39 s, and the 2-worker run was slower than one process). Each task
    then runs where its partition was read. Start an external scheduler the same way
    (``DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING=False dask scheduler``; docs/preprocessing.md)."""
    if scheduler_address or workers > 1:
        import dask
        from distributed import Client, LocalCluster
        with contextlib.ExitStack() as stack:
            if scheduler_address:
                client = stack.enter_context(Client(scheduler_address))
            else:
                with dask.config.set({"distributed.scheduler.work-stealing": False}):
                    cluster = stack.enter_context(LocalCluster(
                        n_workers=workers, threads_per_worker=threads_per_worker,
                        processes=True, dashboard_address=None, silence_logs=40))
                client = stack.enter_context(Client(cluster))
            client.register_worker_plugin(_PreparedWorker(), name="extcvr-prepare-worker")
            yield client
    else:
        yield None


class _PreparedWorker:
    """A dask worker plugin (duck-typed, as distributed allows) that calls ``prepare_worker``."""

    def setup(self, worker) -> None:
        """Called by distributed on every worker when it starts or when registered."""
        prepare_worker()


def _dataset(files: List[str], spec: C.DatasetSpec, drop_violations: bool, part_size: str,
             cpu: bool):
    """A merlin Dataset over ``files`` (read once per computation, ``preprocessing.read_once``),
    without funnel-violating rows when asked."""
    funnel = funnel_rules(spec.targets) if drop_violations else ()
    return read_once_dataset(files, part_size, cpu, funnel)


def run(input_dir: str, out: str, config: Optional[WorkflowConfig] = None, workers: int = 1,
        scheduler_address: Optional[str] = None, on_funnel_violation: str = "error",
        progress: bool = True, threads_per_worker: int = 1) -> dict:
    """Validate, fit on the training days, transform all splits; returns the manifest."""
    config = config or WorkflowConfig()
    if workers < 1 or threads_per_worker < 1:
        raise ValueError(f"workers ({workers}) and threads_per_worker ({threads_per_worker}) "
                         "must be >= 1")
    t0 = time.perf_counter()
    list_parquet_files(input_dir)  # an empty or absent input fails before anything else
    spec = C.DatasetSpec.load(input_dir)
    files, funnel = validate_dataset(input_dir, spec, on_funnel_violation)
    by_split = split_files_by_day(files, spec, config)
    rows_in = {s: sum(pq.ParquetFile(f).metadata.num_rows for f in fs)
               for s, fs in by_split.items()}
    devices = detect()
    drop = bool(funnel.total)
    timings: Dict[str, float] = {}
    with atomic_output_dir(out) as staging, dask_client(workers, scheduler_address,
                                                          threads_per_worker):
        scratch = os.path.join(staging, ".categories-fit")
        workflow = build_workflow(spec, config, categories_path=scratch)
        datasets = {s: _dataset(fs, spec, drop, config.part_size, cpu=devices.dataset_cpu)
                    for s, fs in by_split.items()}
        steps = ["fit"] + [f"transform {s}" for s in SPLITS]
        with _progress(steps, progress) as advance:
            t = time.perf_counter()
            workflow.fit(datasets["train"])
            timings["fit"] = time.perf_counter() - t
            advance()
            schema = workflow.output_schema
            cats = [c.name for c in schema if "categorical" in _tag_values(c)]
            conts = [c.name for c in schema if "continuous" in _tag_values(c)]
            for split in SPLITS:
                t = time.perf_counter()
                workflow.transform(datasets[split]).to_parquet(
                    os.path.join(staging, split), cats=cats, conts=conts,
                    labels=list(spec.targets), shuffle=None)
                point_file_list_at(os.path.join(staging, split), os.path.join(out, split))
                timings[f"transform_{split}"] = time.perf_counter() - t
                advance()
        workflow.save(os.path.join(staging, "workflow"))
        shutil.rmtree(scratch, ignore_errors=True)
        write_request_facts(os.path.join(staging, "workflow"), spec, by_split["train"],
                            os.path.join(staging, "train"))
        spec.save(staging)
        rows_out = {s: _count_rows(os.path.join(staging, s)) for s in SPLITS}
        elapsed = time.perf_counter() - t0
        total_in = sum(rows_in.values())
        manifest = {
            "input": os.path.abspath(input_dir),
            "backend": devices.dataframes,
            "dask": ("scheduler " + scheduler_address if scheduler_address else
                     f"LocalCluster({workers} workers x {threads_per_worker} threads)"
                     if workers > 1 else "in-process"),
            "files": {s: [os.path.basename(f) for f in fs] for s, fs in by_split.items()},
            "rows_in": rows_in,
            "rows_out": rows_out,
            "funnel_violations_dropped": funnel.violations,
            "timings_s": timings,
            "seconds": elapsed,
            "rows_per_second": total_in / elapsed,
            "peak_rss_mb": peak_rss_mb(),
            "config": config.to_dict(),
            "versions": package_versions(("nvtabular", "merlin-core", "pandas", "dask",
                                          "pyarrow", "numpy")),
        }
        with open(os.path.join(staging, "manifest.json"), "w") as fh:
            json.dump(manifest, fh, indent=2)
    return manifest


def _tag_values(col) -> set:
    return {str(getattr(t, "value", t)) for t in col.tags}


def _count_rows(directory: str) -> int:
    return sum(pq.ParquetFile(os.path.join(directory, f)).metadata.num_rows
               for f in os.listdir(directory) if f.endswith(".parquet"))


@contextlib.contextmanager
def _progress(steps: List[str], enabled: bool):
    from tqdm import tqdm
    bar = tqdm(total=len(steps), desc=steps[0], unit="step", disable=not enabled,
               file=sys.stderr)
    state = {"i": 0}

    def advance():
        state["i"] += 1
        bar.update(1)
        if state["i"] < len(steps):
            bar.set_description(steps[state["i"]])
    try:
        yield advance
    finally:
        bar.close()


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m preprocessing.run``."""
    parser = argparse.ArgumentParser(prog="python -m preprocessing.run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="canonical dataset directory")
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")
    parser.add_argument("--workers", type=int, default=1,
                        help="dask LocalCluster worker processes (1 = in-process)")
    parser.add_argument("--threads-per-worker", type=int, default=1,
                        help="threads of each LocalCluster worker process (with --workers)")
    parser.add_argument("--scheduler-address", default=None,
                        help="address of an existing dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--config", default=None, help="YAML file of WorkflowConfig fields")
    parser.add_argument("--on-funnel-violation", choices=("error", "drop"), default="error")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    silence_known_warnings()
    try:
        manifest = run(args.input, args.out, load_workflow_config(args.config), args.workers,
                       args.scheduler_address, args.on_funnel_violation,
                       progress=not args.no_progress,
                       threads_per_worker=args.threads_per_worker)
    except (InputValidationError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [("output", os.path.abspath(args.out)), ("backend", manifest["backend"]),
            ("dask", manifest["dask"])]
    for split in SPLITS:
        rows.append((f"{split} rows (days)",
                     f"{manifest['rows_out'][split]:,} ({len(manifest['files'][split])})"))
    dropped = sum(v["rows"] for v in manifest["funnel_violations_dropped"].values())
    rows += [("funnel violations dropped", dropped),
             ("fit s", f"{manifest['timings_s']['fit']:.1f}"),
             ("total s", f"{manifest['seconds']:.1f}"),
             ("rows/s (end to end)", f"{manifest['rows_per_second']:,.0f}"),
             ("peak RSS (MB)", f"{manifest['peak_rss_mb']:.0f}")]
    print_table("preprocessing.run", rows)
    return 0


if __name__ == "__main__":
    from preprocessing.tensorflow_free import keep_tensorflow_out
    keep_tensorflow_out()  # before anything imports merlin (nothing here trains)
    sys.exit(main())
