"""Ali-CCP readers: the processed CSV (``aliccp-csv``) and the raw Tianchi release (``aliccp-raw``).

Column mapping (both formats)
-----------------------------
Ali-CCP names its fields by number. Six of them become the canonical names the rest of extcvr
knows: ``101`` user_id, ``205`` item_id, ``206`` category_id, ``207`` shop_id, ``216`` brand_id and
``301`` app_id. Field 301 is Ali-CCP's scenario / traffic-source field (which surface of Taobao
showed the ad); it is the nearest analogue of the media app that showed an external-media ad,
so it plays ``app_id``. Every other field ``F`` becomes the categorical column ``f_F``
(``121`` -> ``f_121``, ``150_14`` -> ``f_150_14``).

Processed CSV (``aliccp-csv``)
------------------------------
Header ``click,purchase,101,121,...,301,109_14,...,D109_14,...,D853`` (torch-rechub) or the
18-field AITM layout ``click,purchase,101,...,301`` without dense columns (PaddleRec). The reader
adapts to the columns present: ``click``, ``purchase``, ``101`` and ``205`` are required, every
other field is optional and the spec lists only the columns present. A numbered field is
categorical (``int64``); a dense column ``D<field>`` becomes the continuous column ``d_<field>``
(lower case, ``float32``). The dense values are scores in [0, 1], not heavy-tailed counts, so no
column is put in ``log_continuous``. A header column that is none of these is an error.

Raw release (``aliccp-raw``)
----------------------------
``sample_skeleton_{train,test}.csv`` rows ``sample_id,click,buy,md5,feature_count,feature_list``
and ``common_features_{train,test}.csv`` rows ``md5,feature_count,feature_list``, both without a
header. A feature list is items ``field_id 0x02 feature_id 0x03 value`` joined by ``0x01``.

- The common-features file is loaded once per skeleton into a lookup table: an index of the
  md5 keys plus an ``int64`` matrix of feature ids (one column per emitted field), which is much
  smaller than a dict of dicts for the 0.7-0.9 million keys of the full release.
- The skeleton is streamed in chunks and joined on md5; a field in both lists takes the
  skeleton's id. A skeleton md5 missing from the common features is an error.
- Emitted fields: :data:`RAW_FIELDS`, the 23 fields of the processed CSV. The multi-valued
  fields (109_14, 110_14, 127_14, 150_14 carry one item per category/shop/brand the user
  interacted with) keep their first feature id as a single categorical; their values (and the
  values of every field) are ignored, so there are no dense ``d_*`` columns in this format.
- A field absent from a row becomes id 0. Categorify treats 0 as one more value ("absent"),
  it is not a missing value; feature ids of the raw release are large hashed integers.
- ``purchase`` is ``buy``; ``sample_id`` and ``feature_count`` are not written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from preprocessing import columns as C
from preprocessing.readers import (CanonicalLayout, SourceReader, canonical_frame,
                                   iter_csv_chunks, read_canonical_csv, read_csv_header,
                                   reject_unknown_columns, require_columns)
from preprocessing.validate import InputValidationError

#: Ali-CCP field ids that map onto canonical column names.
NAMED_FIELDS = {"101": C.USER_ID, "205": C.ITEM_ID, "206": C.CATEGORY_ID, "207": "shop_id",
                "216": "brand_id", "301": C.APP_ID}
#: Columns every processed Ali-CCP CSV must have.
REQUIRED_CSV_COLUMNS = (C.CLICK, C.PURCHASE, "101", "205")
#: The raw fields written by ``aliccp-raw``: the 23 categorical fields of the processed CSV.
RAW_FIELDS = ("101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206", "207",
              "210", "216", "508", "509", "702", "853", "301", "109_14", "110_14", "127_14",
              "150_14")

_FIELD_PATTERN = re.compile(r"^\d+(_\d+)?$")
_DENSE_PATTERN = re.compile(r"^D\d+(_\d+)?$")

ITEM_SEPARATOR = "\x01"
FIELD_SEPARATOR = "\x02"
VALUE_SEPARATOR = "\x03"
#: Marks a field a raw feature list does not hold, before the join fills it with 0.
ABSENT_ID = -1
#: Id written for a field that neither the skeleton nor the common features hold.
FILL_ID = 0
#: The common-features rows are long (hundreds of items), so they are parsed in smaller chunks.
COMMON_FEATURES_CHUNK_ROWS = 10_000

SKELETON_COLUMNS = ("sample_id", "click", "buy", "md5", "feature_count", "feature_list")
COMMON_FEATURES_COLUMNS = ("md5", "feature_count", "feature_list")


def field_column_name(field: str) -> str:
    """The canonical column of an Ali-CCP field id: a named id column or ``f_<field>``."""
    return NAMED_FIELDS.get(field, f"f_{field}")


def dense_column_name(column: str) -> str:
    """The canonical column of a dense Ali-CCP column: ``D109_14`` -> ``d_109_14``."""
    return f"d_{column[1:]}".lower()


def csv_layout(path: str, header: Sequence[str]) -> CanonicalLayout:
    """The layout of a processed Ali-CCP CSV, built from the columns its header holds.

    Raises:
        InputValidationError: a required column is missing or a column is not an Ali-CCP one.
    """
    require_columns(path, header, REQUIRED_CSV_COLUMNS)
    categorical, continuous, unknown = [], [], []
    for column in header:
        if column in (C.CLICK, C.PURCHASE):
            continue
        if _FIELD_PATTERN.match(column):
            categorical.append((field_column_name(column), column))
        elif _DENSE_PATTERN.match(column):
            continuous.append((dense_column_name(column), column))
        else:
            unknown.append(column)
    reject_unknown_columns(path, unknown, "click, purchase, field ids such as 101 or 150_14, "
                                          "dense columns such as D109_14")
    return CanonicalLayout(
        format_name="aliccp-csv",
        targets=((C.CLICK, C.CLICK), (C.PURCHASE, C.PURCHASE)),
        categorical=tuple(categorical),
        continuous=tuple(continuous),
    )


class AliCcpCsvReader(SourceReader):
    """Reader of processed Ali-CCP CSV files (``--format aliccp-csv``)."""

    format_name = "aliccp-csv"

    def layout(self, path: str) -> CanonicalLayout:
        """The layout of ``path`` from its header."""
        return csv_layout(path, read_csv_header(path))

    def chunks(self, path: str, layout: CanonicalLayout, chunk_rows: int
               ) -> Iterator[pd.DataFrame]:
        """Validated canonical chunks of ``path``."""
        return read_canonical_csv(path, layout, chunk_rows)


def raw_layout() -> CanonicalLayout:
    """The fixed layout of ``aliccp-raw``; its source names are those of the joined chunk."""
    names = [field_column_name(f) for f in RAW_FIELDS]
    return CanonicalLayout(
        format_name="aliccp-raw",
        targets=((C.CLICK, C.CLICK), (C.PURCHASE, "buy")),
        categorical=tuple((name, name) for name in names),
        dropped=("sample_id", "md5", "feature_count", "feature_list"),
    )


def parse_feature_lists(feature_lists: pd.Series, fields: Sequence[str], source: str
                        ) -> np.ndarray:
    """The first feature id of each wanted field in each raw feature list.

    Each row is searched once per wanted field for ``0x01 field 0x02`` (with ``str.find``, so
    the long multi-valued lists of the common features are scanned in C and never split into
    Python objects); only the items of wanted fields are parsed.

    Args:
        feature_lists: one ``0x01``-joined list of ``field 0x02 id 0x03 value`` items per row;
            an empty cell is a row without features.
        fields: the wanted field ids; other fields are skipped.
        source: the chunk's name in messages.

    Returns:
        An ``int64`` matrix of shape ``(rows, len(fields))`` with ``ABSENT_ID`` where a row does
        not hold a field.

    Raises:
        InputValidationError: an item of a wanted field is not ``field 0x02 id 0x03 value`` with
            an integer id; the message names the chunk and the number of rows.
    """
    needles = [ITEM_SEPARATOR + field + FIELD_SEPARATOR for field in fields]
    ids = np.full((len(feature_lists), len(fields)), ABSENT_ID, dtype=np.int64)
    bad_rows: List[int] = []
    bad_example = ""
    for row, text in enumerate(feature_lists.fillna("").astype(str).tolist()):
        padded = ITEM_SEPARATOR + text
        for col, needle in enumerate(needles):
            start = padded.find(needle)
            if start < 0:
                continue
            start += len(needle)
            end = padded.find(VALUE_SEPARATOR, start)
            token = padded[start:end] if end >= 0 else padded[start:]
            try:
                if end < 0 or ITEM_SEPARATOR in token:
                    raise ValueError(token)
                ids[row, col] = int(token)
            except ValueError:
                if not bad_rows or bad_rows[-1] != row:
                    bad_rows.append(row)
                bad_example = bad_example or needle[1:-1] + FIELD_SEPARATOR + token
    if bad_rows:
        raise InputValidationError(
            f"{source}: column 'feature_list' has {len(bad_rows)} row(s) with an item that is "
            f"not field\\x02integer id\\x03value, e.g. {bad_example!r}")
    return ids


@dataclass
class CommonFeatureTable:
    """The feature ids of one common-features file, keyed by md5.

    Attributes:
        path: the file it was read from.
        md5: the md5 keys, unique, in file order.
        ids: ``int64`` matrix, row ``i`` holds the ids of ``md5[i]`` for :data:`RAW_FIELDS`
            (``ABSENT_ID`` where absent).
    """

    path: str
    md5: pd.Index
    ids: np.ndarray

    def lookup(self, md5: pd.Series, source: str) -> np.ndarray:
        """The id rows of the given md5 keys; raise when any key is unknown."""
        positions = self.md5.get_indexer(md5.astype(str))
        missing = positions < 0
        n_missing = int(missing.sum())
        if n_missing:
            examples = md5[missing].astype(str).unique()[:3].tolist()
            raise InputValidationError(
                f"{source}: column 'md5' has {n_missing} row(s) whose md5 is missing from the "
                f"common features {self.path}, e.g. {examples}")
        return self.ids[positions]


def load_common_features(path: str, chunk_rows: int = COMMON_FEATURES_CHUNK_ROWS
                         ) -> CommonFeatureTable:
    """Read a raw ``common_features_*.csv`` into a :class:`CommonFeatureTable`.

    Raises:
        InputValidationError: the file is empty, an md5 is empty or repeated, or a feature list
            is malformed.
    """
    keys: List[pd.Series] = []
    blocks: List[np.ndarray] = []
    for source, chunk in iter_csv_chunks(path, chunk_rows, header=None,
                                         names=list(COMMON_FEATURES_COLUMNS), dtype=str):
        n_empty = int(chunk["md5"].isna().sum())
        if n_empty:
            raise InputValidationError(f"{source}: column 'md5' has {n_empty} empty row(s)")
        keys.append(chunk["md5"])
        blocks.append(parse_feature_lists(chunk["feature_list"], RAW_FIELDS, source))
    md5 = pd.Index(pd.concat(keys, ignore_index=True))
    repeated = md5.duplicated()
    if repeated.any():
        raise InputValidationError(
            f"{path}: column 'md5' has {int(repeated.sum())} repeated row(s), e.g. "
            f"{md5[repeated][:3].tolist()}")
    return CommonFeatureTable(path=path, md5=md5, ids=np.concatenate(blocks))


class AliCcpRawReader(SourceReader):
    """Reader of the raw Ali-CCP release (``--format aliccp-raw``).

    Args:
        common_features: the common-features file of each skeleton file, keyed by its path.
        common_chunk_rows: rows per chunk when loading a common-features file (default
            ``min(chunk_rows, COMMON_FEATURES_CHUNK_ROWS)``).
    """

    format_name = "aliccp-raw"

    def __init__(self, common_features: Mapping[str, str],
                 common_chunk_rows: Optional[int] = None):
        self.common_features = dict(common_features)
        self.common_chunk_rows = common_chunk_rows

    def layout(self, path: str) -> CanonicalLayout:
        """The fixed raw layout, after checking that the skeleton's first row has 6 fields."""
        first_row = read_csv_header(path, header=None)
        if len(first_row) != len(SKELETON_COLUMNS):
            raise InputValidationError(
                f"{path}: a raw Ali-CCP skeleton row has {len(SKELETON_COLUMNS)} fields "
                f"{list(SKELETON_COLUMNS)}; the first row has {len(first_row)}")
        return raw_layout()

    def chunks(self, path: str, layout: CanonicalLayout, chunk_rows: int
               ) -> Iterator[pd.DataFrame]:
        """Stream the skeleton ``path`` joined with its common features, as canonical chunks."""
        common_rows = self.common_chunk_rows or min(chunk_rows, COMMON_FEATURES_CHUNK_ROWS)
        table = load_common_features(self.common_features[path], common_rows)
        names = [name for name, _ in layout.categorical]
        text_columns = {c: str for c in ("sample_id", "md5", "feature_count", "feature_list")}
        for source, chunk in iter_csv_chunks(path, chunk_rows, header=None,
                                             names=list(SKELETON_COLUMNS), dtype=text_columns):
            common_ids = table.lookup(chunk["md5"], source)
            own_ids = parse_feature_lists(chunk["feature_list"], RAW_FIELDS, source)
            ids = np.where(own_ids != ABSENT_ID, own_ids, common_ids)
            ids[ids == ABSENT_ID] = FILL_ID
            joined = pd.DataFrame({C.CLICK: chunk[C.CLICK], "buy": chunk["buy"]})
            joined = pd.concat([joined, pd.DataFrame(ids, columns=names)], axis=1)
            yield canonical_frame(joined, layout, source)
