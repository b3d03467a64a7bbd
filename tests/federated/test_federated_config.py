"""federated.config: a party's YAML file, its validation, and the handshake's agreement."""

import pytest
import yaml

from federated.config import PartyConfig, SplitConfig, agreement, differing
from federated.privacy import DPConfig, GradientDefenceConfig
from models.config import ModelConfig, TrainConfig

BASE = {"party": "media", "data": "/d/media", "out": "/runs/media", "certs": "/certs"}


def _write(tmp_path, raw, name="party.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_load_reads_every_section_and_round_trips_through_save(tmp_path):
    path = _write(tmp_path, {
        **BASE, "address": "127.0.0.1:5701", "seed": 3,
        "split": {"width": 4, "wire_dtype": "float16", "bottom_units": [16, 8],
                  "shuffle_seed": 7, "dp": {"epsilon": 8.0, "clip": 0.5},
                  "gradient_defence": {"method": "marvell", "marvell_power": 2.0}},
        "model": {"embedding_dim": 4, "tower_units": [8]},
        "train": {"batch_size": 256, "max_steps": 10},
        "peer_timeout_s": 30, "call_timeout_s": 5})
    config = PartyConfig.load(path)
    assert config.split == SplitConfig(width=4, wire_dtype="float16", bottom_units=(16, 8),
                                       shuffle_seed=7, dp=DPConfig(epsilon=8.0, clip=0.5),
                                       gradient_defence=GradientDefenceConfig("marvell", 2.0))
    assert PartyConfig.load(_write(tmp_path, BASE)).split.gradient_defence.method == "marvell"
    assert config.model == ModelConfig(embedding_dim=4, tower_units=(8,))
    assert config.train == TrainConfig(batch_size=256, max_steps=10)
    assert (config.seed, config.address, config.peer_timeout_s) == (3, "127.0.0.1:5701", 30)
    saved = str(tmp_path / "saved.yaml")
    config.save(saved)
    assert PartyConfig.load(saved) == config


def test_a_file_with_only_the_required_keys_gets_the_defaults(tmp_path):
    config = PartyConfig.load(_write(tmp_path, BASE))
    assert config.split == SplitConfig() and config.train == TrainConfig()
    assert config.address == "127.0.0.1:5701"  # a fixed port: a restart is found again


@pytest.mark.parametrize("raw, match", [
    ({**BASE, "colour": "red"}, r"unknown keys \['colour'\]"),
    ({**BASE, "split": {"widht": 8}}, r"split: unknown keys \['widht'\]"),
    ({**BASE, "party": "publisher"}, "party must be one of"),
    ({k: v for k, v in BASE.items() if k != "certs"}, "certs"),
    ({**BASE, "address": "localhost"}, "HOST:PORT"),
    ({**BASE, "peer_timeout_s": 0}, "timeout"),
    ({**BASE, "split": {"width": 0}}, "split: .*width must be >= 1"),
    ({**BASE, "split": {"wire_dtype": "int8"}}, "split: .*wire_dtype must be one of"),
    ({**BASE, "split": {"model": "ukd"}}, "split: .*harness model"),
    ({**BASE, "split": {"dp": {"epsilon": -1}}}, "split: .*dp: .*epsilon must be >= 0"),
    ({**BASE, "split": {"dp": {"eps": 1}}}, r"split: .*dp: unknown keys \['eps'\]"),
    ({**BASE, "split": {"gradient_defence": {"method": "laplace"}}},
     "split: .*gradient defence must be one of"),
    ({**BASE, "train": {"batch_size": 0}}, "train: .*batch_size"),
    ({**BASE, "model": {"embeding_dim": 4}}, "model: unknown keys"),
], ids=["unknown-key", "unknown-split-key", "role", "missing-key", "address", "timeout",
        "width", "wire-dtype", "pseudo-label-model", "dp-epsilon", "dp-unknown-key",
        "gradient-defence", "train", "model"])
def test_invalid_files_raise_value_error_naming_the_file_and_section(tmp_path, raw, match):
    path = _write(tmp_path, raw)
    with pytest.raises(ValueError, match=match) as info:
        PartyConfig.load(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("split", [{"dp": 8}, {"gradient_defence": "marvell"}])
def test_a_dp_or_defence_block_that_is_not_a_mapping_is_refused(tmp_path, split):
    with pytest.raises(ValueError, match="split"):
        PartyConfig.load(_write(tmp_path, {**BASE, "split": split}))


def test_agreement_leaves_out_the_shuffle_seed_and_holds_the_shared_train_settings():
    a = PartyConfig(**BASE, split=SplitConfig(shuffle_seed=1),
                    train=TrainConfig(batch_size=128, epochs=2, checkpoint_every=5,
                                      max_steps=9, learning_rate=0.1))
    b = PartyConfig(**{**BASE, "party": "advertiser"}, split=SplitConfig(shuffle_seed=2),
                    train=TrainConfig(batch_size=128, epochs=2, checkpoint_every=5,
                                      max_steps=9, learning_rate=0.5), seed=4)
    assert "shuffle_seed" not in agreement(a)["split"]
    assert agreement(a) == agreement(b)
    assert {k: agreement(a)[k] for k in ("batch_size", "epochs", "checkpoint_every",
                                         "max_steps")} == {
        "batch_size": 128, "epochs": 2, "checkpoint_every": 5, "max_steps": 9}


def test_differing_lists_the_dotted_keys_of_differing_values():
    a = agreement(PartyConfig(**BASE, split=SplitConfig(width=8, dp=DPConfig(epsilon=1.0))))
    b = agreement(PartyConfig(**BASE, split=SplitConfig(width=16, dp=DPConfig(epsilon=2.0)),
                              train=TrainConfig(batch_size=64)))
    assert differing(a, b) == ["batch_size", "split.dp.epsilon", "split.width"]
    assert differing(a, a) == []


def test_differing_names_keys_present_on_one_side_only():
    assert differing({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "d": 3}) == ["a.c", "d"]
    assert differing({"a": {"b": 1}}, {"a": 1}) == ["a"]
