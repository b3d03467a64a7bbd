"""models.train end to end: run directory contents, export, and kill-and-resume with SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from models.config import ModelConfig, TrainConfig, load_configs
from models.train import main, train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL_MODEL = ModelConfig(embedding_dim=4, tower_units=(16, 8), mmoe_expert_units=(16,))


@pytest.fixture(scope="module")
def esmm_run(tmp_path_factory, small_processed):
    run_dir = str(tmp_path_factory.mktemp("runs") / "esmm")
    result = train("esmm", small_processed, run_dir, seed=1, model_config=SMALL_MODEL,
                   train_config=TrainConfig(batch_size=1024, epochs=2, checkpoint_every=5),
                   progress=False)
    return run_dir, result


def test_run_dir_holds_config_metrics_saved_model_signature_and_logs(esmm_run):
    run_dir, result = esmm_run
    for name in ("config.json", "metrics.json", "signature.json", "history.json"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    assert os.path.isfile(os.path.join(run_dir, "saved_model", "saved_model.pb"))
    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    assert cfg["model"] == "esmm" and cfg["seed"] == 1 and cfg["train_config"]["batch_size"] == 1024
    assert not {f["name"] for f in cfg["features"]} & {"p_click", "purchase_counterfactual"}
    sig = json.load(open(os.path.join(run_dir, "signature.json")))
    assert set(sig["outputs"]) == {"pctr", "pcvr", "pctcvr"}
    assert "user_recent_cats__offsets" in sig["inputs"]


def test_metrics_json_has_history_and_test_metrics_below_the_oracle(esmm_run):
    run_dir, result = esmm_run
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert len(metrics["history"]) == 2 and metrics["samples_per_second"] > 0
    test = metrics["test"]
    for key in ("ctr_auc", "cvr_auc_clicked", "ctcvr_auc", "entire_space_cvr_auc",
                "field_rce_app"):
        assert np.isfinite(test[key]), key
    assert 0.5 < test["ctr_auc"] < test["oracle_ctr_auc"]
    assert test["entire_space_cvr_auc"] < test["oracle_entire_space_cvr_auc"]


def test_exported_saved_model_matches_the_trained_weights(esmm_run, small_processed):
    from models.evaluate import predict_split
    run_dir, _ = esmm_run
    a = predict_split(os.path.join(run_dir, "saved_model"), small_processed, "test")
    b = predict_split(os.path.join(run_dir, "saved_model"), small_processed, "test")
    stored = __import__("pandas").read_parquet(os.path.join(run_dir, "predictions_test.parquet"))
    assert np.allclose(a["pcvr"], b["pcvr"]) and np.allclose(a["pcvr"], stored["pcvr"])
    assert np.allclose(a["pctcvr"], a["pctr"] * a["pcvr"], rtol=1e-5)


def _train_cmd(data, out, config, resume=False):
    cmd = [sys.executable, "-m", "models.train", "--model", "esmm", "--data", data, "--out", out,
           "--seed", "3", "--config", config, "--no-progress"]
    return cmd + (["--resume"] if resume else [])


def _checkpoint_steps(run_dir):
    ckpt = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(ckpt):
        return []
    return sorted(int(f.split("-")[1].split(".")[0]) for f in os.listdir(ckpt)
                  if f.startswith("ckpt-") and f.endswith(".index"))


def test_sigkilled_run_resumes_from_its_last_checkpoint_and_finishes(tmp_path, small_processed):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"embedding_dim": 4, "tower_units": [16, 8]},
        "train": {"batch_size": 256, "epochs": 2, "checkpoint_every": 5}}))
    out = str(tmp_path / "run")
    proc = subprocess.Popen(_train_cmd(small_processed, out, str(config)), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not [s for s in _checkpoint_steps(out) if s >= 15]:
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(_checkpoint_steps(out))
    assert killed_at >= 15 and not os.path.exists(os.path.join(out, "metrics.json"))

    done = subprocess.run(_train_cmd(small_processed, out, str(config), resume=True), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    steps_per_epoch = -(-sum(json.load(open(os.path.join(small_processed, "manifest.json")))
                             ["rows_out"]["train"] for _ in [0]) // 256)
    assert metrics["steps"] == 2 * steps_per_epoch
    assert [h["epoch"] for h in metrics["history"]] == [0, 1]
    assert min(_checkpoint_steps(out)) >= killed_at


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
