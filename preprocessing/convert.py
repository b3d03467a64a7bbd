"""Convert public ad logs (Ali-CCP, AliExpress) into extcvr's canonical Parquet dataset.

Usage::

    python -m preprocessing.convert --format {aliccp-csv,aliccp-raw,aliexpress} \\
        --input FILE [FILE ...] --out DIR [--on-funnel-violation {error,drop}] \\
        [--chunk-rows N] [--common-features FILE [FILE ...]]

Each input file, given in time order, becomes one day: ``day_000.parquet``, ``day_001.parquet``,
... with an ``int64`` column ``day`` equal to the file's index. Files are streamed in chunks of
``--chunk-rows`` rows, each written as one Parquet row group, so memory stays bounded whatever
the input size. The output directory also gets ``dataset_spec.json`` and ``manifest.json``
(format, inputs, rows per file, funnel violations dropped per file and rule, total rows). It is
written atomically: after any error there is no output directory (or the previous one, intact).

Canonical schema: targets ``click`` and ``purchase`` (``int32``), categorical ids (``int64``),
continuous features (``float32``), ``day`` (``int64``). The column mapping of each format is
documented in ``preprocessing/readers/aliccp.py`` and ``preprocessing/readers/aliexpress.py``.
``aliccp-raw`` takes the skeleton files as ``--input`` and one ``--common-features`` file per
skeleton, in the same order.

Bad input (empty file, missing column, unparsable value, NaN or non-binary label) exits with
status 2 and a message naming the file, the column and the rows. A funnel violation (purchase = 1
with click = 0) is an error too, unless ``--on-funnel-violation drop``: then those rows are
dropped, counted in ``manifest.json`` and shown in the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing import columns as C
from preprocessing.columns import day_filename
from common.atomic import atomic_output_dir
from preprocessing.readers import CanonicalLayout, SourceReader
from preprocessing.readers.aliccp import AliCcpCsvReader, AliCcpRawReader
from preprocessing.readers.aliexpress import AliExpressReader
from common.tables import peak_rss_mb, print_table
from preprocessing.validate import (FUNNEL_POLICIES, FunnelReport, InputValidationError,
                                    funnel_error, funnel_violations)

FORMATS = ("aliccp-csv", "aliccp-raw", "aliexpress")
DEFAULT_CHUNK_ROWS = 500_000
MANIFEST_FILENAME = "manifest.json"


@dataclass
class ConvertedFile:
    """What became of one input file.

    Attributes:
        input: the input path.
        output: the day file name inside the output directory.
        day: the value of the ``day`` column.
        rows_read: data rows in the input.
        rows: rows written (``rows_read`` less the dropped funnel violations).
        row_groups: Parquet row groups written.
        funnel_violations_dropped: dropped rows in total (``rows``) and per rule.
    """

    input: str
    output: str
    day: int
    rows_read: int = 0
    rows: int = 0
    row_groups: int = 0
    funnel_violations_dropped: Dict[str, int] = field(default_factory=dict)


def make_reader(fmt: str, inputs: Sequence[str],
                common_features: Optional[Sequence[str]] = None) -> SourceReader:
    """The reader of ``fmt``.

    Raises:
        ValueError: unknown format, or ``common_features`` missing for ``aliccp-raw``, given for
            another format, or not one file per input.
    """
    if fmt not in FORMATS:
        raise ValueError(f"The 'format' parameter must be one of {FORMATS}. Got {fmt!r} instead.")
    if fmt != "aliccp-raw":
        if common_features:
            raise ValueError(f"--common-features is only for --format aliccp-raw, not {fmt}")
        return AliCcpCsvReader() if fmt == "aliccp-csv" else AliExpressReader()
    if not common_features:
        raise ValueError("--format aliccp-raw needs --common-features: one common_features_*.csv "
                         "per sample_skeleton_*.csv input, in the same order")
    if len(common_features) != len(inputs):
        raise ValueError(f"--format aliccp-raw needs one --common-features file per --input "
                         f"file; got {len(inputs)} input(s) and {len(common_features)} "
                         f"common-features file(s)")
    check_files_exist(common_features)
    return AliCcpRawReader(dict(zip(inputs, common_features)))


def check_files_exist(paths: Sequence[str]) -> None:
    """Raise ``FileNotFoundError`` naming the first path that is not a file."""
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: input file not found")


def input_layouts(reader: SourceReader, inputs: Sequence[str]) -> List[CanonicalLayout]:
    """The layout of every input, read from the headers before any data.

    Raises:
        InputValidationError: a header is bad, or the files do not give the same columns.
    """
    layouts = [reader.layout(path) for path in inputs]
    first = layouts[0].spec()
    for path, layout in zip(inputs[1:], layouts[1:]):
        spec = layout.spec()
        if spec != first:
            differ = sorted(set(spec.all_columns) ^ set(first.all_columns))
            raise InputValidationError(
                f"{path}: its columns differ from those of {inputs[0]} (columns {differ}); "
                f"every input of one conversion must have the same columns")
    return layouts


def convert_file(reader: SourceReader, layout: CanonicalLayout, path: str, day: int,
                 directory: str, on_funnel_violation: str, chunk_rows: int,
                 report: FunnelReport) -> ConvertedFile:
    """Stream one input file into ``directory/day_NNN.parquet``, one row group per chunk.

    Funnel violations are counted into ``report`` under the file's path. With the ``drop``
    policy they are removed; with ``error`` the whole file is scanned so that the error gives
    its full count, then ``funnel_error`` is raised.
    """
    result = ConvertedFile(input=path, output=day_filename(day), day=day)
    schema: pa.Schema = layout.arrow_schema()
    targets = list(layout.spec().targets)
    with pq.ParquetWriter(os.path.join(directory, result.output), schema,
                          compression="snappy") as writer:
        for frame in reader.chunks(path, layout, chunk_rows):
            result.rows_read += len(frame)
            mask, counts = funnel_violations(frame[targets], targets)
            report.add(path, counts)
            if on_funnel_violation == "error" and path in report.violations:
                continue  # the file will be rejected; keep scanning only to count
            frame = frame[~mask].assign(**{C.DAY: day})
            if len(frame) == 0:
                continue
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
            result.rows += len(frame)
            result.row_groups += 1
        if result.row_groups == 0:
            writer.write_table(schema.empty_table())
    if on_funnel_violation == "error" and path in report.violations:
        raise funnel_error(report)
    result.funnel_violations_dropped = dict(report.violations.get(path, {}))
    return result


def convert(fmt: str, inputs: Sequence[str], out: str, on_funnel_violation: str = "error",
            chunk_rows: int = DEFAULT_CHUNK_ROWS,
            common_features: Optional[Sequence[str]] = None) -> dict:
    """Convert ``inputs`` (one file per day, in time order) into a canonical dataset at ``out``.

    Args:
        fmt: one of :data:`FORMATS`.
        inputs: the input files; for ``aliccp-raw`` the sample skeleton files.
        out: output directory, replaced atomically on success.
        on_funnel_violation: ``error`` (raise) or ``drop`` (drop and record the rows).
        chunk_rows: rows per chunk and per Parquet row group.
        common_features: ``aliccp-raw`` only, one common-features file per input.

    Returns:
        The manifest, also written to ``out/manifest.json``.

    Raises:
        InputValidationError: bad input; nothing is written.
        FileNotFoundError: an input file does not exist.
        ValueError: bad arguments.
    """
    if on_funnel_violation not in FUNNEL_POLICIES:
        raise ValueError(f"The 'on_funnel_violation' parameter must be one of "
                         f"{FUNNEL_POLICIES}. Got {on_funnel_violation!r} instead.")
    if chunk_rows < 1:
        raise ValueError(f"--chunk-rows must be at least 1; got {chunk_rows}")
    inputs = list(inputs)
    if not inputs:
        raise ValueError("no --input file given")
    t0 = time.perf_counter()
    check_files_exist(inputs)
    reader = make_reader(fmt, inputs, common_features)
    layouts = input_layouts(reader, inputs)
    spec = layouts[0].spec()
    report = FunnelReport()
    with atomic_output_dir(out) as staging:
        files = [convert_file(reader, layout, path, day, staging, on_funnel_violation,
                              chunk_rows, report)
                 for day, (path, layout) in enumerate(zip(inputs, layouts))]
        spec.save(staging)
        elapsed = time.perf_counter() - t0
        manifest = {
            "format": fmt,
            "inputs": inputs,
            "common_features": list(common_features or []),
            "on_funnel_violation": on_funnel_violation,
            "chunk_rows": chunk_rows,
            "files": [asdict(f) for f in files],
            "rows_per_file": {f.output: f.rows for f in files},
            "funnel_violations_dropped": {f.input: f.funnel_violations_dropped
                                          for f in files if f.funnel_violations_dropped},
            "rows_read": sum(f.rows_read for f in files),
            "rows": sum(f.rows for f in files),
            "seconds": elapsed,
            "peak_rss_mb": peak_rss_mb(),
        }
        with open(os.path.join(staging, MANIFEST_FILENAME), "w") as fh:
            json.dump(manifest, fh, indent=2)
    return manifest


def summary_rows(out: str, manifest: dict) -> List[tuple]:
    """The rows of the closing summary table."""
    rows = [("output", os.path.abspath(out)), ("format", manifest["format"])]
    for f in manifest["files"]:
        rows.append((f["output"], f"{f['rows']:,} rows from {os.path.basename(f['input'])}"))
    for f in manifest["files"]:
        dropped = f["funnel_violations_dropped"]
        if dropped:
            rules = ", ".join(f"{k}={v}" for k, v in dropped.items() if k != "rows" and v)
            rows.append((f"funnel violations dropped ({os.path.basename(f['input'])})",
                         f"{dropped['rows']:,} ({rules})"))
    rows += [("rows read", f"{manifest['rows_read']:,}"),
             ("rows written", f"{manifest['rows']:,}"),
             ("seconds", f"{manifest['seconds']:.2f}"),
             ("peak RSS (MB)", f"{manifest['peak_rss_mb']:.0f}")]
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m preprocessing.convert``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m preprocessing.convert",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt",
                        help="input format")
    parser.add_argument("--input", required=True, nargs="+", dest="inputs",
                        help="input files in time order; file i becomes day i")
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")
    parser.add_argument("--on-funnel-violation", choices=FUNNEL_POLICIES, default="error",
                        help="rows with purchase=1 and click=0: fail (default) or drop them")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                        help="rows per chunk and per Parquet row group")
    parser.add_argument("--common-features", nargs="+", default=None,
                        help="aliccp-raw only: one common_features_*.csv per --input file")
    args = parser.parse_args(argv)
    try:
        manifest = convert(args.fmt, args.inputs, args.out, args.on_funnel_violation,
                           args.chunk_rows, args.common_features)
    except (InputValidationError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table("preprocessing.convert", summary_rows(args.out, manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
