"""Train one model on a processed dataset.

Usage::

    python -m models.train --model NAME --data PROC_DIR --out RUN_DIR --seed S
        [--config FILE] [--resume] [--no-progress]

``NAME`` is any name in ``models.registry`` (``python -m models.train --help`` lists them:
naive, naive_shared, esmm, escm2_ips, mmoe, the AutoHERI family, the UKD teacher and students).
The loop (``models.trainer``): LazyAdam (``models/optimizers.py``) at a constant or
cosine-decayed learning rate (``lr_schedule``; ``cosine_dense`` decays the dense weights only),
shuffled batches from the
Merlin TF loader, a validation pass after each epoch, early stopping on the validation loss
(the best epoch's weights are kept), a checkpoint every ``checkpoint_every`` steps.
``--resume`` continues a run that was killed (even by SIGKILL) from its last checkpoint: the
same epoch, the same shuffled order, the batches already trained on skipped, so nothing
beyond the checkpoint is lost.

A family may run a stage before training (``ModelFamily.prepare``): ``--model autoheri`` first
searches and derives its architecture (``models/autoheri/search.py``: ``RUN_DIR/search/``,
``autoheri_architecture.json`` / ``.png``), then trains the derived network here like any other
model; ``--resume`` continues whichever stage was interrupted.

``RUN_DIR`` holds ``config.json`` (resolved), ``metrics.json`` (history, throughput, test
metrics, ``wall_seconds`` from the start of training, or of AutoHERI's search, to its end),
``saved_model/`` (a SavedModel with a ``serving_default`` signature), ``signature.json``,
``checkpoints/`` and ``tensorboard/``. With several GPUs visible to TensorFlow
(``preprocessing.device``) the model trains under ``tf.distribute.MirroredStrategy``, each step's
global batch split across the replicas and every replica's loss weighted by its share of the
rows (``models.distribute``): one step on N replicas equals one step on one replica, tested on
two logical CPU devices; not yet run on GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Dict, List, Optional

from common.atomic import atomic_write_text
from common.quiet import quiet_tensorflow
from common.tables import peak_rss_mb, print_table
from models.trainer import Trainer


def run_identity(model_name: str, data_dir: str, seed: int, model_config, train_config) -> Dict:
    """What makes two runs the same run: the model, the data, the seed and both configs (the
    keys of ``RUN_DIR/config.json`` that ``--resume`` and ``models.compare`` check)."""
    from models.config import configs_to_dict
    return {"model": model_name, "seed": seed, "data": os.path.abspath(data_dir),
            **configs_to_dict(model_config, train_config)}


def same_run(run_dir: str, identity: Dict) -> bool:
    """Whether ``RUN_DIR/config.json`` was written for ``identity`` (:func:`run_identity`)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return False
    from models.config import with_added_defaults
    previous = with_added_defaults(json.load(open(path)))
    return {k: previous.get(k) for k in identity} == json.loads(json.dumps(identity))


def has_checkpoint(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a checkpoint to resume: the run's own, or that of a stage
    before training (a sub-directory's ``checkpoints/``, e.g. AutoHERI's ``search/``)."""
    import glob
    return bool(glob.glob(os.path.join(glob.escape(run_dir), "checkpoints", "checkpoint"))
                or glob.glob(os.path.join(glob.escape(run_dir), "*", "checkpoints",
                                          "checkpoint")))


#: What a fresh run removes from an older run's directory, with each family's ``stale_files``.
STALE = ("checkpoints", "best", "history.json", "metrics.json")


def remove_stale(run_dir: str, names) -> None:
    """Remove the files and directories ``names`` of an older run from ``run_dir``."""
    for name in names:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


def train(model_name: str, data, run_dir: str, seed: int, model_config=None,
          train_config=None, resume: bool = False, progress: bool = True) -> Dict:
    """Train, export and evaluate one model; returns the metrics written to ``metrics.json``.

    ``data`` is the processed dataset's directory or an open
    ``preprocessing.processed.ProcessedData``; it is opened once and handed to every stage."""
    from models import registry
    from models.config import ModelConfig, TrainConfig
    from models.evaluate import evaluate_run_split
    from models.export import export_saved_model
    from preprocessing.processed import ProcessedData

    family = registry.family_of(model_name)
    data = ProcessedData.open(data)
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, "config.json")
    resolved = run_identity(model_name, data.root, seed, model_config, train_config)
    if not resume:  # a fresh run never continues from an older run's checkpoints
        remove_stale(run_dir, STALE + registry.stale_files())
    if resume and os.path.exists(config_path):
        if not same_run(run_dir, resolved):
            raise ValueError(f"{config_path}: --resume with a different configuration than the "
                             f"interrupted run; use a new --out")
    atomic_write_text(config_path, json.dumps(resolved, indent=2))
    started = time.perf_counter()
    prepared = registry.Prepared()
    if family.prepare is not None:  # a stage before training (AutoHERI's search)
        prepared = family.prepare(model_name, data, run_dir, seed, model_config, train_config,
                                  resume, progress)
    trainer = Trainer(model_name, data, run_dir, seed, model_config, train_config, progress,
                      model_factory=prepared.factory)
    if prepared.after_build is not None:
        prepared.after_build(trainer.model, run_dir)
    resolved["features"] = [vars(f) for f in trainer.features]
    resolved["targets"] = list(trainer.targets)
    atomic_write_text(config_path, json.dumps(resolved, indent=2))
    result = trainer.fit(resume=resume and prepared.resume_training)
    result.update(prepared.record or {})
    result["wall_seconds"] = time.perf_counter() - started
    signature = export_saved_model(trainer.model, trainer.features,
                                   os.path.join(run_dir, "saved_model"))
    atomic_write_text(os.path.join(run_dir, "signature.json"), json.dumps(signature, indent=2))
    result["test"] = evaluate_run_split(run_dir, data, "test")
    result["peak_rss_mb"] = peak_rss_mb()
    atomic_write_text(os.path.join(run_dir, "metrics.json"), json.dumps(result, indent=2))
    return result


def own_click_auc_keys(history: List[Dict]) -> List[str]:
    """The history keys of a model's own validation click AUC other than the CTR tower's
    (``valid_discriminator_auc`` of the UKD teacher), in first-seen order."""
    keys: List[str] = []
    for record in history:
        keys += [k for k in record if k.startswith("valid_") and k.endswith("_auc")
                 and k != "valid_ctr_auc" and k not in keys]
    return keys


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m models.train``."""
    quiet_tensorflow()
    from models.config import load_configs
    from models.registry import model_names
    parser = argparse.ArgumentParser(prog="python -m models.train",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=model_names())
    parser.add_argument("--data", required=True, help="output directory of preprocessing.run")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=None, help="YAML with 'model:' and 'train:' keys")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        from models.distribute import choose_strategy, cluster_task, worker_run_dir
        if cluster_task()[0] > 1:
            choose_strategy()  # the multi-worker strategy before any other TensorFlow op
        mcfg, tcfg = load_configs(args.config)
        result = train(args.model, args.data, worker_run_dir(args.out), args.seed, mcfg, tcfg,
                       args.resume, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    test = result["test"]
    rows = [("run", os.path.abspath(args.out)), ("model", args.model), ("seed", args.seed),
            ("steps", result["steps"]), ("best val loss", f"{result['best_val_loss']:.5f}"),
            ("train samples/s", f"{result['samples_per_second']:,.0f}")]
    for key in ("ctr_auc", "cvr_auc_clicked", "ctcvr_auc", "entire_space_cvr_auc",
                "oracle_entire_space_cvr_auc", "field_rce_app"):
        if key in test:
            rows.append((f"test {key}", f"{test[key]:.4f}"))
    for key in own_click_auc_keys(result.get("history", [])):
        # a model's own click AUC (the UKD teacher's discriminator should fall towards 0.5)
        trend = [h[key] for h in result["history"] if key in h]
        name = key[len("valid_"):-len("_auc")].replace("_", " ")
        rows.append((f"valid {name} AUC by epoch", " -> ".join(f"{a:.3f}" for a in trend)))
    print_table("models.train", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
