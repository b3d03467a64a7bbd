"""Reading a processed split (``PROC_DIR/train|valid|test``) outside the Merlin data loader.

A split directory holds Parquet parts next to ``schema.pbtxt`` and the HugeCTR metadata files,
so a plain ``pd.read_parquet(dir)`` trips over the non-Parquet files; these helpers read only
the parts, in part order (which keeps the input row order).
"""

from __future__ import annotations

import glob
import os
import re
from typing import List, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def split_parts(directory: str) -> List[str]:
    """The ``part_N.parquet`` files of a split directory, in numeric order."""
    parts = glob.glob(os.path.join(directory, "*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{directory}: no Parquet parts")

    def key(path):
        m = re.search(r"(\d+)\.parquet$", path)
        return (int(m.group(1)) if m else -1, path)
    return sorted(parts, key=key)


def read_parts_table(parts: Sequence[str], columns: Optional[Sequence[str]] = None) -> pa.Table:
    """Parquet ``parts`` (in the order given) as one Arrow table."""
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in parts])


def read_split_table(directory: str, columns: Optional[Sequence[str]] = None) -> pa.Table:
    """A processed split as one Arrow table."""
    return read_parts_table(split_parts(directory), columns)


def read_split(directory: str, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """A processed split as a pandas DataFrame (list columns become object arrays)."""
    return read_split_table(directory, columns).to_pandas()


def point_file_list_at(staging_split: str, final_split: str) -> None:
    """Rewrite the HugeCTR ``_file_list.txt`` of a split written into a staging directory so
    that it names the parts where they will be once the output is renamed into place
    (``final_split``). A split without the file does nothing."""
    path = os.path.join(staging_split, "_file_list.txt")
    if not os.path.exists(path):
        return
    with open(path) as fh:
        lines = fh.read().splitlines()
    final = os.path.abspath(final_split)
    fixed = lines[:1] + [os.path.join(final, os.path.basename(line)) for line in lines[1:]
                         if line.strip()]
    with open(path, "w") as fh:
        fh.write("\n".join(fixed) + "\n")


def differing_columns(first: str, second: str, splits: Sequence[str] = ("train", "valid", "test")
                      ) -> List[str]:
    """``split/column`` names whose values differ between two processed outputs (row order
    included; the Parquet part boundaries may differ). One column at a time, so memory stays
    at one column of one split, even at 10M rows."""
    differ: List[str] = []
    for split in splits:
        a_dir, b_dir = os.path.join(first, split), os.path.join(second, split)
        a_cols = pq.read_schema(split_parts(a_dir)[0]).names
        b_cols = pq.read_schema(split_parts(b_dir)[0]).names
        if a_cols != b_cols:
            differ.append(f"{split}/<columns: {a_cols} vs {b_cols}>")
            continue
        for col in a_cols:
            a = read_split_table(a_dir, [col]).column(0)
            b = read_split_table(b_dir, [col]).column(0)
            if not a.equals(b):
                differ.append(f"{split}/{col}")
    return differ


def differing_vocabularies(first: str, second: str) -> List[str]:
    """Categorify vocabulary files (``workflow/categories``) that differ between two outputs."""
    dirs = [os.path.join(d, "workflow", "categories") for d in (first, second)]
    names = [sorted(os.listdir(d)) for d in dirs]
    if names[0] != names[1]:
        return [f"<files: {names[0]} vs {names[1]}>"]
    return [n for n in names[0] if not pq.read_table(os.path.join(dirs[0], n)).equals(
        pq.read_table(os.path.join(dirs[1], n)))]
