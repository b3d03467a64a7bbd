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


def test_hash_series_depends_on_the_value_not_the_row_position():
    merlin_patches.apply()
    a = pd.Series([11, 22, 33], index=[0, 1, 2])
    b = pd.Series([33, 11, 22], index=[7, 8, 9])
    ha, hb = merlin_patches.hash_series(a), merlin_patches.hash_series(b)
    assert ha[0] == hb[1] and ha[1] == hb[2] and ha[2] == hb[0]
    original = merlin_patches.original("hash_series")
    assert original(a)[0] != original(pd.Series([11], index=[5]))[0]  # the bug being fixed


def test_a_rare_id_lands_in_the_same_tail_bucket_in_every_row(small_processed,
                                                              small_generated):
    import os
    import nvtabular as nvt
    import pyarrow.parquet as pq
    wf = nvt.Workflow.load(os.path.join(small_processed, "workflow"))
    day = sorted(f for f in os.listdir(small_generated) if f.endswith(".parquet"))[-1]
    df = pq.read_table(os.path.join(small_generated, day)).to_pandas().head(50)
    df["user_id"] = 10**12 + 7  # one unseen id in every row
    out = wf.transform(df)
    assert out["user_id"].nunique() == 1
