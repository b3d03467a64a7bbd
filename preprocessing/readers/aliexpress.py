"""AliExpress reader (``--format aliexpress``).

Header ``search_id,categorical_1..16,numerical_1..63,click,conversion`` (the AliExpress
multi-task dataset as released by FuxiCTR and torch-rechub). Mapping:

- ``click`` -> ``click``, ``conversion`` -> ``purchase`` (both ``int32``);
- ``categorical_k`` -> ``cat_k`` (``int64``);
- ``numerical_k`` -> ``num_k``, continuous (``float32``). The released values are already
  scaled; the samples lie in [0, 1], but nothing in the release guarantees that every value is
  non-negative and heavy-tailed, so no column is put in ``log_continuous``;
- ``search_id`` is dropped: it groups the impressions of one search request, an id of the query
  rather than a feature of the user, the ad or the context, and it is not stable across days;
- there is no ``app_id``: AliExpress logs one site (per country), and no column says which
  surface or app showed the impression, so none is invented.

All 16 categorical and 63 numerical columns, ``click`` and ``conversion`` are required;
``search_id`` is optional; any other column is an error.
"""

from __future__ import annotations

from typing import Iterator

import pandas as pd

from preprocessing import columns as C
from preprocessing.readers import (CanonicalLayout, SourceReader, read_canonical_csv,
                                   read_csv_header, reject_unknown_columns, require_columns)

N_CATEGORICAL = 16
N_NUMERICAL = 63
CONVERSION = "conversion"
SEARCH_ID = "search_id"

CATEGORICAL_COLUMNS = tuple((f"cat_{k}", f"categorical_{k}") for k in range(1, N_CATEGORICAL + 1))
NUMERICAL_COLUMNS = tuple((f"num_{k}", f"numerical_{k}") for k in range(1, N_NUMERICAL + 1))
REQUIRED_COLUMNS = (C.CLICK, CONVERSION, *(src for _, src in CATEGORICAL_COLUMNS),
                    *(src for _, src in NUMERICAL_COLUMNS))


def aliexpress_layout(path: str, header) -> CanonicalLayout:
    """The layout of an AliExpress CSV after checking its header.

    Raises:
        InputValidationError: a required column is missing or an unknown column is present.
    """
    require_columns(path, header, REQUIRED_COLUMNS)
    known = set(REQUIRED_COLUMNS) | {SEARCH_ID}
    reject_unknown_columns(path, [c for c in header if c not in known],
                           "search_id, categorical_1..16, numerical_1..63, click, conversion")
    return CanonicalLayout(
        format_name="aliexpress",
        targets=((C.CLICK, C.CLICK), (C.PURCHASE, CONVERSION)),
        categorical=CATEGORICAL_COLUMNS,
        continuous=NUMERICAL_COLUMNS,
        dropped=(SEARCH_ID,) if SEARCH_ID in header else (),
    )


class AliExpressReader(SourceReader):
    """Reader of AliExpress CSV files (``--format aliexpress``)."""

    format_name = "aliexpress"

    def layout(self, path: str) -> CanonicalLayout:
        """The layout of ``path`` from its header."""
        return aliexpress_layout(path, read_csv_header(path))

    def chunks(self, path: str, layout: CanonicalLayout, chunk_rows: int
               ) -> Iterator[pd.DataFrame]:
        """Validated canonical chunks of ``path``."""
        return read_canonical_csv(path, layout, chunk_rows)
