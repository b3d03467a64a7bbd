"""The generated HugeCTR JSON configuration against HugeCTR's documented schema, the graph's
ESMM semantics, and ``HugeCTRESMMConfig`` validation."""

import copy
import os

import numpy as np
import pytest

from models.hugectr.config import HugeCTRESMMConfig, load_config
from models.hugectr.graph import (ModelInputs, build_config, esmm_layers, random_weights,
                                  reference_forward, validate_config)

#: Per layer type, the keys HugeCTR's JSON schema requires besides type / bottom / top
#: (written out here, independently of ``graph.REQUIRED_KEYS``).
SCHEMA_KEYS = {
    "LocalizedSlotSparseEmbeddingHash": {"sparse_embedding_hparam", "optimizer"},
    "InnerProduct": {"fc_param"},
    "Reshape": {"leading_dim"},
    "Concat": {"axis"},
    "Slice": {"ranges"},
    "Dropout": {"rate"},
    "ReLU": set(), "Sigmoid": set(), "Add": set(), "Sub": set(),
    "BinaryCrossEntropyLoss": set(),
}


def _list(x):
    return [x] if isinstance(x, str) else list(x)


def test_generated_config_follows_the_hugectr_json_schema(hugectr_config, hugectr_data,
                                                         hugectr_out):
    cfg = hugectr_config
    assert {"solver", "optimizer", "layers"} <= set(cfg)
    assert {"batchsize", "batchsize_eval", "max_eval_batches", "gpu", "input_key_type"} <= \
        set(cfg["solver"])
    assert cfg["solver"]["input_key_type"] == "I64"
    assert cfg["optimizer"]["type"] == "Adam" and "adam_hparam" in cfg["optimizer"]
    data = cfg["layers"][0]
    assert data["type"] == "Data" and data["format"] == "Parquet"
    assert {"source", "eval_source", "check", "slot_size_array", "label", "dense",
            "sparse"} <= set(data)
    for source in [*data["source"], data["eval_source"]]:
        assert os.path.isfile(os.path.join(hugectr_out, source))
    assert data["slot_size_array"] == hugectr_data.slot_size_array
    assert data["label"] == {"top": ["click", "ctcvr"], "label_dim": [1, 1]}
    assert data["dense"] == {"top": "dense", "dense_dim": len(hugectr_data.dense)}
    (sparse,) = data["sparse"]
    assert sparse["slot_num"] == len(hugectr_data.slots) == len(data["slot_size_array"]) == \
        len(hugectr_data.categorical) - len(hugectr_data.multihot)
    assert sparse["nnz_per_slot"] == [1] * sparse["slot_num"] and sparse["is_fixed_length"]
    produced = {"click", "ctcvr", "dense", sparse["top"]}
    consumed = set()
    for layer in cfg["layers"][1:]:
        assert {"type", "bottom", "top"} <= set(layer), layer
        assert SCHEMA_KEYS[layer["type"]] <= set(layer), layer
        for bottom in _list(layer["bottom"]):
            assert bottom in produced, f"{layer['name']}: '{bottom}' not produced earlier"
            assert bottom not in consumed, f"{layer['name']}: '{bottom}' consumed twice"
            consumed.add(bottom)
        for top in _list(layer["top"]):
            assert top not in produced
            produced.add(top)
        if layer["type"] == "InnerProduct":
            assert layer["fc_param"]["num_output"] >= 1
    embedding = cfg["layers"][1]
    assert embedding["type"] == "LocalizedSlotSparseEmbeddingHash"
    assert embedding["bottom"] == sparse["top"]
    hp = embedding["sparse_embedding_hparam"]
    assert hp["combiner"] == "sum" and hp["embedding_vec_size"] == 16
    assert hp["max_vocabulary_size_global"] >= sum(data["slot_size_array"])
    losses = [layer for layer in cfg["layers"] if layer["type"] == "BinaryCrossEntropyLoss"]
    assert [layer["bottom"][1] for layer in losses] == ["click", "ctcvr"]
    assert cfg["layers"][-2:] == losses  # loss layers last
    assert cfg["loss_weights"] == {"click": 1.0, "ctcvr": 3.0}
    validate_config(cfg)


def _config(slots=(10, 20, 30), dense=2, **kw):
    return build_config(ModelInputs(tuple(slots), dense), HugeCTRESMMConfig(**kw))


def _mutations():
    def labels_unsorted(c):
        c["layers"][0]["label"]["top"] = ["ctcvr", "click"]

    def bottom_not_produced(c):
        c["layers"][3]["bottom"] = "nowhere"

    def consumed_twice(c):
        c["layers"][-1]["bottom"] = ["ctr_logit_loss", "ctcvr"]

    def missing_fc_param(c):
        next(x for x in c["layers"] if x["type"] == "InnerProduct").pop("fc_param")

    def loss_not_last(c):
        c["layers"].append({"name": "late", "type": "ReLU", "bottom": "loss_click",
                            "top": "late"})

    def slot_count(c):
        c["layers"][0]["slot_size_array"].append(5)

    def small_vocabulary(c):
        c["layers"][1]["sparse_embedding_hparam"]["max_vocabulary_size_global"] = 10

    def nnz_int(c):
        c["layers"][0]["sparse"][0]["nnz_per_slot"] = 1

    def one_loss(c):
        c["layers"].pop()

    return [(labels_unsorted, "sorted by name"), (bottom_not_produced, "'nowhere' is not"),
            (consumed_twice, "already consumed"), (missing_fc_param, "missing 'fc_param'"),
            (loss_not_last, "must come last"), (slot_count, "3 slots but slot_size_array has 4"),
            (small_vocabulary, "max_vocabulary_size_global 10 < 60"),
            (nnz_int, "nnz_per_slot must be a list"), (one_loss, "needs exactly one")]


@pytest.mark.parametrize("mutate,message", _mutations(), ids=[m.__name__ for m, _ in _mutations()])
def test_validate_config_rejects_a_broken_graph(mutate, message):
    cfg = _config()
    validate_config(cfg)
    broken = copy.deepcopy(cfg)
    mutate(broken)
    with pytest.raises(ValueError, match=message):
        validate_config(broken)


def test_graph_keeps_pctcvr_below_pctr_so_pcvr_is_a_probability():
    slots, dense_dim, vec = (7, 5, 11), 3, 4
    cfg = _config(slots, dense_dim, embedding_vec_size=vec, tower_units=(8, 4))
    rng = np.random.default_rng(0)
    weights = random_weights(cfg, seed=1)
    n = 500
    offsets = np.concatenate([[0], np.cumsum(slots)[:-1]])
    keys = np.stack([rng.integers(0, s, n) for s in slots], axis=1) + offsets
    out = reference_forward(cfg, weights, rng.normal(size=(n, dense_dim)), keys)
    assert set(out) == {"click", "ctcvr"}
    assert np.all(out["ctcvr"] <= out["click"])  # strictly below but for float32 rounding
    assert np.mean(out["ctcvr"] < out["click"]) > 0.99
    pcvr = out["ctcvr"] / out["click"]
    assert np.all((pcvr > 0) & (pcvr <= 1)) and np.std(pcvr) > 0.01


def test_dropout_adds_a_dropout_layer_after_each_hidden_layer():
    layers = esmm_layers(ModelInputs((3, 4), 1), HugeCTRESMMConfig(tower_units=(8, 4),
                                                                   dropout=0.2))
    drops = [x for x in layers if x.type == "Dropout"]
    assert len(drops) == 4 and all(x.params == {"dropout_rate": 0.2} for x in drops)
    validate_config(_config((3, 4), 1, tower_units=(8, 4), dropout=0.2))


def test_no_dense_columns_feed_the_embeddings_alone():
    cfg = _config((3, 4), 0)
    validate_config(cfg)
    assert not any(x["type"] == "Concat" for x in cfg["layers"])


def test_iteration_mode_repeats_the_dataset():
    cfg = _config(epochs=0, max_iter=500)
    assert cfg["solver"]["repeat_dataset"] is True and cfg["solver"]["max_iter"] == 500
    assert _config()["solver"]["num_epochs"] == 1


@pytest.mark.parametrize("kwargs,field", [
    ({"epochs": 0, "max_iter": 0}, "epochs"), ({"epochs": 2, "max_iter": 10}, "epochs"),
    ({"update_type": "Lazy"}, "update_type"), ({"tower_units": ()}, "tower_units"),
    ({"dropout": 1.0}, "dropout"), ({"embedding_vec_size": 0}, "embedding_vec_size"),
    ({"gpus": (0, 0)}, "gpus"), ({"model_name": "a b"}, "model_name")])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"The '{field}' parameter"):
        HugeCTRESMMConfig(**kwargs)


def test_load_config_names_the_file_and_rejects_unknown_keys(tmp_path):
    path = tmp_path / "hugectr.yaml"
    path.write_text("embedding_vec_size: 8\ntower_units: [16, 8]\n")
    assert load_config(str(path)) == HugeCTRESMMConfig(embedding_vec_size=8, tower_units=(16, 8))
    path.write_text("embedding_dim: 8\n")
    with pytest.raises(ValueError, match=r"hugectr\.yaml: unknown keys \['embedding_dim'\]"):
        load_config(str(path))
    path.write_text("batch_size: 0\n")
    with pytest.raises(ValueError, match=r"hugectr\.yaml: The 'batch_size' parameter"):
        load_config(str(path))
    assert load_config(None) == HugeCTRESMMConfig()


def test_a_short_run_logs_and_evaluates_within_its_iterations():
    config = HugeCTRESMMConfig(batch_size=4096, epochs=2)
    assert config.iterations(10_000) == 6
    assert config.intervals(10_000) == (6, 6)
    assert config.intervals(10_000_000) == (200, 1000)
    assert HugeCTRESMMConfig(epochs=0, max_iter=50).intervals(10**9) == (50, 50)
    solver = build_config(ModelInputs((3,), 1), config, train_rows=10_000)["solver"]
    assert (solver["display"], solver["eval_interval"]) == (6, 6)
