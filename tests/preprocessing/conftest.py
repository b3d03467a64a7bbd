"""Fixtures of the preprocessing tests: the simulator's output digest (the default world's
output must stay byte-identical whatever option is added)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest


def _table_digest(sampler) -> str:
    """SHA-256 over every column's values of every block (names, offsets and values)."""
    import hashlib
    h = hashlib.sha256()
    for b in range(sampler.n_blocks):
        table = sampler.block(b)
        for name in table.column_names:
            col = table.column(name).combine_chunks()
            h.update(name.encode())
            if pa.types.is_list(col.type):
                h.update(np.asarray(col.offsets).tobytes())
                h.update(np.asarray(col.flatten().fill_null(-1)).tobytes())
            else:
                h.update(np.asarray(col.fill_null(-1) if col.null_count else col).tobytes())
    return h.hexdigest()


#: The digest of the default simulator's output (seed 11, 30k rows, 20k pilot rows) before the
#: sharpness option existed (2026-11-30): every optional effect since (the sharpness trend, the
#: hidden need, the mechanism worlds' options) is off by default.
DEFAULT_DIGEST = "dee271f380935aaadd55db6ac928b4b84fe667e86f36aecc11ec35c7ade35188"


@pytest.fixture
def table_digest():
    """SHA-256 of a sampler's whole output (every block, every column)."""
    return _table_digest


@pytest.fixture
def default_digest():
    """The stored digest of the default world (seed 11, 30k rows, 20k pilot rows)."""
    return DEFAULT_DIGEST
