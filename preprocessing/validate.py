"""Input validation: every bad input gets an error that names the file, the column and the rows.

Checks, in order, per file: the file is readable Parquet; it has every column of the spec; each
column has the dtype its role needs; labels hold no NaN and only 0/1; the funnel holds
(purchase implies click, cart implies click, purchase implies cart when cart is present).

Funnel violations follow a policy: ``error`` (default) raises, ``drop`` removes the rows and
reports how many it dropped from which file. Nothing else is ever dropped silently.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing import columns as C

FUNNEL_POLICIES = ("error", "drop")


def funnel_rules(targets: Sequence[str]) -> List[Tuple[str, str]]:
    """(later, earlier) stage pairs that must hold ``later = 1 implies earlier = 1``, for the
    stages present in ``targets``."""
    pairs = [(C.PURCHASE, C.CLICK), (C.CART, C.CLICK), (C.PURCHASE, C.CART)]
    return [(later, earlier) for later, earlier in pairs
            if later in targets and earlier in targets]


class InputValidationError(ValueError):
    """A bad input: the message names the file, the column and the number of rows."""


@dataclass
class FunnelReport:
    """Funnel violations found (and, with the ``drop`` policy, dropped) per file."""

    rows_checked: int = 0
    violations: Dict[str, Dict[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Rows that break the funnel, over all files (a row counts once)."""
        return sum(v["rows"] for v in self.violations.values())

    def add(self, source: str, counts: Dict[str, int]) -> None:
        """Record the violations of one file or chunk."""
        if counts["rows"]:
            slot = self.violations.setdefault(source, {k: 0 for k in counts})
            for k, v in counts.items():
                slot[k] = slot.get(k, 0) + v


def list_parquet_files(directory: str) -> List[str]:
    """The Parquet files of a dataset directory, sorted; an error when there are none."""
    if not os.path.isdir(directory):
        raise InputValidationError(f"{directory}: input directory does not exist")
    files = sorted(glob.glob(os.path.join(directory, "*.parquet")))
    if not files:
        raise InputValidationError(f"{directory}: empty input, no *.parquet files")
    return files


def _dtype_ok(role: str, typ: pa.DataType) -> bool:
    if role in ("categorical",):
        return pa.types.is_integer(typ)
    if role == "multihot":
        return pa.types.is_list(typ) and pa.types.is_integer(typ.value_type)
    if role in ("continuous", "ground_truth"):
        return pa.types.is_integer(typ) or pa.types.is_floating(typ)
    if role in ("targets",):
        return pa.types.is_integer(typ) or pa.types.is_boolean(typ) or pa.types.is_floating(typ)
    if role == "split":
        return pa.types.is_integer(typ)
    return True


_EXPECTED = {"categorical": "an integer type", "multihot": "list<integer>",
             "continuous": "a numeric type", "ground_truth": "a numeric type",
             "targets": "0/1 integers", "split": "an integer type"}


def check_schema(path: str, schema: pa.Schema, spec: C.DatasetSpec, n_rows: int) -> None:
    """Missing columns and wrong dtypes of one file."""
    names = set(schema.names)
    missing = [c for c in spec.all_columns if c not in names]
    if missing:
        raise InputValidationError(
            f"{path}: missing column(s) {missing} ({n_rows} rows); the dataset spec "
            f"'{spec.name}' requires {spec.all_columns}")
    roles: List[Tuple[str, Sequence[str]]] = [
        ("categorical", spec.categorical), ("multihot", spec.multihot),
        ("continuous", spec.continuous), ("targets", spec.targets),
        ("ground_truth", spec.ground_truth), ("split", (spec.split,))]
    for role, cols in roles:
        for col in cols:
            typ = schema.field(col).type
            if not _dtype_ok(role, typ):
                raise InputValidationError(
                    f"{path}: column '{col}' has dtype {typ}, expected {_EXPECTED[role]} for a "
                    f"{role} column ({n_rows} rows)")


def check_labels(labels: pd.DataFrame, source: str, targets: Sequence[str]) -> np.ndarray:
    """NaN and non-binary labels raise; returns the boolean mask of funnel-violating rows.

    Args:
        labels: the target columns of one file or chunk.
        source: the file name used in messages (with a row offset for chunks).
        targets: the target columns, a subset of (click, cart, purchase).
    """
    for col in targets:
        values = labels[col]
        nan = int(values.isna().sum())
        if nan:
            raise InputValidationError(f"{source}: column '{col}' has {nan} NaN label row(s)")
        bad = int((~values.isin([0, 1])).sum())
        if bad:
            sample = sorted(set(values[~values.isin([0, 1])].tolist()))[:5]
            raise InputValidationError(
                f"{source}: column '{col}' has {bad} non-binary label row(s), e.g. {sample}")
    return funnel_violations(labels, targets)[0]


def funnel_violations(labels: pd.DataFrame, targets: Sequence[str]
                      ) -> Tuple[np.ndarray, Dict[str, int]]:
    """Rows where a later funnel stage is 1 while an earlier one is 0, with counts per rule."""
    mask = np.zeros(len(labels), dtype=bool)
    counts: Dict[str, int] = {}
    for later, earlier in funnel_rules(targets):
        bad = (labels[later].to_numpy() == 1) & (labels[earlier].to_numpy() == 0)
        counts[f"{later}_without_{earlier}"] = int(bad.sum())
        mask |= bad
    counts["rows"] = int(mask.sum())
    return mask, counts


def funnel_error(report: FunnelReport) -> InputValidationError:
    """The error raised under the ``error`` policy, naming every file and rule."""
    parts = []
    for source, counts in report.violations.items():
        rules = ", ".join(f"{k}={v}" for k, v in counts.items() if k != "rows" and v)
        parts.append(f"{source}: {counts['rows']} row(s) ({rules})")
    return InputValidationError(
        "funnel violation (a later stage is 1 while an earlier one is 0) in "
        + "; ".join(parts)
        + ". Fix the data, or pass --on-funnel-violation drop to drop these rows.")


def validate_dataset(directory: str, spec: C.DatasetSpec, on_funnel_violation: str = "error"
                     ) -> Tuple[List[str], FunnelReport]:
    """Validate every Parquet file of a canonical dataset directory.

    Returns the file list and the funnel report. Raises ``InputValidationError`` on any bad
    input; under the ``error`` policy funnel violations are bad input too.
    """
    if on_funnel_violation not in FUNNEL_POLICIES:
        raise ValueError(f"The 'on_funnel_violation' parameter must be one of "
                         f"{FUNNEL_POLICIES}. Got {on_funnel_violation!r} instead.")
    files = list_parquet_files(directory)
    report = FunnelReport()
    total = 0
    for path in files:
        try:
            meta = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise InputValidationError(f"{path}: not a readable Parquet file ({e})") from e
        n_rows = meta.metadata.num_rows
        check_schema(path, meta.schema_arrow, spec, n_rows)
        total += n_rows
        if n_rows == 0:
            continue
        labels = meta.read(columns=list(spec.targets)).to_pandas()
        check_labels(labels, path, spec.targets)
        _, counts = funnel_violations(labels, spec.targets)
        report.add(path, counts)
        report.rows_checked += n_rows
    if total == 0:
        raise InputValidationError(f"{directory}: empty input, {len(files)} file(s) with 0 rows")
    if report.total and on_funnel_violation == "error":
        raise funnel_error(report)
    return files, report
