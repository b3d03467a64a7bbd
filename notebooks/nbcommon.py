"""What the notebooks share: the work directory, the data and the runs that more than one of them
needs, and a few small helpers.

:func:`dataset`, :func:`trained` (:func:`esmm_run`) and :func:`calibration` build their
artifact with the project's own functions (``preprocessing.generate``, ``preprocessing.run``,
``models.train``, ``calibration.calibrate``) the first time and reuse it afterwards, so that
each notebook runs alone (it builds what it lacks) and the five, run in order on one work directory
(``EXTCVR_NB_WORKDIR``), build nothing twice. Notebook 01 shows the data steps cell by cell and
notebook 02 the training calls; the others call these functions.

Sizes: below ``BIG_ROWS`` rows the data is a small world (a small catalogue, 4 days, as the
test suite's fixtures in ``tests/conftest.py``) and the models are tiny (4-wide embeddings, 16-8
towers, 2 short epochs): numbers from them are noise, only the mechanics are real. From
``BIG_ROWS`` on, the default world (7 days, 1M users) and the settings selected on the 4M-row
data (``models/configs/``).
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

#: The repository root (this file is ``notebooks/nbcommon.py``).
REPO = Path(__file__).resolve().parents[1]
#: From this many rows on, the default world and the selected model settings; below, tiny ones.
BIG_ROWS = 1_000_000
#: The seed of every training run of the notebooks.
TRAIN_SEED = 1


def work_dir(workdir: Optional[str] = None) -> str:
    """``workdir`` (created when missing), or a fresh temporary directory when it is None."""
    if not workdir:
        return tempfile.mkdtemp(prefix="extcvr-notebooks-")
    os.makedirs(workdir, exist_ok=True)
    return os.path.abspath(workdir)


def generator_config(rows: int):
    """The simulator's configuration for ``rows`` impressions: the small world of the test
    suite below ``BIG_ROWS`` (50k users, 5k items, 4 days: train days 0-1, validation day 2,
    test day 3), the default world otherwise (7 days)."""
    from preprocessing.simulator.config import GeneratorConfig
    if rows >= BIG_ROWS:
        return GeneratorConfig()
    return GeneratorConfig(n_users=50_000, n_items=5_000, n_shops=500, n_brands=200, days=4,
                           rows_per_block=8192, pilot_rows=20_000)


@dataclass(frozen=True)
class Data:
    """The directories of one generated world: ``root`` holds everything built from it."""

    root: str
    generated: str   # preprocessing.generate: day_NNN.parquet + dataset_spec.json
    processed: str   # preprocessing.run: train/ valid/ test/ workflow/

    @property
    def runs(self) -> str:
        return os.path.join(self.root, "runs")


def data_paths(workdir: str, rows: int, seed: int) -> Data:
    """Where the data of ``rows`` impressions from generator seed ``seed`` lives in ``workdir``."""
    root = os.path.join(workdir, f"data-{rows}-seed{seed}")
    return Data(root, os.path.join(root, "generated"), os.path.join(root, "processed"))


def dataset(workdir: str, rows: int, seed: int) -> Data:
    """Generate and preprocess ``rows`` impressions (reused when already there): what notebook
    01 does step by step. Both outputs appear atomically, so a manifest means a finished one."""
    from preprocessing.generate import generate
    from preprocessing.run import run
    data = data_paths(workdir, rows, seed)
    if not os.path.isfile(os.path.join(data.generated, "manifest.json")):
        generate(rows, seed, data.generated, config=generator_config(rows), progress=False)
    if not os.path.isfile(os.path.join(data.processed, "manifest.json")):
        run(data.generated, data.processed, progress=False)
    return data


def configs(model: str, rows: int):
    """``(ModelConfig, TrainConfig)`` of ``model`` for data of ``rows`` impressions: below
    ``BIG_ROWS`` the test suite's tiny model sizes, batches of 1024 and 2 epochs (the UKD
    teacher 1); otherwise the committed selections (``models/configs/``, the ``models.train``
    defaults)."""
    from models.config import TrainConfig, load_configs, model_config_from_flat
    if rows >= BIG_ROWS:
        committed = {"autoheri": "autoheri_4m.yaml", "ukd_teacher": "ukd_teacher_4m.yaml"}
        name = committed.get(model)
        return load_configs(str(REPO / "models" / "configs" / name) if name else None)
    train = TrainConfig(batch_size=1024, epochs=2, checkpoint_every=1000)
    if model == "autoheri":  # search on half the planned steps, keep the 3 best edges
        return model_config_from_flat(dict(embedding_dim=4, tower_units=(16, 8),
                                           autoheri_edge_lr=0.05,
                                           autoheri_search_fraction=0.5, autoheri_derive="topk",
                                           autoheri_top_k=3)), train
    if model == "ukd_teacher":
        return (model_config_from_flat(dict(embedding_dim=4, ukd_representation_units=(16,),
                                            ukd_head_units=(8,))),
                TrainConfig(batch_size=1024, epochs=1, checkpoint_every=1000))
    return model_config_from_flat(dict(embedding_dim=4, tower_units=(16, 8),
                                       mmoe_expert_units=(16,))), train


def trained(model: str, data_dir: str, runs_dir: str, rows: int,
            seed: int = TRAIN_SEED) -> Tuple[str, Dict]:
    """``(run directory, metrics)`` of ``models.train.train(model, data_dir, ...)`` with
    :func:`configs`; a finished run of the same model, data, seed and settings is reused."""
    from models.train import run_identity, same_run, train
    model_config, train_config = configs(model, rows)
    run_dir = os.path.join(runs_dir, model)
    metrics_path = os.path.join(run_dir, "metrics.json")
    identity = run_identity(model, data_dir, seed, model_config, train_config)
    if os.path.isfile(metrics_path) and same_run(run_dir, identity):
        return run_dir, json.load(open(metrics_path))
    return run_dir, train(model, data_dir, run_dir, seed, model_config, train_config,
                          progress=False)


def esmm_run(data: Data, rows: int) -> str:
    """The ESMM run that notebooks 02, 03 and 04 share (trained on first use)."""
    return trained("esmm", data.processed, data.runs, rows)[0]


def calibration(run_dir: str, data: Data) -> Tuple[str, Dict]:
    """``(directory, calibration.json content)`` of ``calibration.calibrate`` with every method by
    app (fit on the validation day, scored on the test day, ``adacalib_trend`` reading the
    training days); ``DIR/adacalib/`` is the AdaCalib artifact that notebook 04 serves."""
    from calibration.calibrate import calibrate, parse_methods
    out = os.path.join(data.root, "calibration")
    result_path = os.path.join(out, "calibration.json")
    if os.path.isfile(result_path):
        result = json.load(open(result_path))
        if result.get("run") == os.path.abspath(run_dir):
            return out, result
    result = calibrate([run_dir], data.processed, parse_methods("all"), ["app_id"], out,
                       history_split="train")
    return out, result


def raw_rows(data: Data, split: str = "test"):
    """The raw (not preprocessed) rows of a split's days: what a serving request carries, plus
    the labels and the simulator's truth (which a request ignores)."""
    import pandas as pd
    manifest = json.load(open(os.path.join(data.processed, "manifest.json")))
    files = [os.path.join(manifest["input"], f) for f in manifest["files"][split]]
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def app_names(data: Data) -> Dict[int, str]:
    """``{raw app index: media app name}`` from the generator's configuration."""
    config = json.load(open(os.path.join(data.generated, "generator_config.json")))
    return {i: app["name"] for i, app in enumerate(config["apps"])}


def committed_result(pattern: str) -> str:
    """The newest committed file of ``benchmarks/results/`` matching ``pattern`` (the names
    carry their date, so the last in name order is the newest)."""
    found = sorted(glob.glob(str(REPO / "benchmarks" / "results" / pattern)))
    if not found:
        raise FileNotFoundError(f"no benchmarks/results/{pattern}")
    return found[-1]


def scalars(run_dir: str, tag: str = "train/loss"):
    """``(steps, values)`` of one TensorBoard scalar that ``models.train`` logged (every 10
    steps for ``train/loss``; the epoch history in ``metrics.json`` has no per-step values),
    from the run's newest event file: a fresh run over an old run directory adds a new file
    beside the old ones."""
    import numpy as np
    import tensorflow as tf
    files = glob.glob(os.path.join(run_dir, "tensorboard", "events.*"))
    if not files:
        return np.array([], dtype=int), np.array([])
    points = {}
    for record in tf.data.TFRecordDataset(max(files, key=os.path.getmtime)):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            if value.tag == tag:
                points[event.step] = float(tf.make_ndarray(value.tensor))
    steps = sorted(points)
    return np.array(steps), np.array([points[s] for s in steps])


def show(fig) -> None:
    """Display a figure as a PNG and close it. Explicit on purpose: several project plot
    functions switch matplotlib to the ``Agg`` backend (they write PNG files; AutoHERI's
    training draws its architecture), after which a notebook no longer shows figures by itself
    and ``display(fig)`` may give text only."""
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image, display
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buffer.getvalue(), format="png"))
