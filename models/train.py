"""Train one model on a processed dataset.

Usage::

    python -m models.train --model {naive,naive_shared,esmm,escm2_ips,mmoe,autoheri,
        autoheri_none,autoheri_all,autoheri_random} --data PROC_DIR --out RUN_DIR
        --seed S [--config FILE] [--resume] [--no-progress]

The loop: LazyAdam (``models/optimizers.py``) at a constant or cosine-decayed learning rate
(``lr_schedule``; ``cosine_dense`` decays the dense weights only), shuffled batches from the
Merlin TF loader, a validation pass after each epoch, early stopping on the validation loss
(the best epoch's weights are kept), a checkpoint every ``checkpoint_every`` steps.
``--resume`` continues a run that was killed (even by SIGKILL) from its last checkpoint: the
same epoch, the same shuffled order, the batches already trained on skipped, so nothing
beyond the checkpoint is lost.

``--model autoheri`` first searches and derives its architecture (``models/autoheri/search.py``:
``RUN_DIR/search/``, ``autoheri_architecture.json`` / ``.png``), then trains the derived network
here like any other model; ``--resume`` continues whichever stage was interrupted.

``RUN_DIR`` holds ``config.json`` (resolved), ``metrics.json`` (history, throughput, test
metrics, ``wall_seconds`` from the start of training, or of AutoHERI's search, to its end),
``saved_model/`` (a SavedModel with a ``serving_default`` signature), ``signature.json``,
``checkpoints/`` and ``tensorboard/``. With several GPUs visible to TensorFlow
(``preprocessing.device``) the model is built under ``tf.distribute.MirroredStrategy`` (written
for the NGC container, not verified here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from preprocessing.atomic import atomic_write_text
from preprocessing.report import peak_rss_mb, print_table


def _seed_everything(seed: int) -> None:
    import random

    import tensorflow as tf
    random.seed(seed)
    np.random.seed(seed % (2**32))
    tf.random.set_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31 - 1)


def _strategy():
    """``MirroredStrategy`` when TensorFlow sees several GPUs (``preprocessing.device``),
    else the default strategy."""
    import tensorflow as tf

    from preprocessing.device import detect
    if (detect().tensorflow_gpus or 0) > 1:  # pragma: no cover - needs several GPUs
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


class Trainer:
    """Owns the loop, the checkpoints and the export; the model owns its loss.

    Args:
        model_name: one of ``models.baselines.MODELS``.
        data_dir: output of ``preprocessing.run``.
        run_dir: where everything of this run goes.
        seed: seeds weights and the shuffled order.
        model_config, train_config: see ``models/config.py``.
        progress: show progress bars.
        model_factory: builds the model from ``(features, model_config, targets)``; default
            ``build_model(model_name, ..., seed)`` (AutoHERI's retrain stage passes the derived
            architecture this way).
    """

    def __init__(self, model_name, data_dir, run_dir, seed, model_config, train_config,
                 progress=True, model_factory=None):
        import tensorflow as tf

        from models.baselines import build_model
        from models.data import features_and_targets, model_columns, split_dataset
        from models.optimizers import learning_rate_schedule, make_optimizer, sparse_learning_rate

        self.model_name, self.data_dir, self.run_dir = model_name, data_dir, run_dir
        self.seed, self.mcfg, self.tcfg, self.progress = seed, model_config, train_config, progress
        _seed_everything(seed)
        from models.ukd.student import training_label_columns
        self.features, self.targets, schema = features_and_targets(data_dir)
        columns = (model_columns(schema, self.targets)
                   + training_label_columns(model_name, schema, data_dir))
        self.train_ds = split_dataset(data_dir, "train", columns)
        self.valid_ds = split_dataset(data_dir, "valid", columns)
        self.steps_per_epoch = -(-self.train_ds.num_rows // train_config.batch_size)
        planned = train_config.epochs * self.steps_per_epoch
        if train_config.max_steps:
            planned = min(planned, train_config.max_steps)
        self.strategy = _strategy()
        with self.strategy.scope():
            if model_factory is None:
                self.model = build_model(model_name, self.features, model_config, self.targets,
                                         seed)
            else:
                self.model = model_factory(self.features, model_config, self.targets)
            if hasattr(self.model, "set_planned_steps"):  # a schedule over the run (UKD)
                self.model.set_planned_steps(planned)
            lr = learning_rate_schedule(train_config.lr_schedule, train_config.learning_rate,
                                        planned)
            self.model.optimizer = make_optimizer(
                train_config.optimizer, lr,
                sparse_learning_rate(train_config.lr_schedule, train_config.learning_rate))
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_val = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
        self.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.history: List[Dict] = []
        self._train_step = tf.function(self._distributed_step, reduce_retracing=True)
        self._test_step = tf.function(self.model.test_step, reduce_retracing=True)

    def _distributed_step(self, x, y):
        if self.strategy.num_replicas_in_sync == 1:
            return self.model.train_step((x, y))["loss"]
        out = self.strategy.run(self.model.train_step, args=((x, y),))  # pragma: no cover
        return self.strategy.reduce("MEAN", out["loss"], axis=None)  # pragma: no cover

    def _checkpoint(self):
        import tensorflow as tf
        ckpt = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer,
                                   step=self.step, epoch=self.epoch,
                                   step_in_epoch=self.step_in_epoch, best_val=self.best_val,
                                   bad_epochs=self.bad_epochs)
        return ckpt, tf.train.CheckpointManager(ckpt, os.path.join(self.run_dir, "checkpoints"),
                                                max_to_keep=2)

    def _build(self):
        """Run one batch through the model so that every variable exists before a restore."""
        from models.data import batches
        for x, _ in batches(self.valid_ds, 8, shuffle=False):
            self.model(x)
            break
        self.model.optimizer.build(self.model.trainable_variables)
        if self.mcfg.prior_bias_init:
            from models.data import label_rates
            self.model.set_prior_rates(label_rates(self.data_dir, self.targets))

    def fit(self, resume: bool = False) -> Dict:
        """Train until the epochs run out, ``max_steps`` or early stopping; returns metrics."""
        import tensorflow as tf
        from tqdm import tqdm

        from models.data import batches
        os.makedirs(self.run_dir, exist_ok=True)
        self._build()
        ckpt, manager = self._checkpoint()
        best = tf.train.Checkpoint(model=self.model)
        best_prefix = os.path.join(self.run_dir, "best", "weights")
        history_path = os.path.join(self.run_dir, "history.json")
        if resume:
            if manager.latest_checkpoint is None:
                raise FileNotFoundError(f"{self.run_dir}: --resume given but no checkpoint found")
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            if os.path.exists(history_path):
                self.history = json.load(open(history_path))
        writer = tf.summary.create_file_writer(os.path.join(self.run_dir, "tensorboard"))
        steps_per_epoch = self.steps_per_epoch
        t_start, seen = time.perf_counter(), 0
        stop = False
        while int(self.epoch) < self.tcfg.epochs and not stop:
            epoch = int(self.epoch)
            skip = int(self.step_in_epoch)
            bar = tqdm(total=steps_per_epoch, initial=skip, desc=f"{self.model_name} epoch {epoch}",
                       unit="step", disable=not self.progress, file=sys.stderr)
            losses = []
            for x, y in batches(self.train_ds, self.tcfg.batch_size, shuffle=True,
                                seed=_epoch_seed(self.seed, epoch), skip=skip):
                loss = float(self._train_step(x, y))
                losses.append(loss)
                seen += int(y["click"].shape[0])
                self.step.assign_add(1)
                self.step_in_epoch.assign_add(1)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if int(self.step) % 10 == 0:
                    with writer.as_default():
                        tf.summary.scalar("train/loss", loss, step=int(self.step))
                        tf.summary.scalar("train/learning_rate",
                                          float(self.model.optimizer.learning_rate),
                                          step=int(self.step))
                if int(self.step) % self.tcfg.checkpoint_every == 0:
                    manager.save(checkpoint_number=int(self.step))
                if self.tcfg.max_steps and int(self.step) >= self.tcfg.max_steps:
                    stop = True
                    break
            bar.close()
            if stop and int(self.step_in_epoch) < steps_per_epoch:
                manager.save(checkpoint_number=int(self.step))
                break
            val_loss, val_click_auc = self.evaluate_validation()
            record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                      "val_loss": val_loss, "step": int(self.step),
                      valid_click_auc_key(self.model): val_click_auc}
            self.history.append(record)
            with writer.as_default():
                tf.summary.scalar("valid/loss", val_loss, step=int(self.step))
            if val_loss < float(self.best_val):
                self.best_val.assign(val_loss)
                self.bad_epochs.assign(0)
                best.write(best_prefix)
            else:
                self.bad_epochs.assign_add(1)
            self.epoch.assign_add(1)
            self.step_in_epoch.assign(0)
            manager.save(checkpoint_number=int(self.step))
            atomic_write_text(history_path, json.dumps(self.history, indent=2))
            if int(self.bad_epochs) > self.tcfg.patience:
                break
        elapsed = time.perf_counter() - t_start
        if os.path.exists(best_prefix + ".index"):
            best.read(best_prefix).expect_partial()
        return {"history": self.history, "steps": int(self.step),
                "train_seconds": elapsed, "samples_per_second": seen / elapsed if elapsed else 0.0,
                "best_val_loss": float(self.best_val)}

    def evaluate_validation(self) -> Tuple[float, float]:
        """Mean loss over the validation split, and the AUC of the model's ``pctr`` against
        the click label there (for the UKD teacher, its discriminator's AUC)."""
        from models.data import batches
        from models.metrics import auc
        total, rows, clicks, scores = 0.0, 0, [], []
        for x, y in batches(self.valid_ds, self.tcfg.eval_batch_size, shuffle=False):
            n = int(y["click"].shape[0])
            out = self._test_step((x, y))
            total += float(out["loss"]) * n
            rows += n
            clicks.append(np.asarray(y["click"]).reshape(-1))
            scores.append(np.asarray(out["pctr"]).reshape(-1))
        click_auc = (auc(np.concatenate(clicks), np.concatenate(scores)) if rows
                     else float("nan"))
        return total / max(rows, 1), click_auc


def valid_click_auc_key(model) -> str:
    """The epoch-history key of a model's (or model class's) validation click AUC:
    ``valid_ctr_auc``, or ``valid_`` + its ``click_auc_name`` (the UKD teacher's
    ``valid_discriminator_auc``)."""
    return f"valid_{getattr(model, 'click_auc_name', 'ctr_auc')}"


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
    """Whether ``run_dir`` holds a checkpoint to resume: the run's own, or (AutoHERI) its
    search stage's."""
    return any(os.path.exists(os.path.join(run_dir, *sub, "checkpoint"))
               for sub in (("checkpoints",), ("search", "checkpoints")))


def train(model_name: str, data_dir: str, run_dir: str, seed: int, model_config=None,
          train_config=None, resume: bool = False, progress: bool = True) -> Dict:
    """Train, export and evaluate one model; returns the metrics written to ``metrics.json``."""
    from models.config import ModelConfig, TrainConfig
    from models.evaluate import evaluate_run_split
    from models.export import export_saved_model

    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, "config.json")
    resolved = run_identity(model_name, data_dir, seed, model_config, train_config)
    if not resume:  # a fresh run never continues from an older run's checkpoints
        for stale in ("checkpoints", "best", "search"):
            shutil.rmtree(os.path.join(run_dir, stale), ignore_errors=True)
        for stale in ("history.json", "metrics.json", "autoheri_architecture.json",
                      "autoheri_architecture.png"):
            if os.path.exists(os.path.join(run_dir, stale)):
                os.remove(os.path.join(run_dir, stale))
    if resume and os.path.exists(config_path):
        if not same_run(run_dir, resolved):
            raise ValueError(f"{config_path}: --resume with a different configuration than the "
                             f"interrupted run; use a new --out")
    atomic_write_text(config_path, json.dumps(resolved, indent=2))
    started = time.perf_counter()
    factory, search = None, None
    if model_name == "autoheri":  # search and derive first, then retrain the derived network
        from models.autoheri.model import build_autoheri
        from models.autoheri.search import search_and_derive
        architecture = search_and_derive(data_dir, run_dir, seed, model_config, train_config,
                                         resume, progress)
        search = architecture.search

        def factory(features, config, targets):
            return build_autoheri("autoheri", features, config, targets, edges=architecture.kept)
    trainer = Trainer(model_name, data_dir, run_dir, seed, model_config, train_config, progress,
                      model_factory=factory)
    if model_name.startswith("autoheri_"):  # an ablation: record its fixed architecture
        from models.autoheri.search import write_fixed_architecture
        write_fixed_architecture(model_name, trainer.model, model_config, run_dir)
    resolved["features"] = [vars(f) for f in trainer.features]
    resolved["targets"] = list(trainer.targets)
    atomic_write_text(config_path, json.dumps(resolved, indent=2))
    own_checkpoint = os.path.exists(os.path.join(run_dir, "checkpoints", "checkpoint"))
    # AutoHERI resumed after its search but before the retrain's first checkpoint: start it
    result = trainer.fit(resume=resume and (own_checkpoint or model_name != "autoheri"))
    if search is not None:
        result["search"] = search
    result["wall_seconds"] = time.perf_counter() - started
    signature = export_saved_model(trainer.model, trainer.features,
                                   os.path.join(run_dir, "saved_model"))
    atomic_write_text(os.path.join(run_dir, "signature.json"), json.dumps(signature, indent=2))
    result["test"] = evaluate_run_split(run_dir, data_dir, "test")
    result["peak_rss_mb"] = peak_rss_mb()
    atomic_write_text(os.path.join(run_dir, "metrics.json"), json.dumps(result, indent=2))
    return result


def quiet_tensorflow() -> None:
    """Silence TensorFlow's tracing chatter (its Python and absl loggers to ERROR), its C++ INFO
    lines and NVTabular's known CPU-mode warnings (``silence_known_warnings``) on the console."""
    from preprocessing.report import silence_known_warnings
    silence_known_warnings()
    import logging
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    import absl.logging
    absl.logging.set_verbosity(absl.logging.ERROR)


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m models.train``."""
    quiet_tensorflow()
    from models.config import MODEL_NAMES, load_configs
    parser = argparse.ArgumentParser(prog="python -m models.train",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=MODEL_NAMES)
    parser.add_argument("--data", required=True, help="output directory of preprocessing.run")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=None, help="YAML with 'model:' and 'train:' keys")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        mcfg, tcfg = load_configs(args.config)
        result = train(args.model, args.data, args.out, args.seed, mcfg, tcfg, args.resume,
                       progress=not args.no_progress)
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
    from models.ukd.teacher import UKDTeacher
    key = valid_click_auc_key(UKDTeacher)
    trend = [h[key] for h in result.get("history", []) if key in h]
    if trend:  # the UKD teacher: its click discriminator should fall towards 0.5
        rows.append(("valid discriminator AUC by epoch", " -> ".join(f"{a:.3f}" for a in trend)))
    print_table("models.train", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
