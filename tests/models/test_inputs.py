"""Ground-truth columns can never reach a model; the input layer is built from the schema."""

import pytest
import tensorflow as tf

from models.data import batches, load_schema, model_columns, split_dataset
from models.inputs import Feature, InputLayer, features_from_schema, input_names
from preprocessing import columns as C


@pytest.fixture(scope="module")
def schema(small_processed):
    return load_schema(small_processed)


def test_features_from_schema_exclude_ground_truth_targets_and_day(schema):
    names = {f.name for f in features_from_schema(schema)}
    assert not names & (set(C.GROUND_TRUTH) | set(C.FUNNEL) | {C.DAY})
    assert names == set(C.synthetic_spec().features)


def test_loader_batches_hold_no_ground_truth_column(small_processed, schema):
    ds = split_dataset(small_processed, "valid", model_columns(schema, C.FUNNEL))
    x, y = next(iter(batches(ds, 256, shuffle=False)))
    seen = set(x) | set(y)
    assert not seen & set(C.GROUND_TRUTH)
    assert set(y) == set(C.FUNNEL)


def test_input_layer_refuses_a_ground_truth_feature():
    with pytest.raises(ValueError, match="purchase_counterfactual"):
        InputLayer([Feature("purchase_counterfactual", "continuous")])


def test_input_layer_sizes_tables_from_cardinalities_and_pools_multihot(schema):
    feats = features_from_schema(schema)
    layer = InputLayer(feats, embedding_dim=4)
    by_name = {f.name: f for f in feats}
    assert layer.tables["category_id"].input_dim == by_name["category_id"].cardinality
    batch = {}
    for f in feats:
        if f.kind == "continuous":
            batch[f.name] = tf.zeros([3])
        elif f.kind == "categorical":
            batch[f.name] = tf.constant([0, 1, 2], tf.int64)
    batch["user_recent_cats__values"] = tf.constant([3, 4, 5, 3], tf.int64)
    batch["user_recent_cats__offsets"] = tf.constant([0, 1, 3, 4], tf.int64)
    out = layer(batch)
    assert out.shape == (3, layer.output_dim)
    assert set(input_names(feats)) == set(batch)
    emb = layer.tables["user_recent_cats"].embeddings.numpy()
    start = [i for i, f in enumerate(feats) if f.name == "user_recent_cats"][0]
    n_cont_before = sum(f.kind == "continuous" for f in feats[:start])
    col = n_cont_before + 4 * (start - n_cont_before)
    assert out.numpy()[1, col:col + 4] == pytest.approx((emb[4] + emb[5]) / 2, abs=1e-6)


def test_embedding_rows_are_capped_and_ids_folded():
    layer = InputLayer([Feature("user_id", "categorical", 1000)], embedding_dim=2,
                       max_embedding_rows=10)
    out = layer({"user_id": tf.constant([3, 13], tf.int64)})
    assert layer.tables["user_id"].input_dim == 10
    assert out.numpy()[0] == pytest.approx(out.numpy()[1])
