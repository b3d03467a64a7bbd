"""The saved NVTabular workflow: schema, tags, encodings and out-of-vocabulary handling."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from preprocessing import columns as C
from preprocessing import merlin_patches
from preprocessing.splits import read_split, read_split_table
from preprocessing.workflow import (SPLIT_TAG, WorkflowConfig, feature_columns,
                                    load_workflow_config)


def _tags(schema, name):
    return {str(getattr(t, "value", t)) for t in schema[name].tags}


@pytest.fixture(scope="module")
def workflow(small_processed):
    merlin_patches.apply()
    import nvtabular as nvt
    return nvt.Workflow.load(os.path.join(small_processed, "workflow"))


def test_targets_are_tagged_binary_classification_targets(workflow):
    for col in (C.CLICK, C.CART, C.PURCHASE):
        assert {"target", "binary_classification"} <= _tags(workflow.output_schema, col)


def test_ground_truth_is_tagged_only_as_ground_truth(workflow):
    for col in (C.P_CLICK, C.P_PURCHASE_GIVEN_CLICK, C.PURCHASE_COUNTERFACTUAL):
        assert _tags(workflow.output_schema, col) == {C.GROUND_TRUTH_TAG}


def test_feature_selection_by_tags_never_returns_ground_truth_targets_or_day(workflow):
    feats = feature_columns(workflow.output_schema)
    forbidden = set(C.GROUND_TRUTH) | set(C.FUNNEL) | {C.DAY}
    assert not forbidden & set(feats)
    assert set(C.synthetic_spec().features) == set(feats)


def test_media_columns_carry_the_media_private_tag_and_others_do_not(workflow):
    schema = workflow.output_schema
    for col in schema.column_names:
        has = C.MEDIA_PRIVATE_TAG in _tags(schema, col)
        assert has == col.startswith(C.MEDIA_PREFIX), col
    assert C.MEDIA_PRIVATE_TAG not in _tags(schema, C.APP_ID)


def test_categorical_columns_record_embedding_cardinality(workflow, small_processed):
    schema = workflow.output_schema
    train = read_split(os.path.join(small_processed, "train"), [C.CATEGORY_ID, C.USER_ID])
    for col in (C.CATEGORY_ID, C.USER_ID):
        card = schema[col].properties["embedding_sizes"]["cardinality"]
        assert train[col].max() < card


def test_multihot_column_is_a_ragged_list_with_categorical_tag(workflow, small_processed):
    col = workflow.output_schema["user_recent_cats"]
    assert col.is_list and col.is_ragged
    assert "categorical" in _tags(workflow.output_schema, "user_recent_cats")
    table = read_split_table(os.path.join(small_processed, "test"), ["user_recent_cats"])
    lengths = table.column(0).combine_chunks().value_lengths().to_numpy()
    assert lengths.min() >= 1 and lengths.max() <= 5


def test_split_column_is_passed_through_with_split_tag(workflow):
    assert _tags(workflow.output_schema, C.DAY) == {SPLIT_TAG}


def _raw_rows(small_generated, n=4):
    files = sorted(f for f in os.listdir(small_generated) if f.endswith(".parquet"))
    return pq.read_table(os.path.join(small_generated, files[-1])).to_pandas().head(n).copy()


def test_unseen_categories_map_to_the_out_of_vocabulary_index_not_an_error(workflow,
                                                                           small_generated):
    df = _raw_rows(small_generated)
    df.loc[0, C.CATEGORY_ID] = 10**9
    df.loc[0, "creative_type"] = 10**9
    df.at[0, "user_recent_cats"] = np.array([10**9, 10**9 + 1])
    out = workflow.transform(df)
    # NVTabular 23.08 encoding: 0 padding, 1 null, 2 out-of-vocabulary, vocabulary from 3.
    assert out.loc[0, C.CATEGORY_ID] == 2
    assert out.loc[0, "creative_type"] == 2
    assert list(out.loc[0, "user_recent_cats"]) == [2, 2]
    assert (out.loc[1:, C.CATEGORY_ID] >= 3).all()


def test_unseen_huge_cardinality_ids_hash_into_the_tail_buckets(workflow, small_generated):
    df = _raw_rows(small_generated)
    df[C.USER_ID] = np.arange(10**12, 10**12 + len(df))
    out = workflow.transform(df)
    buckets = WorkflowConfig().tail_buckets
    assert out[C.USER_ID].between(2, 2 + buckets - 1).all()


def test_normalize_statistics_come_from_the_training_days_only(small_processed):
    train = read_split(os.path.join(small_processed, "train"), ["item_price"])
    assert abs(train["item_price"].mean()) < 1e-3
    assert abs(train["item_price"].std() - 1) < 1e-2


def test_missing_continuous_values_are_filled_before_normalising(small_processed,
                                                                 small_generated):
    out = read_split(os.path.join(small_processed, "test"), ["media_watch_minutes"])
    assert out["media_watch_minutes"].notna().all()


def test_workflow_config_rejects_bad_values_and_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="'freq_threshold'"):
        WorkflowConfig(freq_threshold=0)
    bad = tmp_path / "wf.yaml"
    bad.write_text("tail_buckets: 10\nnot_a_field: 1\n")
    with pytest.raises(ValueError, match="not_a_field"):
        load_workflow_config(str(bad))
