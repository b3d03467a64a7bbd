"""The model registry: a family registered from outside the package trains through
``python -m models.train``'s code path with nothing else edited; the processed data is opened
once per run; the flat config names of earlier releases map to the family configs."""

import json
import os
from dataclasses import dataclass

import pytest
import tensorflow as tf
import yaml

from models import registry
from models.baselines import CVRModel, _label, bce, mlp
from models.config import (FamilyConfig, ModelConfig, load_configs, model_config_from_dict,
                           with_model_options)
from preprocessing import columns as C


@dataclass(frozen=True)
class ToyConfig(FamilyConfig):
    """The toy family's own option."""

    KEY = "toy"
    LEGACY = {"toy_scale": "scale"}
    scale: float = 1.0

    def __post_init__(self):
        if self.scale <= 0:
            raise ValueError(f"The 'toy_scale' parameter must be > 0. Got {self.scale!r}")


class ToyCVR(CVRModel):
    """One tower for pCTR, one for pCVR, ESMM's loss scaled by the family option."""

    def __init__(self, features, config, targets=("click", "purchase"), **kwargs):
        super().__init__(features, config, targets, **kwargs)
        self.scale = config.family(ToyConfig).scale
        self.ctr = mlp((4,), 0.0, "toy_ctr")
        self.cvr = mlp((4,), 0.0, "toy_cvr")

    def call(self, inputs, training=False):
        h = self.embed(inputs)
        pctr = tf.reshape(self.ctr(h), [-1])
        pcvr = tf.reshape(self.cvr(h), [-1])
        return {"pctr": pctr, "pcvr": pcvr, "pctcvr": pctr * pcvr}

    def output_layers(self):
        return {"click": self.ctr.layers[-1], "purchase": self.cvr.layers[-1]}

    def compute_loss(self, outputs, labels):
        click = _label(labels, "click")
        ctcvr = click * _label(labels, "purchase")
        return self.scale * (tf.reduce_mean(bce(click, outputs["pctr"]))
                             + tf.reduce_mean(bce(ctcvr, outputs["pctcvr"])))


@pytest.fixture
def toy_family():
    """The toy family, registered for one test and removed after it."""
    seen = []

    def label_columns(name, schema, data_dir):
        seen.append(name)
        return []

    family = registry.register(registry.ModelFamily(
        names={"toy_cvr": "a test's own model"},
        build=lambda name, features, config, targets, seed: ToyCVR(features, config, targets),
        configs=(ToyConfig,), label_columns=label_columns))
    yield family, seen  # seen: the names the trainer asked the family's label columns for
    if family in registry.families():
        registry.unregister(family)


def test_a_model_registered_from_a_test_trains_through_the_cli(toy_family, small_processed,
                                                                 tmp_path):
    from models.train import main
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"embedding_dim": 4, "toy": {"scale": 2.0}},
        "train": {"batch_size": 512, "max_steps": 3, "checkpoint_every": 2}}))
    out = str(tmp_path / "run")
    assert main(["--model", "toy_cvr", "--data", small_processed, "--out", out, "--seed", "1",
                 "--config", str(config), "--no-progress"]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    recorded = json.load(open(os.path.join(out, "config.json")))
    assert metrics["steps"] == 3 and 0.0 < metrics["test"]["ctr_auc"] < 1.0
    assert recorded["model"] == "toy_cvr" and recorded["model_config"]["toy_scale"] == 2.0
    assert os.path.isdir(os.path.join(out, "saved_model"))
    assert toy_family[1] == ["toy_cvr"]


def test_the_toy_family_leaves_the_registry_when_unregistered(toy_family):
    assert "toy_cvr" in registry.model_names()
    registry.unregister(toy_family[0])
    assert "toy_cvr" not in registry.model_names()
    with pytest.raises(ValueError, match="'model' parameter must be one of"):
        registry.family_of("toy_cvr")


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match=r"\['esmm'\] are registered already"):
        registry.register(registry.ModelFamily(names={"esmm": "again"}, build=None))


def test_every_registered_family_builds_its_own_names():
    names = registry.model_names()
    for expected in ("naive", "naive_shared", "esmm", "escm2_ips", "mmoe", "autoheri",
                     "autoheri_none", "autoheri_all", "autoheri_random", "ukd_teacher", "ukd",
                     "ukd_base"):
        assert expected in names
    assert registry.pseudo_labelled_names() == ("ukd", "ukd_base")
    assert len(set(names)) == len(names)


def test_a_train_run_opens_the_processed_data_once(small_processed, tmp_path, monkeypatch):
    from models.config import TrainConfig
    from models.train import train
    loads = []
    original = C.DatasetSpec.load.__func__

    def counting(cls, directory):
        loads.append(directory)
        return original(cls, directory)

    monkeypatch.setattr(C.DatasetSpec, "load", classmethod(counting))
    train("esmm", small_processed, str(tmp_path / "run"), 0,
          ModelConfig(embedding_dim=4, tower_units=(8,)),
          TrainConfig(batch_size=512, max_steps=2, checkpoint_every=2), progress=False)
    assert loads == [small_processed]


def test_flat_keys_of_earlier_releases_map_to_the_family_configs(tmp_path):
    from models.autoheri.config import AutoHERIConfig
    from models.baselines import ESCM2Config, MMoEConfig
    from models.ukd.config import UKDConfig
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"model": {"autoheri_sparsity": 0.1, "ukd_lambda": 30.0,
                                             "mmoe_experts": 2, "ips_clip": 0.1,
                                             "ctcart_weight": 0.5, "embedding_dim": 8}}))
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump({"model": {
        "embedding_dim": 8, "autoheri": {"sparsity": 0.1, "ctcart_weight": 0.5},
        "ukd": {"lam": 30.0}, "mmoe": {"experts": 2}, "escm2": {"ips_clip": 0.1}}}))
    (m_old, _), (m_new, _) = load_configs(str(old)), load_configs(str(new))
    assert m_old == m_new
    assert m_old.family(AutoHERIConfig).sparsity == 0.1
    assert m_old.family(UKDConfig).lam == 30.0
    assert m_old.family(MMoEConfig).experts == 2
    assert m_old.family(ESCM2Config).ips_clip == 0.1
    # the recorded (flat) form round-trips, and defaults are not stored
    assert with_model_options(m_old) == m_old
    assert ModelConfig().families == () and with_model_options(ModelConfig()) == ModelConfig()


def test_an_unknown_model_key_names_the_family_sections():
    with pytest.raises(ValueError, match=r"unknown keys \['autoheri_edges'\].*'autoheri'"):
        model_config_from_dict({"autoheri_edges": 3}, "cfg.yaml: model")
    with pytest.raises(ValueError, match=r"autoheri: unknown keys \['edges'\]"):
        model_config_from_dict({"autoheri": {"edges": 3}}, "cfg.yaml: model")
    with pytest.raises(ValueError, match="autoheri_edge_lr"):
        model_config_from_dict({"autoheri": {"edge_lr": -1.0}}, "cfg.yaml: model")


def test_a_model_section_that_is_not_a_mapping_is_a_clear_error():
    for bad in (5, "abc", [("embedding_dim", 4)]):
        with pytest.raises(ValueError, match="cfg.yaml: model: expected a mapping"):
            model_config_from_dict(bad, "cfg.yaml: model")


def test_a_family_field_set_twice_is_refused():
    with pytest.raises(ValueError, match="autoheri.sparsity is set twice"):
        model_config_from_dict({"autoheri": {"sparsity": 0.1}, "autoheri_sparsity": 0.2},
                               "cfg.yaml: model")


def test_a_family_field_without_an_earlier_name_is_recorded_as_key_field():
    """A new family config needs no ``LEGACY`` entry: its fields record as ``KEY_field``."""
    @dataclass(frozen=True)
    class Plain(FamilyConfig):
        KEY = "plain"
        width: int = 3

    family = registry.register(registry.ModelFamily(names={"plain_model": "."}, build=None,
                                                    configs=(Plain,)))
    try:
        config = model_config_from_dict({"plain": {"width": 5}})
        assert config.flat()["plain_width"] == 5
        assert with_model_options(config, plain_width=7).family(Plain).width == 7
    finally:
        registry.unregister(family)


def test_a_config_section_or_flat_name_that_is_taken_is_refused():
    @dataclass(frozen=True)
    class Clash(FamilyConfig):
        KEY = "autoheri"
        x: int = 0

    @dataclass(frozen=True)
    class Shadow(FamilyConfig):
        KEY = "shadow"
        LEGACY = {"dropout": "p"}
        p: float = 0.0

    for cls, message in ((Clash, "section 'autoheri'"), (Shadow, r"\['dropout'\] are taken")):
        with pytest.raises(ValueError, match=message):
            registry.register(registry.ModelFamily(names={"x_model": "."}, build=None,
                                                   configs=(cls,)))
    assert "x_model" not in registry.model_names()


def test_a_fresh_run_removes_every_familys_leftovers(tmp_path):
    from models.train import STALE, remove_stale
    run = tmp_path / "run"
    (run / "search" / "checkpoints").mkdir(parents=True)
    (run / "autoheri_architecture.json").write_text("{}")
    (run / "keep.txt").write_text("mine")
    remove_stale(str(run), STALE + registry.stale_files())
    assert sorted(p.name for p in run.iterdir()) == ["keep.txt"]


def test_predict_frame_keeps_the_first_rows_of_both_sides(tiny_run, small_processed):
    from models.predict import predict_frame
    head = predict_frame(tiny_run, small_processed, "test", rows=100)
    whole = predict_frame(tiny_run, small_processed, "test")
    assert len(head) == 100
    assert head.equals(whole.head(100))
    with pytest.raises(RuntimeError, match="not aligned"):
        predict_frame(tiny_run, small_processed, "test",
                      context=whole[[C.CLICK]].iloc[::-1].reset_index(drop=True))
