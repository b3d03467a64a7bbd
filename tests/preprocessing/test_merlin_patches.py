"""The vectorised list helpers give exactly what merlin-core's own helpers give."""

import numpy as np
import pytest
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


def _toy_frame(rng, n):
    """An id column with a long tail, a float category with nulls and a list column."""
    ids = rng.zipf(1.6, n).astype(np.int64)
    cats = rng.integers(0, 6, n).astype(np.float64)
    cats[rng.random(n) < 0.1] = np.nan
    lists = [rng.integers(0, 9, rng.integers(0, 4)).astype(np.int64) for _ in range(n)]
    return pd.DataFrame({"ids": ids, "cats": cats, "tags": pd.Series(lists, dtype=object)})


def _fitted_categorify(tmp_path, train):
    import nvtabular as nvt
    from nvtabular import ops
    merlin_patches.apply()
    graph = ((["ids"] >> ops.Categorify(freq_threshold=2, num_buckets=7,
                                         out_path=str(tmp_path)))
             + (["cats"] >> ops.Categorify(out_path=str(tmp_path)))
             + (["tags"] >> ops.Categorify(out_path=str(tmp_path))))
    wf = nvt.Workflow(graph)
    wf.fit(nvt.Dataset(train, cpu=True))
    return wf


def test_vectorised_categorify_encoding_equals_nvtabulars_merge(tmp_path, monkeypatch):
    import nvtabular.ops.categorify as categorify
    rng = np.random.default_rng(3)
    wf = _fitted_categorify(tmp_path, _toy_frame(rng, 400))
    for n in (1, 57, 300):  # unseen ids, rare ids, nulls, empty lists
        df = _toy_frame(rng, n)
        ours = wf.transform(df)
        with monkeypatch.context() as m:
            m.setattr(categorify, "_encode", merlin_patches.original("_encode"))
            theirs = wf.transform(df)
        for col in ("ids", "cats"):
            assert ours[col].dtype == theirs[col].dtype
            assert np.array_equal(ours[col].to_numpy(), theirs[col].to_numpy()), col
        assert all(np.array_equal(a, b) for a, b in zip(ours["tags"], theirs["tags"]))
    assert set(ours["ids"]) & set(range(2, 9))  # the hashed tail was exercised
    assert 1 in set(ours["cats"])  # and the null code


def test_a_refitted_vocabulary_at_the_same_path_is_read_again(tmp_path):
    rng = np.random.default_rng(5)
    first = _fitted_categorify(tmp_path, _toy_frame(rng, 200))
    probe = _toy_frame(rng, 50)
    before = first.transform(probe)["cats"].to_numpy()
    train = _toy_frame(rng, 200)
    train["cats"] = train["cats"] + 100  # a disjoint vocabulary, written to the same files
    second = _fitted_categorify(tmp_path, train)
    after = second.transform(probe)["cats"].to_numpy()
    assert set(after) <= {1, 2} and not set(before) <= {1, 2}


@pytest.mark.parametrize("module_name, attr", sorted(merlin_patches.EXPECTED_SIGNATURES))
def test_every_patched_function_still_has_the_signature_it_was_written_for(module_name, attr):
    merlin_patches.apply()
    fn = merlin_patches.original(attr)
    assert fn.__module__.startswith(module_name.split(".")[0])
    merlin_patches.check_signature(module_name, attr, fn)  # raises after an incompatible upgrade


def test_a_changed_signature_is_refused_with_a_clear_error():
    def changed(s, new_arg=None):
        return s
    with pytest.raises(merlin_patches.MerlinVersionError, match="flatten_list_column_values"):
        merlin_patches.check_signature("merlin.core.dispatch", "flatten_list_column_values",
                                       changed)


def test_integer_ids_hash_with_the_device_independent_splitmix64():
    from preprocessing.id_hash import id_hash
    merlin_patches.apply()
    ids = pd.Series([0, 7, -1, 2**40], dtype=np.int64)
    np.testing.assert_array_equal(merlin_patches.hash_series(ids), id_hash(ids.to_numpy()))
    import merlin.core.dispatch as dispatch
    np.testing.assert_array_equal(dispatch.hash_series(ids), id_hash(ids.to_numpy()))
