"""The training loop: the harness's one trainer, for every registered model.

LazyAdam (``models/optimizers.py``) at a constant or cosine-decayed learning rate
(``lr_schedule``; ``cosine_dense`` decays the dense weights only), shuffled batches from the
Merlin TF loader, a validation pass after each epoch, early stopping on the validation loss
(the best epoch's weights are kept), a checkpoint every ``checkpoint_every`` steps; a resumed
run continues from its last checkpoint in the same epoch and shuffled order. The model owns its
loss (``compute_loss``; TensorFlow Recommenders leaves the loop to Keras the same way), and the
trainer knows no model name: it builds through ``models.registry`` and asks the registry for the
extra label columns a model trains on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, List, Tuple

import numpy as np

from common.atomic import atomic_write_text


def _seed_everything(seed: int) -> None:
    import random

    import tensorflow as tf
    random.seed(seed)
    np.random.seed(seed % (2**32))
    tf.random.set_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31 - 1)


class Trainer:
    """Owns the loop, the checkpoints and the export; the model owns its loss.

    Args:
        model_name: a name registered in ``models.registry``.
        data: the processed dataset (``preprocessing.processed.ProcessedData``, or its
            directory: opened here then).
        run_dir: where everything of this run goes.
        seed: seeds weights and the shuffled order.
        model_config, train_config: see ``models/config.py``.
        progress: show progress bars.
        model_factory: builds the model from ``(features, model_config, targets)``; default
            ``models.registry.build_model(model_name, ..., seed)`` (a family's ``prepare``
            stage hands the derived architecture over this way).
        strategy: the ``tf.distribute`` strategy (default ``models.distribute.choose_strategy``:
            ``MirroredStrategy`` with several GPUs); each step splits the global batch across
            its replicas.
    """

    def __init__(self, model_name, data, run_dir, seed, model_config, train_config,
                 progress=True, model_factory=None, strategy=None):
        import tensorflow as tf

        from models import registry
        from models.data import features_and_targets, model_columns, split_dataset
        from models.optimizers import learning_rate_schedule, make_optimizer, sparse_learning_rate
        from preprocessing.processed import ProcessedData

        self.data = ProcessedData.open(data)
        self.model_name, self.data_dir, self.run_dir = model_name, self.data.root, run_dir
        self.seed, self.mcfg, self.tcfg, self.progress = seed, model_config, train_config, progress
        _seed_everything(seed)
        self.features, self.targets, schema = features_and_targets(self.data)
        columns = (model_columns(schema, self.targets)
                   + registry.label_columns(model_name, schema, self.data.root))
        self.train_ds = split_dataset(self.data, "train", columns)
        self.valid_ds = split_dataset(self.data, "valid", columns)
        self.steps_per_epoch = -(-self.train_ds.num_rows // train_config.batch_size)
        planned = train_config.epochs * self.steps_per_epoch
        if train_config.max_steps:
            planned = min(planned, train_config.max_steps)
        from models.distribute import choose_strategy
        self.strategy = strategy or choose_strategy()
        with self.strategy.scope():
            if model_factory is None:
                self.model = registry.build_model(model_name, self.features, model_config,
                                                  self.targets, seed)
            else:
                self.model = model_factory(self.features, model_config, self.targets)
            self.model.set_planned_steps(planned)  # a schedule over the run (UKD's teacher)
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
        self._train_step = self._step_function()
        self._test_step = tf.function(self.model.test_step, reduce_retracing=True)

    def _step_function(self):
        """``step(x, y) -> loss`` on one global batch: the model's step, or with several
        replicas the batch split across them (``models.distribute``) and their weighted losses
        summed into the global batch's mean."""
        import tensorflow as tf

        from models.distribute import distribute_batch
        if self.strategy.num_replicas_in_sync == 1:
            return tf.function(lambda x, y: self.model.train_step((x, y))["loss"],
                               reduce_retracing=True)

        @tf.function(reduce_retracing=True)
        def replica_step(batch):
            out = self.strategy.run(self.model.train_step, args=(batch,))
            return self.strategy.reduce("SUM", out["loss"], axis=None)

        return lambda x, y: replica_step(distribute_batch(self.strategy, (x, y)))

    def train_batch(self, x, y) -> float:
        """One training step on a global batch (without the loop's bookkeeping); its loss."""
        return float(self._train_step(x, y))

    def _checkpoint(self):
        import tensorflow as tf
        ckpt = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer,
                                   step=self.step, epoch=self.epoch,
                                   step_in_epoch=self.step_in_epoch, best_val=self.best_val,
                                   bad_epochs=self.bad_epochs)
        return ckpt, tf.train.CheckpointManager(ckpt, os.path.join(self.run_dir, "checkpoints"),
                                                max_to_keep=2)

    def _build(self):
        """Run one batch through the model so that every variable exists before a restore
        (under the strategy's scope: Keras creates a layer's weights at its first call)."""
        from models.data import batches
        with self.strategy.scope():
            for x, _ in batches(self.valid_ds, 8, shuffle=False):
                self.model(x)
                break
            self.model.optimizer.build(self.model.trainable_variables)
        if self.mcfg.prior_bias_init:
            from models.data import label_rates
            self.model.set_prior_rates(label_rates(self.data, self.targets))

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


def exported_weights(run_dir: str) -> str:
    """The checkpoint prefix of the weights a run exported: its best epoch's
    (``RUN/best/weights``), else (a run cut by ``max_steps``) its last checkpoint's;
    ``FileNotFoundError`` when it has neither."""
    import tensorflow as tf
    weights = os.path.join(run_dir, "best", "weights")
    if not os.path.exists(weights + ".index"):
        weights = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    if weights is None:
        raise FileNotFoundError(f"{run_dir}: neither best weights nor a checkpoint to restore")
    return weights


def valid_click_auc_key(model) -> str:
    """The epoch-history key of a model's (or model class's) validation click AUC:
    ``valid_ctr_auc``, or ``valid_`` + its ``click_auc_name`` (the UKD teacher's
    ``valid_discriminator_auc``)."""
    return f"valid_{model.click_auc_name}"
