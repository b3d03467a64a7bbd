"""``models.train --model autoheri``: search, derive and retrain in one run; resume across the
stages; the bi-level search's held-out batches; the 2-stage chain on real Ali-CCP rows."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from models.autoheri.architecture import Architecture, derive_edges
from models.config import TrainConfig, model_config_from_flat
from models.train import main, train

SEED = 2  # the seed of the ``autoheri_run`` fixture (tests/conftest.py)


def _autoheri(data, run_dir, model_config, train_config, resume=False):
    return train("autoheri", data, run_dir, SEED, model_config, train_config, resume=resume,
                 progress=False)


def test_one_command_searches_derives_and_retrains(autoheri_run):
    run_dir, metrics, _, _ = autoheri_run
    arch = Architecture.load(os.path.join(run_dir, "autoheri_architecture.json"))
    assert arch.model == "autoheri" and arch.tasks == ("click", "cart", "purchase")
    assert len(arch.candidates) == len(arch.probabilities) == 12
    assert arch.kept == derive_edges(arch.candidates, arch.probabilities, "topk", top_k=3)
    assert np.abs(np.array(arch.probabilities) - 0.5).min() > 0  # every edge moved
    assert arch.search["steps"] == 8 and arch.settings["autoheri_search"] == "joint"
    assert os.path.getsize(os.path.join(run_dir, "autoheri_architecture.png")) > 10_000
    assert metrics["search"] == arch.search and metrics["steps"] == 16
    for key in ("entire_space_cvr_auc", "ctcvr_auc", "cvr_auc_clicked", "field_rce_app"):
        assert key in metrics["test"]
    assert json.load(open(os.path.join(run_dir, "config.json")))["model"] == "autoheri"


def test_the_exported_model_holds_exactly_the_kept_edges(autoheri_run):
    import tensorflow as tf
    run_dir = autoheri_run[0]
    arch = Architecture.load(os.path.join(run_dir, "autoheri_architecture.json"))
    loaded = tf.saved_model.load(os.path.join(run_dir, "saved_model"))
    names = {part for v in loaded.model_variables for part in v.name.split("/")
             if part.startswith("edge_")}
    assert names == {e.layer_name for e in arch.kept}
    assert not any("edge_logits" in v.name for v in loaded.model_variables)


def test_resume_after_the_search_reuses_it_and_ends_as_the_uninterrupted_run(
        autoheri_run, small_processed, tmp_path, monkeypatch):
    """The search stops (an exception after 6 of its 8 steps, past the step-4 checkpoint), the
    run is resumed (search from its checkpoint, derive, retrain), then the retrain stops and
    is resumed again: the architecture and the test predictions equal the uninterrupted run's,
    and the finished search is not run twice."""
    import models.autoheri.search as S
    import models.train as T
    reference, _, model_config, train_config = autoheri_run
    run_dir = str(tmp_path / "run")

    def interrupting(cls, stop_at):
        class Interrupted(cls):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                step, calls = self._train_step, []

                def counted(x, y):
                    calls.append(1)
                    if len(calls) > stop_at:
                        raise KeyboardInterrupt("simulated crash")
                    return step(x, y)
                self._train_step = counted
        return Interrupted

    monkeypatch.setattr(S, "SearchTrainer", interrupting(S.SearchTrainer, 6))
    with pytest.raises(KeyboardInterrupt):
        _autoheri(small_processed, run_dir, model_config, train_config)
    assert not os.path.exists(os.path.join(run_dir, "autoheri_architecture.json"))
    monkeypatch.undo()
    monkeypatch.setattr(T, "Trainer", interrupting(T.Trainer, 9))
    with pytest.raises(KeyboardInterrupt):  # search resumed and finished; retrain interrupted
        _autoheri(small_processed, run_dir, model_config, train_config, resume=True)
    arch_path = os.path.join(run_dir, "autoheri_architecture.json")
    written = os.stat(arch_path).st_mtime_ns
    monkeypatch.undo()

    def no_search(*args, **kwargs):
        raise AssertionError("the finished search ran again")
    monkeypatch.setattr(S.SearchTrainer, "fit", no_search)
    _autoheri(small_processed, run_dir, model_config, train_config, resume=True)
    assert os.stat(arch_path).st_mtime_ns == written
    got, want = (Architecture.load(os.path.join(d, "autoheri_architecture.json"))
                 for d in (run_dir, reference))
    assert got.kept == want.kept
    np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=0, atol=1e-6)
    a, b = (pd.read_parquet(os.path.join(d, "predictions_test.parquet"))
            for d in (run_dir, reference))
    np.testing.assert_allclose(a["pcvr"].to_numpy(), b["pcvr"].to_numpy(), rtol=0, atol=1e-6)


def test_the_bilevel_search_steps_edges_on_the_first_half_of_the_validation_day(
        small_processed):
    from models.autoheri.search import SearchTrainer
    from preprocessing.splits import read_split
    cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(8,), autoheri_search="bilevel",
                                      autoheri_bilevel_every=2))
    loop = TrainConfig(batch_size=512, max_steps=6, checkpoint_every=100)
    trainer = SearchTrainer(small_processed, None, SEED, cfg, loop, progress=False)
    rows = trainer.heldout_ds.num_rows
    n = (rows // 2) // 512
    stream = trainer._heldout()
    seen = [next(stream) for _ in range(n + 1)]
    valid = read_split(os.path.join(small_processed, "valid"), ["item_id"])["item_id"].to_numpy()
    got = np.concatenate([np.asarray(x["item_id"]).reshape(-1) for x, _ in seen[:n]])
    np.testing.assert_array_equal(got, valid[:n * 512])  # file order, first half only
    assert n * 512 <= rows // 2
    np.testing.assert_array_equal(np.asarray(seen[n][0]["item_id"]),
                                  np.asarray(seen[0][0]["item_id"]))  # then it cycles


def test_a_bilevel_run_records_its_edge_steps(small_processed, tmp_path):
    cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(8,), autoheri_search="bilevel",
                                      autoheri_search_fraction=0.5, autoheri_bilevel_every=2,
                                      autoheri_derive="topk", autoheri_top_k=2))
    loop = TrainConfig(batch_size=1024, max_steps=8, checkpoint_every=100)
    _autoheri(small_processed, str(tmp_path / "run"), cfg, loop)
    arch = Architecture.load(str(tmp_path / "run" / "autoheri_architecture.json"))
    assert arch.search["steps"] == 4 and arch.search["edge_steps"] == 2
    assert len(arch.kept) == 2


def test_an_ablation_run_records_its_fixed_edges(small_processed, tmp_path):
    cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(16, 8),
                                      autoheri_random_edges=5))
    loop = TrainConfig(batch_size=1024, max_steps=3, checkpoint_every=100)
    train("autoheri_random", small_processed, str(tmp_path / "run"), SEED, cfg, loop,
          progress=False)
    arch = Architecture.load(str(tmp_path / "run" / "autoheri_architecture.json"))
    assert arch.model == "autoheri_random" and len(arch.kept) == 5
    assert arch.probabilities is None
    assert os.path.getsize(str(tmp_path / "run" / "autoheri_architecture.png")) > 10_000


@pytest.mark.parametrize("name,count", [("autoheri_none", 0), ("autoheri_all", 12),
                                        ("autoheri_random", 5)])
def test_each_ablation_records_its_fixed_edges(small_processed, tmp_path, name, count):
    """The record that ``models.train`` writes for an ablation (its training: the test above)."""
    from models.autoheri.model import build_autoheri
    from models.autoheri.search import write_fixed_architecture
    from models.data import features_and_targets
    cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(16, 8),
                                      autoheri_random_edges=5))
    features, targets, _ = features_and_targets(small_processed)
    model = build_autoheri(name, features, cfg, targets, seed=SEED)
    write_fixed_architecture(name, model, cfg, str(tmp_path))
    arch = Architecture.load(str(tmp_path / "autoheri_architecture.json"))
    assert arch.model == name and arch.kept == model.edges and len(arch.kept) == count
    assert arch.probabilities is None


def test_the_two_stage_chain_trains_on_converted_real_aliccp_rows(tmp_path, capsys):
    from preprocessing.convert import main as convert
    from preprocessing.run import run
    samples = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                           "data", "real-samples")
    inputs = [os.path.join(samples, f"ali_ccp_{s}_sample.csv") for s in ("train", "val", "test")]
    assert convert(["--format", "aliccp-csv", "--input", *inputs, "--out",
                    str(tmp_path / "ccp")]) == 0
    run(str(tmp_path / "ccp"), str(tmp_path / "proc"), progress=False)
    config = tmp_path / "cfg.yaml"
    config.write_text("model: {embedding_dim: 4, tower_units: [8, 4]}\n"
                      "train: {batch_size: 16, max_steps: 6, checkpoint_every: 100}\n")
    assert main(["--model", "autoheri", "--data", str(tmp_path / "proc"), "--out",
                 str(tmp_path / "run"), "--config", str(config), "--no-progress"]) == 0
    arch = Architecture.load(str(tmp_path / "run" / "autoheri_architecture.json"))
    assert arch.tasks == ("click", "purchase") and len(arch.candidates) == 4
    assert "autoheri" in capsys.readouterr().out


def test_the_recorded_4m_choice_is_the_esmm_selection_with_the_joint_search():
    """``models/configs/autoheri_4m.yaml`` (the validation-day choice) differs from ESMM's
    ``selected_4m.yaml`` only in AutoHERI's own fields, and its search is the joint one."""
    from models.config import load_configs
    configs = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))), "models", "configs")
    (am, at), (em, et) = (load_configs(os.path.join(configs, f))
                          for f in ("autoheri_4m.yaml", "selected_4m.yaml"))
    assert at == et and am.flat()["autoheri_search"] == "joint"
    assert am.flat()["autoheri_random_edges"] == 2 and am.flat()["autoheri_search_fraction"] == 0.25
    am, em = am.flat(), em.flat()
    differ = {k for k, v in am.items() if em[k] != v}
    assert differ == {"autoheri_random_edges"}


def test_the_search_length_in_epochs_overrides_the_fraction_of_the_planned_steps():
    from models.autoheri.search import search_train_config
    tcfg = TrainConfig(batch_size=100, epochs=2)
    by_fraction = search_train_config(tcfg, model_config_from_flat(
        dict(autoheri_search_fraction=0.25)), rows=1000)
    assert by_fraction.max_steps == 5 and by_fraction.epochs == 1        # 0.25 x 20 steps
    by_epochs = search_train_config(tcfg, model_config_from_flat(
        dict(autoheri_search_fraction=0.25, autoheri_search_epochs=2.5)), rows=1000)
    assert by_epochs.max_steps == 25 and by_epochs.epochs == 3           # 2.5 x 10 steps
