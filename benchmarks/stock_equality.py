"""Check that the fast CPU path of ``preprocessing.run`` writes what stock NVTabular writes.

Usage::

    python -m benchmarks.stock_equality --input GEN_DIR --work DIR [--keep]

Runs ``preprocessing.run`` twice on the same input, each in its own child process: as shipped,
and on stock NVTabular 23.08's path (``stock_nvtabular``: merlin's own Parquet reader, its
merge-based Categorify encoding and its list helpers). Then it compares every column of every
split and every Categorify vocabulary file, one column at a time, and prints both runs'
timings. Exit status 1 when anything differs.

Both runs keep one fix of ours: the value-only hash of ``merlin_patches.hash_series``. Stock
merlin-core hashes a pandas column together with its row index, so the tail bucket of a rare
id depends on where the row sits in its partition (a correctness bug, fixed since the
foundation); with it, two runs whose partitions differ could never agree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from typing import Iterator, List, Optional

from benchmarks.run import StageError, run_child
from common.tables import print_table


@contextlib.contextmanager
def nvtabular_levers(read_once: bool = True, vectorised_encode: bool = True,
                     vectorised_lists: bool = True) -> Iterator[None]:
    """Within the block, ``preprocessing.run`` uses only the levers asked for; each one off
    means NVTabular 23.08's own code: merlin's ``Dataset(files)`` reader instead of
    ``preprocessing.read_once``, Categorify's merge-based ``_encode`` instead of
    ``merlin_patches.encode_categories``, merlin-core's list helpers instead of the vectorised
    ones. The value-only hash always stays."""
    from merlin.io import Dataset

    import preprocessing.run as run_module
    from preprocessing import merlin_patches

    def stock_dataset(files, part_size, cpu, funnel=()):
        if funnel:
            raise ValueError("the stock reader path does not drop funnel violations")
        return Dataset(list(files), engine="parquet", part_size=part_size, cpu=cpu)

    off = {"encode_categories": not vectorised_encode,
           "flatten_list_column_values": not vectorised_lists,
           "encode_list_column": not vectorised_lists}
    saved = {name: getattr(merlin_patches, name) for name in off}
    saved_reader = run_module.read_once_dataset
    try:
        merlin_patches.apply()  # records the originals
        for name, use_original in off.items():
            if use_original:
                setattr(merlin_patches, name, merlin_patches.original(
                    "_encode" if name == "encode_categories" else name))
        if not read_once:
            run_module.read_once_dataset = stock_dataset
        merlin_patches.apply()  # installs the originals where the replacements were
        yield
    finally:
        for name, fn in saved.items():
            setattr(merlin_patches, name, fn)
        run_module.read_once_dataset = saved_reader
        merlin_patches.apply()


def stock_nvtabular():
    """Every lever off: NVTabular 23.08's own reader, encoding and list helpers."""
    return nvtabular_levers(read_once=False, vectorised_encode=False, vectorised_lists=False)


def _run_stock(input_dir: str, out: str) -> int:
    from preprocessing.run import main
    with stock_nvtabular():
        return main(["--input", input_dir, "--out", out, "--no-progress"])


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.stock_equality``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stock_equality",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="canonical dataset directory")
    parser.add_argument("--work", default=None, help="where both outputs go (a fresh "
                        "sub-directory; default: the system temp directory)")
    parser.add_argument("--keep", action="store_true", help="keep both outputs")
    parser.add_argument("--stock-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stock_child:
        from preprocessing.tensorflow_free import keep_tensorflow_out
        keep_tensorflow_out()  # as preprocessing.run's own entry point does
        return _run_stock(args.input, args.stock_child)

    from preprocessing.splits import differing_columns, differing_vocabularies
    if args.work:
        os.makedirs(args.work, exist_ok=True)
    work = tempfile.mkdtemp(prefix="extcvr-stock-", dir=args.work)
    fast, stock = os.path.join(work, "fast"), os.path.join(work, "stock")
    try:
        fast_wall, fast_rss = run_child(["preprocessing.run", "--input", args.input, "--out",
                                         fast, "--no-progress"], os.path.join(work, "fast.log"))
        stock_wall, stock_rss = run_child(["benchmarks.stock_equality", "--input", args.input,
                                           "--stock-child", stock],
                                          os.path.join(work, "stock.log"))
        columns = differing_columns(fast, stock)
        vocabularies = differing_vocabularies(fast, stock)
        rows = {}
        for name, directory in (("fast", fast), ("stock", stock)):
            with open(os.path.join(directory, "manifest.json")) as fh:
                rows[name] = json.load(fh)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    total = sum(rows["fast"]["rows_in"].values())
    print_table("benchmarks.stock_equality", [
        ("input", os.path.abspath(args.input)),
        ("rows", f"{total:,}"),
        ("fast: wall s / peak RSS MB", f"{fast_wall:.1f} / {fast_rss:,.0f}"),
        ("stock: wall s / peak RSS MB", f"{stock_wall:.1f} / {stock_rss:,.0f}"),
        ("differing columns", ", ".join(columns) or "none"),
        ("differing vocabularies", ", ".join(vocabularies) or "none"),
    ] + ([("kept", work)] if args.keep else []))
    return 1 if columns or vocabularies else 0


if __name__ == "__main__":
    sys.exit(main())
