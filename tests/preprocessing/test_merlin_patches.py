"""The vectorised list helpers give exactly what merlin-core's own helpers give."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from preprocessing import merlin_patches

lists = st.lists(st.lists(st.integers(-2**40, 2**40), min_size=0, max_size=6), min_size=1,
                 max_size=40)


def _series(rows):
    return pd.Series([np.asarray(r, dtype=np.int64) for r in rows])


@settings(max_examples=60, deadline=None)
@given(lists)
def test_flatten_matches_merlin_core(rows):
    s = _series(rows)
    ours = merlin_patches.flatten_list_column_values(s)
    theirs = merlin_patches.original("flatten_list_column_values")(s)
    assert np.array_equal(ours.to_numpy().astype(np.int64), theirs.to_numpy().astype(np.int64))


@settings(max_examples=60, deadline=None)
@given(lists)
def test_encode_list_column_matches_merlin_core(rows):
    s = _series(rows)
    flat = np.arange(sum(len(r) for r in rows)) * 3
    ours = merlin_patches.encode_list_column(s, flat, dtype=np.int32)
    theirs = merlin_patches.original("encode_list_column")(s, flat, dtype=np.int32)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype


def test_apply_installs_the_helpers_on_merlin_and_nvtabular_modules():
    merlin_patches.apply()
    import merlin.core.dispatch as dispatch
    import nvtabular.ops.logop as logop
    assert dispatch.flatten_list_column_values is merlin_patches.flatten_list_column_values
    assert logop.encode_list_column is merlin_patches.encode_list_column
    merlin_patches.apply()  # idempotent
    assert merlin_patches.original("encode_list_column") is not merlin_patches.encode_list_column
