"""The NVTabular workflow of ``preprocessing/workflow.py``, re-implemented in plain pandas.

Usage::

    python -m benchmarks.pandas_baseline --input GEN_DIR --out OUT_DIR [--config WORKFLOW.yaml]

This is the yardstick of the foundation benchmark (``python -m benchmarks.run``): the same
transforms on the same input, written the way one would write them without NVTabular or dask:
pandas / numpy / pyarrow, vectorised, streaming one day file at a time so that memory stays
bounded by the largest file, not the dataset.

Input: a canonical dataset directory (``day_*.parquet`` + ``dataset_spec.json``). The split rule
is the one of ``preprocessing.run`` (the same function): the last ``test_days`` days are test,
the ``valid_days`` before them valid, the rest train. Statistics are fitted on train only.

Transforms (fit on train, applied to train / valid / test):

- categorical: a vocabulary of the training values. Columns in ``config.tail_hashed`` keep the
  values seen at least ``freq_threshold`` times and hash the others into ``tail_buckets``
  buckets; the other columns keep every training value and have one OOV bucket. Encoding layout
  as NVTabular 23.08 ``Categorify``: 0 = padding (unused), 1 = null, ``[2, 2 + n_oov)`` =
  out-of-vocabulary / hash buckets (``n_oov`` = ``tail_buckets`` for hashed columns, else 1),
  then the vocabulary from ``2 + n_oov`` on, ordered by descending training count, ties by
  ascending value (NVTabular also orders by count; its tie order may differ, so codes are
  equal up to a relabelling, which the tests check). Hash bucket of an unseen or rare value:
  ``pandas.util.hash_array(value) % tail_buckets``, a function of the value alone.
  NVTabular's CPU path calls ``pandas.util.hash_pandas_object`` with the row index included,
  so there the bucket of a rare value also depends on its row position inside the partition;
  the hashed codes of the two implementations therefore differ (the vocabulary part does not).
- multi-hot (list<int>) columns: one vocabulary over the flattened training values, one OOV
  bucket; the flat values are encoded in one vectorised lookup and re-nested with the original
  list offsets (pyarrow), so no per-row Python.
- continuous: NaN / null -> 0, ``log(1 + x)`` (float32, like ``LogOp``) for
  ``spec.log_continuous``, then ``(x - mean) / std`` with the training mean and the sample
  standard deviation (ddof = 1, like ``Normalize``); float64 out.
- targets, ground truth and the split column pass through unchanged.

Not done here (``preprocessing.run`` does it): input validation (schema, label and funnel
checks), dropping funnel-violating rows, and saving a servable workflow. On valid input the
output rows are the same, in the same order.

Output::

    OUT_DIR/train|valid|test/part_NNN.parquet   one part per input day file, input row order
    OUT_DIR/manifest.json                      rows, timings, rows/s, peak RSS, vocab sizes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from preprocessing import columns as C
from common.atomic import atomic_output_dir
from common.tables import peak_rss_mb
from preprocessing.run import SPLITS, split_files_by_day
from preprocessing.validate import list_parquet_files
from preprocessing.workflow import WorkflowConfig, load_workflow_config

PAD, NULL, OOV = 0, 1, 2


@dataclass
class Vocabulary:
    """A fitted categorical encoding of one column (see the module docstring for the layout).

    Args:
        values: the kept training values, in code order.
        counts: their training counts.
        n_oov: number of OOV / hash buckets (1 = a single OOV code).
        hashed: whether OOV values are hashed into ``n_oov`` buckets.
    """

    values: np.ndarray
    counts: np.ndarray
    n_oov: int
    hashed: bool

    def __post_init__(self):
        self.index = pd.Index(self.values)  # hash-table lookup, built once and reused

    @property
    def offset(self) -> int:
        """Code of the first vocabulary value."""
        return OOV + self.n_oov

    @property
    def cardinality(self) -> int:
        """Embedding-table size: padding, null, OOV buckets and the vocabulary."""
        return self.offset + len(self.values)

    def encode(self, values: np.ndarray, null: Optional[np.ndarray] = None) -> np.ndarray:
        """int64 codes of ``values`` (``null``: a boolean mask of null entries, coded 1)."""
        pos = self.index.get_indexer(values)
        codes = pos.astype(np.int64) + self.offset
        missing = pos < 0
        if missing.any():
            if self.hashed:
                codes[missing] = OOV + (pd.util.hash_array(values[missing])
                                        % np.uint64(self.n_oov)).astype(np.int64)
            else:
                codes[missing] = OOV
        if null is not None:
            codes[null] = NULL
        return codes


def _vocabulary(counts: List[pd.Series], min_count: int, n_oov: int, hashed: bool
                ) -> Vocabulary:
    """Merge per-file value counts and order the kept values by (-count, value)."""
    total = (pd.concat(counts).groupby(level=0, sort=False).sum() if counts
             else pd.Series([], dtype=np.int64))
    values = total.index.to_numpy()
    n = total.to_numpy().astype(np.int64)
    keep = n >= min_count
    values, n = values[keep], n[keep]
    order = np.lexsort((values, -n))
    return Vocabulary(values[order], n[order], n_oov, hashed)


def _int_values(column: pa.ChunkedArray):
    """(values, null mask or None) of an integer column; nulls are filled with 0."""
    if column.null_count:
        null = column.is_null().to_numpy(zero_copy_only=False)
        return column.fill_null(0).to_numpy(), null
    return column.to_numpy(), None


def _list_parts(column: pa.ChunkedArray):
    """(list array, flat values, flat null mask or None) of a list column."""
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    flat = arr.flatten()  # honours slicing offsets
    if flat.null_count:
        return arr, flat.fill_null(0).to_numpy(), flat.is_null().to_numpy(zero_copy_only=False)
    return arr, flat.to_numpy(), None


def _float_values(column: pa.ChunkedArray, log: bool) -> np.ndarray:
    """FillMissing(0) then, for log columns, float32 log(1 + x)."""
    x = column.to_numpy().astype(np.float32 if log else np.float64, copy=True)
    x[np.isnan(x)] = 0
    if log:
        x = np.log1p(x)
    return x


class Moments:
    """Running count / sum / sum of squares (float64), finalised like NVTabular's Normalize."""

    def __init__(self):
        self.n = 0
        self.s = 0.0
        self.s2 = 0.0

    def add(self, x: np.ndarray) -> None:
        """Accumulate one file's values."""
        x = x.astype(np.float64, copy=False)
        ok = ~np.isnan(x)
        if not ok.all():
            x = x[ok]
        self.n += x.size
        self.s += float(x.sum())
        self.s2 += float(np.dot(x, x))

    def finalize(self):
        """(mean, std) with ddof = 1."""
        if self.n == 0:
            return float("nan"), float("nan")
        mean = self.s / self.n
        var = (self.s2 - self.s * self.s / self.n) / max(self.n - 1, 1)
        return mean, float(np.sqrt(var)) if self.n > 1 else float("nan")


@dataclass
class FittedBaseline:
    """Everything ``fit`` learns from the training split."""

    vocabularies: Dict[str, Vocabulary]
    means: Dict[str, float]
    stds: Dict[str, float]


def fit(files: List[str], spec: C.DatasetSpec, config: WorkflowConfig, advance=None
        ) -> FittedBaseline:
    """Value counts and moments over the training files, one file at a time."""
    counts: Dict[str, List[pd.Series]] = {c: [] for c in (*spec.categorical, *spec.multihot)}
    moments = {c: Moments() for c in spec.continuous}
    for path in files:
        table = pq.read_table(path, columns=spec.features)
        for col in spec.categorical:
            values, null = _int_values(table.column(col))
            if null is not None:
                values = values[~null]
            counts[col].append(pd.value_counts(values, sort=False))
        for col in spec.multihot:
            _, flat, null = _list_parts(table.column(col))
            if null is not None:
                flat = flat[~null]
            counts[col].append(pd.value_counts(flat, sort=False))
        for col in spec.continuous:
            moments[col].add(_float_values(table.column(col), col in spec.log_continuous))
        del table
        if advance:
            advance()
    vocabs = {}
    for col in spec.categorical:
        hashed = col in config.tail_hashed
        vocabs[col] = _vocabulary(counts[col], config.freq_threshold if hashed else 1,
                                  config.tail_buckets if hashed else 1, hashed)
    for col in spec.multihot:
        vocabs[col] = _vocabulary(counts[col], 1, 1, False)
    stats = {c: m.finalize() for c, m in moments.items()}
    return FittedBaseline(vocabs, {c: s[0] for c, s in stats.items()},
                          {c: s[1] for c, s in stats.items()})


def transform_table(table: pa.Table, spec: C.DatasetSpec, fitted: FittedBaseline) -> pa.Table:
    """Encode, normalise and pass through one table; row order is kept."""
    out: Dict[str, pa.Array] = {}
    for col in spec.categorical:
        values, null = _int_values(table.column(col))
        out[col] = pa.array(fitted.vocabularies[col].encode(values, null))
    for col in spec.multihot:
        arr, flat, null = _list_parts(table.column(col))
        codes = pa.array(fitted.vocabularies[col].encode(flat, null))
        offsets = pc.subtract(arr.offsets, arr.offsets[0])
        mask = arr.is_null() if arr.null_count else None
        out[col] = pa.ListArray.from_arrays(offsets, codes, mask=mask)
    for col in spec.continuous:
        x = _float_values(table.column(col), col in spec.log_continuous)
        mean, std = fitted.means[col], fitted.stds[col]
        y = x - mean
        if std > 0:
            y /= std
        out[col] = pa.array(y.astype(np.float64, copy=False))
    for col in (*spec.targets, *spec.ground_truth, spec.split):
        out[col] = table.column(col)
    return pa.table(out)


def run_pandas_baseline(input_dir: str, out_dir: str, config: Optional[WorkflowConfig] = None,
                        progress: bool = False) -> dict:
    """Fit on the training days and transform every split into ``out_dir``; returns the
    manifest (rows, timings, rows/s, peak RSS of this process, vocabulary sizes)."""
    config = config or WorkflowConfig()
    t0 = time.perf_counter()
    spec = C.DatasetSpec.load(input_dir)
    files = list_parquet_files(input_dir)
    by_split = split_files_by_day(files, spec, config)
    rows_in = {s: sum(pq.ParquetFile(f).metadata.num_rows for f in fs)
               for s, fs in by_split.items()}
    timings: Dict[str, float] = {}
    rows_out = {s: 0 for s in SPLITS}
    from tqdm import tqdm
    bar = tqdm(total=len(by_split["train"]) + len(files), unit="file", desc="fit",
               disable=not progress, file=sys.stderr)
    try:
        with atomic_output_dir(out_dir) as staging:
            t = time.perf_counter()
            fitted = fit(by_split["train"], spec, config, advance=lambda: bar.update(1))
            timings["fit"] = time.perf_counter() - t
            part = 0
            for split in SPLITS:
                bar.set_description(f"transform {split}")
                t = time.perf_counter()
                os.makedirs(os.path.join(staging, split))
                for path in by_split[split]:
                    table = transform_table(pq.read_table(path), spec, fitted)
                    pq.write_table(table, os.path.join(staging, split, f"part_{part:03d}.parquet"))
                    rows_out[split] += table.num_rows
                    part += 1
                    del table
                    bar.update(1)
                timings[f"transform_{split}"] = time.perf_counter() - t
            elapsed = time.perf_counter() - t0
            manifest = {
                "input": os.path.abspath(input_dir),
                "implementation": "pandas/numpy/pyarrow, one day file at a time, one process",
                "files": {s: [os.path.basename(f) for f in fs] for s, fs in by_split.items()},
                "rows_in": rows_in,
                "rows_out": rows_out,
                "timings_s": timings,
                "seconds": elapsed,
                "rows_per_second": sum(rows_in.values()) / elapsed,
                "peak_rss_mb": peak_rss_mb(),
                "cardinality": {c: v.cardinality for c, v in fitted.vocabularies.items()},
                "means": fitted.means,
                "stds": fitted.stds,
                "config": config.to_dict(),
                "imports_nvtabular": "nvtabular" in sys.modules,
            }
            with open(os.path.join(staging, "manifest.json"), "w") as fh:
                json.dump(manifest, fh, indent=2)
    finally:
        bar.close()
    return manifest


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.pandas_baseline``; prints the manifest as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pandas_baseline",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="canonical dataset directory")
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")
    parser.add_argument("--config", default=None, help="YAML file of WorkflowConfig fields")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        manifest = run_pandas_baseline(args.input, args.out, load_workflow_config(args.config),
                                       progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
