"""Fixtures of the serving tests: a tiny trained run on the small dataset, a hand-written
calibrator, and the exported repository (one server per test module is started by the tests)."""

import json
import os

import pytest

from models.config import ModelConfig, TrainConfig

SMALL_MODEL = ModelConfig(embedding_dim=4, tower_units=(16, 8), mmoe_expert_units=(16,))
MAX_BATCH = 512


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, small_processed) -> str:
    """An ESMM run trained for a few steps on ``small_processed``."""
    from models.train import train
    run_dir = str(tmp_path_factory.mktemp("serving_run") / "esmm")
    train("esmm", small_processed, run_dir, seed=1, model_config=SMALL_MODEL,
          train_config=TrainConfig(batch_size=1024, epochs=1, max_steps=8,
                                   checkpoint_every=1000), progress=False)
    return run_dir


@pytest.fixture(scope="session")
def calibrator_dir(tmp_path_factory):
    """A calibrator.json in the calibration issue's format (a logit offset per app id), or
    None while ``models.calibration.artifact`` is absent (the identity path is served)."""
    from serving.calibration import calibrator_available
    if not calibrator_available():
        return None
    d = tmp_path_factory.mktemp("cal")
    spec = {"format": "extcvr.calibrator", "format_version": 1, "method": "test",
            "fields": ["app_id"], "eps": 1e-7,
            "stages": [{"type": "logit_offset", "field": "app_id",
                        "values": [2, 3, 4, 5, 6], "offsets": [0.5, -0.3, 0.2, -0.7, 0.1]}],
            "meta": {}}
    (d / "calibrator.json").write_text(json.dumps(spec))
    return str(d)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_run, small_processed, calibrator_dir) -> str:
    from serving.export import export
    out = str(tmp_path_factory.mktemp("triton") / "repo")
    export(tiny_run, os.path.join(small_processed, "workflow"), out, calibrator=calibrator_dir,
           max_batch_size=MAX_BATCH, delay_us=100)
    return out
