"""models.train end to end: run directory contents, export, and kill-and-resume with SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from models.config import ModelConfig, TrainConfig, load_configs, model_config_from_flat
from models.train import main, train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL_MODEL = model_config_from_flat(dict(embedding_dim=4, tower_units=(16, 8),
                                          mmoe_expert_units=(16,)))
#: The run of ``esmm_run``: also the uninterrupted reference of the kill-and-resume test, which
#: trains the same run in subprocesses from this YAML.
SEED = 3
SMALL_TRAIN = TrainConfig(batch_size=256, epochs=2, checkpoint_every=5)
RUN_YAML = {"model": {"embedding_dim": 4, "tower_units": [16, 8], "mmoe_expert_units": [16]},
            "train": {"batch_size": 256, "epochs": 2, "checkpoint_every": 5}}


@pytest.fixture(scope="module")
def esmm_run(tmp_path_factory, small_processed):
    """``(run_dir, metrics, trainer)``: a run of ``train()`` in this process, with the Trainer
    it built (whose model is the one in memory at the end of training)."""
    import models.train as mt
    made = []

    class RecordingTrainer(mt.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    run_dir = str(tmp_path_factory.mktemp("runs") / "esmm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mt, "Trainer", RecordingTrainer)
        result = train("esmm", small_processed, run_dir, seed=SEED, model_config=SMALL_MODEL,
                       train_config=SMALL_TRAIN, progress=False)
    assert len(made) == 1
    return run_dir, result, made[0]


def test_run_dir_holds_config_metrics_saved_model_signature_and_logs(esmm_run):
    run_dir, result, _ = esmm_run
    for name in ("config.json", "metrics.json", "signature.json", "history.json"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    assert os.path.isfile(os.path.join(run_dir, "saved_model", "saved_model.pb"))
    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    assert cfg["model"] == "esmm" and cfg["seed"] == SEED
    assert cfg["train_config"]["batch_size"] == 256
    assert not {f["name"] for f in cfg["features"]} & {"p_click", "purchase_counterfactual"}
    sig = json.load(open(os.path.join(run_dir, "signature.json")))
    assert set(sig["outputs"]) == {"pctr", "pcvr", "pctcvr"}
    assert "user_recent_cats__offsets" in sig["inputs"]


def test_metrics_json_has_history_and_test_metrics_below_the_oracle(esmm_run):
    run_dir, result, _ = esmm_run
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert len(metrics["history"]) == 2 and metrics["samples_per_second"] > 0
    assert all(0.5 < h["valid_ctr_auc"] <= 1.0 for h in metrics["history"])
    test = metrics["test"]
    for key in ("ctr_auc", "cvr_auc_clicked", "ctcvr_auc", "entire_space_cvr_auc",
                "field_rce_app"):
        assert np.isfinite(test[key]), key
    assert 0.5 < test["ctr_auc"] < test["oracle_ctr_auc"]
    assert test["entire_space_cvr_auc"] < test["oracle_entire_space_cvr_auc"]


def test_exported_saved_model_and_stored_predictions_equal_the_model_in_memory(
        esmm_run, small_processed):
    """The SavedModel's signature and ``predictions_test.parquet`` give what the trained Keras
    model (best epoch restored) computes on the same test batches."""
    import tensorflow as tf

    from models.data import batches, model_columns, split_dataset
    from models.export import cast_to_signature
    run_dir, _, trainer = esmm_run
    ds = split_dataset(small_processed, "test",
                       model_columns(trainer.train_ds.schema, trainer.targets))
    serve = tf.saved_model.load(os.path.join(run_dir, "saved_model")).signatures[
        "serving_default"]
    specs = serve.structured_input_signature[1]
    memory, exported = {"pctr": [], "pcvr": []}, {"pctr": [], "pcvr": []}
    for x, _ in batches(ds, 4096, shuffle=False):
        out = trainer.model(x, training=False)
        got = serve(**cast_to_signature(x, specs))
        for k in memory:
            memory[k].append(np.asarray(out[k]).reshape(-1))
            exported[k].append(got[k].numpy().reshape(-1))
    stored = pd.read_parquet(os.path.join(run_dir, "predictions_test.parquet"))
    for k in memory:
        mem = np.concatenate(memory[k])
        assert len(mem) == len(stored) > 1000
        np.testing.assert_allclose(np.concatenate(exported[k]), mem, rtol=0, atol=1e-6)
        np.testing.assert_allclose(stored[k].to_numpy(), mem, rtol=0, atol=1e-6)
    assert np.allclose(stored["pctcvr"], stored["pctr"] * stored["pcvr"], rtol=1e-5)
    assert not np.allclose(mem, mem[0])  # real per-row predictions, not a constant


def _train_cmd(data, out, config, resume=False):
    cmd = [sys.executable, "-m", "models.train", "--model", "esmm", "--data", data, "--out", out,
           "--seed", str(SEED), "--config", config, "--no-progress"]
    return cmd + (["--resume"] if resume else [])


def _checkpoint_steps(run_dir):
    ckpt = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(ckpt):
        return []
    return sorted(int(f.split("-")[1].split(".")[0]) for f in os.listdir(ckpt)
                  if f.startswith("ckpt-") and f.endswith(".index"))


def test_sigkilled_and_resumed_run_equals_the_uninterrupted_run(tmp_path, small_processed,
                                                              esmm_run):
    """Killed (SIGKILL) mid-epoch and resumed, a run ends with the same model as the same run
    never interrupted (``esmm_run``: same data, seed and settings): same batches in the same
    order, same optimizer state (the test-day predictions agree to float tolerance)."""
    reference = esmm_run[0]
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(RUN_YAML))

    out = str(tmp_path / "run")
    proc = subprocess.Popen(_train_cmd(small_processed, out, str(config)), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not [s for s in _checkpoint_steps(out) if s >= 15]:
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(_checkpoint_steps(out))
    rows = json.load(open(os.path.join(small_processed, "manifest.json")))["rows_out"]["train"]
    steps_per_epoch = -(-rows // 256)
    assert 15 <= killed_at < steps_per_epoch  # mid-epoch: the resume must skip batches
    assert not os.path.exists(os.path.join(out, "metrics.json"))

    done = subprocess.run(_train_cmd(small_processed, out, str(config), resume=True), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["steps"] == 2 * steps_per_epoch
    assert [h["epoch"] for h in metrics["history"]] == [0, 1]
    assert min(_checkpoint_steps(out)) >= killed_at
    got = pd.read_parquet(os.path.join(out, "predictions_test.parquet"))
    want = pd.read_parquet(os.path.join(reference, "predictions_test.parquet"))
    for k in ("pctr", "pcvr"):
        np.testing.assert_allclose(got[k].to_numpy(), want[k].to_numpy(), rtol=0, atol=1e-6,
                                   err_msg=k)
    ref_metrics = json.load(open(os.path.join(reference, "metrics.json")))
    assert metrics["best_val_loss"] == pytest.approx(ref_metrics["best_val_loss"], abs=1e-7)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, small_processed, capsys):
    code = main(["--model", "esmm", "--data", small_processed, "--out", str(tmp_path / "none"),
                 "--resume", "--no-progress"])
    assert code == 2 and "no checkpoint" in capsys.readouterr().err


def test_config_file_sections_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  embedding_dim: 8\ntrain:\n  epochs: 5\n")
    mcfg, tcfg = load_configs(str(path))
    assert mcfg.embedding_dim == 8 and tcfg.epochs == 5
    path.write_text("train:\n  epochz: 5\n")
    with pytest.raises(ValueError, match="epochz"):
        load_configs(str(path))


def test_an_invalid_config_value_names_the_file_and_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  optimizer: adam\n  lr_schedule: cosine_dense\n")
    with pytest.raises(ValueError, match=r"c\.yaml: train: The 'lr_schedule' parameter"):
        load_configs(str(path))


def test_the_resume_test_config_file_is_the_in_process_reference_config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(RUN_YAML))
    assert load_configs(str(path)) == (SMALL_MODEL, SMALL_TRAIN)


def test_defaults_are_the_settings_selected_on_the_validation_day():
    selected = load_configs(os.path.join(REPO, "models", "configs", "selected_4m.yaml"))
    assert selected == (ModelConfig(), TrainConfig())
    assert TrainConfig().lr_schedule == "cosine_dense" and ModelConfig().ctcvr_weight == 3


def test_the_equal_settings_comparison_config_pins_the_paper_weight_and_a_constant_rate():
    model, train = load_configs(os.path.join(REPO, "models", "configs", "compare.yaml"))
    assert model.ctcvr_weight == 1 and train.lr_schedule == "constant"
    assert train.learning_rate == 0.002 and train.epochs == 1


def test_a_run_recorded_before_a_config_field_existed_is_the_same_run_at_its_default(tmp_path):
    """``same_run`` fills fields added to the dataclasses later with their defaults: a run
    trained before ``ctcart_weight`` existed is reused, one with a changed value is not."""
    from models.train import run_identity, same_run
    identity = run_identity("esmm", "/data", 0, ModelConfig(), TrainConfig())
    recorded = json.loads(json.dumps(identity))
    del recorded["model_config"]["ctcart_weight"]
    del recorded["model_config"]["autoheri_search"]
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    assert same_run(str(tmp_path), identity)
    changed = run_identity("esmm", "/data", 0, model_config_from_flat(dict(ctcart_weight=2.0)),
                           TrainConfig())
    assert not same_run(str(tmp_path), changed)
