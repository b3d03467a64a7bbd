"""Source-format readers: each turns one input file into validated chunks of canonical columns.

A reader knows one public log format (see ``aliccp`` and ``aliexpress``). For each input file it

- reads the header and returns a :class:`CanonicalLayout`: which source column becomes which
  canonical column, in which role (target, categorical, continuous);
- streams the rows as pandas chunks with canonical names and dtypes: targets ``int32``,
  categorical ``int64``, continuous ``float32``.

Bad input raises ``InputValidationError`` with the file, the column and the number of rows in the
message: an empty file, a missing column, a value that does not parse as a number, an empty or
fractional categorical id, a NaN or non-binary label. Funnel violations are not a reader's
business; ``preprocessing.convert`` applies the funnel policy to the canonical chunks.

This module holds what the format modules share: the layout, the reader protocol and the CSV
chunk helpers. A chunk's rows are named in messages as ``FILE (data rows A-B)``, 1-based and
counted without the header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.types import is_numeric_dtype

from preprocessing import columns as C
from preprocessing.validate import InputValidationError, check_labels

#: Arrow types of the canonical roles.
TARGET_TYPE = pa.int32()
CATEGORICAL_TYPE = pa.int64()
CONTINUOUS_TYPE = pa.float32()
SPLIT_TYPE = pa.int64()

#: (canonical name, source name) pairs of one role, in output order.
ColumnPairs = Tuple[Tuple[str, str], ...]


@dataclass(frozen=True)
class CanonicalLayout:
    """How the columns of one source file map onto canonical columns.

    Attributes:
        format_name: the ``--format`` value; also the ``DatasetSpec.name``.
        targets: (canonical, source) label columns, in funnel order.
        categorical: (canonical, source) integer id columns.
        continuous: (canonical, source) float columns.
        log_continuous: canonical names of the continuous columns that are guaranteed
            non-negative and heavy-tailed (LogOp applies to them).
        dropped: source columns that are read and deliberately not written.
    """

    format_name: str
    targets: ColumnPairs
    categorical: ColumnPairs
    continuous: ColumnPairs = ()
    log_continuous: Tuple[str, ...] = ()
    dropped: Tuple[str, ...] = ()

    def spec(self) -> C.DatasetSpec:
        """The ``DatasetSpec`` of the converted dataset (split column ``day``)."""
        return C.DatasetSpec(
            name=self.format_name,
            categorical=tuple(name for name, _ in self.categorical),
            continuous=tuple(name for name, _ in self.continuous),
            log_continuous=self.log_continuous,
            targets=tuple(name for name, _ in self.targets),
            split=C.DAY,
        )

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of every output file, columns in ``spec().all_columns`` order."""
        types = {name: CATEGORICAL_TYPE for name, _ in self.categorical}
        types.update({name: CONTINUOUS_TYPE for name, _ in self.continuous})
        types.update({name: TARGET_TYPE for name, _ in self.targets})
        types[C.DAY] = SPLIT_TYPE
        return pa.schema([pa.field(name, types[name]) for name in self.spec().all_columns])


class SourceReader:
    """The interface of a format reader (a protocol; the format modules implement it)."""

    #: the ``--format`` value this reader handles.
    format_name: str = ""

    def layout(self, path: str) -> CanonicalLayout:
        """Read the header of ``path`` and return its layout; raise on missing columns."""
        raise NotImplementedError

    def chunks(self, path: str, layout: CanonicalLayout, chunk_rows: int
               ) -> Iterator[pd.DataFrame]:
        """Yield validated canonical chunks of at most ``chunk_rows`` rows, without ``day``."""
        raise NotImplementedError


def read_csv_header(path: str, **read_csv_kwargs) -> List[str]:
    """The column names of a CSV file.

    Raises:
        InputValidationError: the file is empty (0 bytes) or not parseable as CSV.
    """
    try:
        header = pd.read_csv(path, nrows=0, **read_csv_kwargs)
    except pd.errors.EmptyDataError as e:
        raise InputValidationError(f"{path}: empty input (0 bytes, no header)") from e
    except pd.errors.ParserError as e:
        raise InputValidationError(f"{path}: not a readable CSV file ({str(e).strip()})") from e
    return [str(c) for c in header.columns]


def require_columns(path: str, present: Sequence[str], required: Sequence[str]) -> None:
    """Raise when any of ``required`` is missing from the header ``present``."""
    missing = [c for c in required if c not in set(present)]
    if missing:
        raise InputValidationError(
            f"{path}: missing column(s) {missing} (no row has them); the file has columns "
            f"{list(present)}")


def reject_unknown_columns(path: str, unknown: Sequence[str], known_hint: str) -> None:
    """Raise when the header holds columns the format does not know (nothing is dropped
    silently)."""
    if unknown:
        raise InputValidationError(
            f"{path}: unexpected column(s) {list(unknown)}; expected {known_hint}")


def chunk_source(path: str, first_row: int, n_rows: int) -> str:
    """The name of a chunk in messages: ``FILE (data rows A-B)``, 1-based, header excluded."""
    return f"{path} (data rows {first_row + 1}-{first_row + n_rows})"


def iter_csv_chunks(path: str, chunk_rows: int, **read_csv_kwargs
                    ) -> Iterator[Tuple[str, pd.DataFrame]]:
    """Stream a CSV file as (chunk source name, chunk) pairs.

    Args:
        path: the CSV file.
        chunk_rows: rows per chunk; memory stays bounded by a few chunks.
        **read_csv_kwargs: passed to ``pandas.read_csv``.

    Raises:
        InputValidationError: the file is empty (0 bytes, or a header without rows), or a row
            does not parse as CSV.
    """
    first_row = 0
    try:
        reader = pd.read_csv(path, chunksize=chunk_rows, **read_csv_kwargs)
        with reader:
            for chunk in reader:
                if len(chunk) == 0:
                    continue
                yield chunk_source(path, first_row, len(chunk)), chunk.reset_index(drop=True)
                first_row += len(chunk)
    except pd.errors.EmptyDataError as e:
        raise InputValidationError(f"{path}: empty input (0 bytes, no header)") from e
    except pd.errors.ParserError as e:
        raise InputValidationError(f"{path}: not a readable CSV file ({str(e).strip()})") from e
    if first_row == 0:
        raise InputValidationError(f"{path}: empty input, 0 data rows")


def parse_numeric_column(values: pd.Series, source: str, column: str) -> pd.Series:
    """The column as numbers; raise when any non-empty value is not a number.

    Empty cells stay NaN; the caller decides whether they are allowed.

    Raises:
        InputValidationError: naming the chunk, the column and how many rows fail to parse.
    """
    if is_numeric_dtype(values):
        return values
    numbers = pd.to_numeric(values, errors="coerce")
    unparsable = numbers.isna() & values.notna()
    n_bad = int(unparsable.sum())
    if n_bad:
        examples = values[unparsable].astype(str).unique()[:5].tolist()
        raise InputValidationError(
            f"{source}: column '{column}' has {n_bad} row(s) that do not parse as a number, "
            f"e.g. {examples}")
    return numbers


def categorical_ids(values: pd.Series, source: str, column: str) -> np.ndarray:
    """The column as ``int64`` ids; raise on empty cells and fractional numbers."""
    numbers = parse_numeric_column(values, source, column)
    n_empty = int(numbers.isna().sum())
    if n_empty:
        raise InputValidationError(
            f"{source}: categorical column '{column}' has {n_empty} empty row(s)")
    if not pd.api.types.is_integer_dtype(numbers):
        fractional = numbers.to_numpy(dtype=np.float64) % 1 != 0
        n_fractional = int(fractional.sum())
        if n_fractional:
            raise InputValidationError(
                f"{source}: categorical column '{column}' has {n_fractional} row(s) that are "
                f"not integers, e.g. {numbers[fractional].unique()[:5].tolist()}")
    return numbers.to_numpy().astype(np.int64)


def canonical_frame(chunk: pd.DataFrame, layout: CanonicalLayout, source: str) -> pd.DataFrame:
    """Validate one chunk of source columns and return it with canonical names and dtypes.

    Labels must parse as numbers, hold no NaN and only 0/1 (``check_labels``; its messages name
    the source column, e.g. ``conversion``). Funnel violations are left in; the caller applies
    the funnel policy.

    Args:
        chunk: rows with (at least) the layout's source columns.
        layout: the file's layout.
        source: the chunk's name in messages.
    """
    labels = pd.DataFrame({src: parse_numeric_column(chunk[src], source, src)
                           for _, src in layout.targets})
    check_labels(labels, source, [src for _, src in layout.targets])
    out = {name: labels[src].to_numpy().astype(np.int32) for name, src in layout.targets}
    for name, src in layout.categorical:
        out[name] = categorical_ids(chunk[src], source, src)
    for name, src in layout.continuous:
        out[name] = parse_numeric_column(chunk[src], source, src).to_numpy(dtype=np.float32)
    return pd.DataFrame(out)


def read_canonical_csv(path: str, layout: CanonicalLayout, chunk_rows: int
                       ) -> Iterator[pd.DataFrame]:
    """Stream a CSV file whose header matches ``layout`` as validated canonical chunks.

    Every column is read, the dropped ones too: with ``usecols`` pandas would silently cut a row
    that has more fields than the header, instead of raising.
    """
    for source, chunk in iter_csv_chunks(path, chunk_rows):
        yield canonical_frame(chunk, layout, source)
