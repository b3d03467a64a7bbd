"""Test-wide set-up: the repository root on sys.path, and shared small-dataset fixtures."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from preprocessing.generate import generate  # noqa: E402
from preprocessing.simulator.config import GeneratorConfig  # noqa: E402

SMALL_ROWS = 40_000
#: The field of the session AdaCalib calibrator (``adacalib``).
CAL_FIELDS = ("app_id",)
SMALL_DAYS = 4


@pytest.fixture(scope="session")
def small_config() -> GeneratorConfig:
    """A small-catalogue config so that 40k rows exercise vocabularies and the hashed tail."""
    return GeneratorConfig(n_users=50_000, n_items=5_000, n_shops=500, n_brands=200,
                           days=SMALL_DAYS, rows_per_block=8192, pilot_rows=20_000)


@pytest.fixture(scope="session")
def small_generated(tmp_path_factory, small_config) -> str:
    """A generated dataset directory (4 days, 40k rows). Treat it as read-only."""
    out = str(tmp_path_factory.mktemp("gen") / "data")
    generate(SMALL_ROWS, seed=3, out=out, config=small_config, progress=False)
    return out


@pytest.fixture(scope="session")
def small_processed(tmp_path_factory, small_generated) -> str:
    """``preprocessing.run`` output of ``small_generated``. Treat it as read-only."""
    from preprocessing.run import run
    out = str(tmp_path_factory.mktemp("proc") / "processed")
    run(small_generated, out, progress=False)
    return out


@pytest.fixture
def generated_copy(tmp_path, small_generated) -> str:
    """A writable copy of the small dataset, for corrupting."""
    dst = str(tmp_path / "input")
    shutil.copytree(small_generated, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, small_processed) -> str:
    """An ESMM run of ``models.train`` for a few steps on ``small_processed`` (small towers):
    for the tests of what comes after training (calibration, serving). Treat it as read-only."""
    from models.config import TrainConfig, model_config_from_flat
    from models.train import train
    run_dir = str(tmp_path_factory.mktemp("tiny_run") / "esmm")
    train("esmm", small_processed, run_dir, seed=1,
          model_config=model_config_from_flat(dict(embedding_dim=4, tower_units=(16, 8),
                                                   mmoe_expert_units=(16,))),
          train_config=TrainConfig(batch_size=1024, epochs=1, max_steps=12,
                                   checkpoint_every=1000), progress=False)
    return run_dir


@pytest.fixture(scope="session")
def adacalib(tmp_path_factory, tiny_run, small_processed):
    """``(CAL_DIR, fitted AdaCalibCalibrator)``: AdaCalib by app fitted on the clicked rows of
    the validation day, saved as ``calibration.calibrate`` saves it."""
    from calibration.calibrate import split_frame
    from calibration import make_calibrator
    frame = split_frame(tiny_run, small_processed, "valid", CAL_FIELDS)
    clicked = frame["click"] == 1
    cal = make_calibrator("adacalib", CAL_FIELDS).fit(
        frame["pcvr"][clicked], frame["purchase"][clicked],
        {f: frame[f][clicked] for f in CAL_FIELDS})
    cal_dir = str(tmp_path_factory.mktemp("cal") / "adacalib")
    cal.save(cal_dir)
    return cal_dir, cal


@pytest.fixture(scope="session")
def autoheri_run(tmp_path_factory, small_processed):
    """One uninterrupted AutoHERI run of ``models.train`` (search on half the steps, derive the
    top 3 edges, retrain) on ``small_processed``: ``(run_dir, metrics, model_config,
    train_config)``, for the AutoHERI and serving tests. Treat it as read-only."""
    from models.config import TrainConfig, model_config_from_flat
    from models.train import train
    model_config = model_config_from_flat(dict(embedding_dim=4, tower_units=(16, 8),
                                               autoheri_edge_lr=0.05,
                                               autoheri_search_fraction=0.5, autoheri_derive="topk",
                                               autoheri_top_k=3))
    train_config = TrainConfig(batch_size=1024, epochs=1, max_steps=16, checkpoint_every=4)
    run_dir = str(tmp_path_factory.mktemp("autoheri_run") / "run")
    metrics = train("autoheri", small_processed, run_dir, 2, model_config, train_config,
                    progress=False)
    return run_dir, metrics, model_config, train_config


@pytest.fixture(scope="session")
def ukd_teacher_run(tmp_path_factory, small_processed) -> str:
    """A UKD teacher run (a few steps, small layers) on ``small_processed``. Read-only."""
    from models.config import TrainConfig, model_config_from_flat
    from models.train import train
    run_dir = str(tmp_path_factory.mktemp("ukd_teacher") / "run")
    train("ukd_teacher", small_processed, run_dir, 0,
          model_config_from_flat(dict(embedding_dim=4, ukd_representation_units=(16,),
                                      ukd_head_units=(8,))),
          TrainConfig(batch_size=2048, max_steps=6, checkpoint_every=1000), progress=False)
    return run_dir


@pytest.fixture(scope="session")
def pseudolabelled(tmp_path_factory, ukd_teacher_run, small_processed) -> str:
    """``small_processed`` with the teacher's pCVR (``models.pseudolabel``). Read-only."""
    from models.pseudolabel import main
    out = str(tmp_path_factory.mktemp("pseudolabelled") / "proc_pl")
    assert main(["--teacher", ukd_teacher_run, "--data", small_processed, "--out", out,
                 "--batch-size", "1000", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def ukd_student_run(tmp_path_factory, pseudolabelled) -> str:
    """A ``ukd`` student run (a few steps, small layers, head dropout 0.3, lambda 50) on
    ``pseudolabelled``: for the tests of its export and of its heads' disagreement. Read-only."""
    from models.config import TrainConfig, model_config_from_flat
    from models.train import train
    run_dir = str(tmp_path_factory.mktemp("ukd_student") / "ukd")
    train("ukd", pseudolabelled, run_dir, 0,
          model_config_from_flat(dict(embedding_dim=4, tower_units=(8, 4), ukd_lambda=50.0,
                                      ukd_head_dropout=0.3)),
          TrainConfig(batch_size=2048, max_steps=4, checkpoint_every=1000), progress=False)
    return run_dir


# The HugeCTR path's fixtures (tests/models/hugectr and the serving adapter's tests): the
# workflow schema, the data description and one generated HugeCTR directory of
# ``small_processed`` (all read-only).

@pytest.fixture(scope="session")
def hugectr_schema(small_processed):
    """The saved workflow's output schema of ``small_processed``."""
    from models.hugectr.data import load_workflow_schema
    return load_workflow_schema(small_processed)


@pytest.fixture(scope="session")
def hugectr_data(small_processed, hugectr_schema):
    """``describe(small_processed)``."""
    from models.hugectr.data import describe
    return describe(small_processed, hugectr_schema)


@pytest.fixture(scope="session")
def hugectr_out(tmp_path_factory, small_processed, hugectr_schema) -> str:
    """A ``python -m models.hugectr`` directory of ``small_processed`` (default settings)."""
    from models.hugectr.cli import generate
    out = str(tmp_path_factory.mktemp("hugectr") / "esmm")
    generate(small_processed, out, schema=hugectr_schema)
    return out


@pytest.fixture(scope="session")
def hugectr_desc(hugectr_out) -> dict:
    """Its ``hugectr_data.json``."""
    with open(os.path.join(hugectr_out, "hugectr_data.json")) as fh:
        return json.load(fh)


@pytest.fixture(scope="session")
def hugectr_config(hugectr_out) -> dict:
    """Its ``esmm_config.json``."""
    with open(os.path.join(hugectr_out, "esmm_config.json")) as fh:
        return json.load(fh)
