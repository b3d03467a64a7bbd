"""The two halves of a split training step, their checkpoints, and the label-leak audit.

- :class:`TrainingOrder`: the batches of a run, derived by each party from the shared PSI
  result (the canonical order of the intersection) and the shared shuffle seed; no id crosses.
- :class:`TopTrainer` (advertiser): one step of the harness model on the advertiser's inputs and
  the received embeddings, returning the embedding gradients; also the single-process
  baselines (advertiser-only, centralised) through the same step without an embedding.
- :class:`BottomTrainer` (media): the bottom network's forward (clipped when DP is on) and its
  backward from the returned gradients.
- :class:`PartyCheckpoints`: a party's checkpoints by step, with the count of applied batches
  and a hash chain of their digests, so that a resume is checked to apply every batch once.
- :class:`LeakAudit`: what the norm and direction attacks would score on the gradients that
  were sent (advertiser side: it holds the labels).

The models compute their losses (``models.baselines``); only the loop's pieces are here.
"""

from __future__ import annotations

import hashlib
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from federated.model import MEDIA_EMBEDDING, MediaBottom, build_top_model
from federated.privacy import direction_attack_scores, norm_attack_scores
from models.config import ModelConfig, TrainConfig
from models.inputs import Feature
from models.optimizers import learning_rate_schedule, make_optimizer, sparse_learning_rate

CHAIN_START = "0" * 64


def batch_digest(blinded: np.ndarray) -> str:
    """SHA-256 (hex, 32 digits) of a batch's doubly-blinded keys in batch order: both parties
    compute it from what they hold, and equal digests mean equal samples in equal order."""
    return hashlib.sha256(np.ascontiguousarray(blinded).tobytes()).hexdigest()[:32]


def extend_chain(chain: str, digest: str) -> str:
    """The hash chain of applied batches after one more (SHA-256 of the chain and the digest)."""
    return hashlib.sha256((chain + digest).encode()).hexdigest()


class TrainingOrder:
    """The batches of a run over ``n`` aligned samples (canonical indices ``0..n-1``).

    Epoch ``e`` visits the samples in the permutation drawn from ``(shuffle_seed, e)``; global
    step ``s`` is batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``.
    """

    def __init__(self, n: int, batch_size: int, epochs: int, shuffle_seed: int,
                 max_steps: int = 0):
        if n < 1:
            raise ValueError("the parties share no sample (empty intersection): nothing to train")
        self.n, self.batch_size, self.epochs = n, batch_size, epochs
        self.shuffle_seed = shuffle_seed
        self.steps_per_epoch = -(-n // batch_size)
        total = epochs * self.steps_per_epoch
        self.total_steps = min(total, max_steps) if max_steps else total
        self._cached: Tuple[int, Optional[np.ndarray]] = (-1, None)

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._cached[0] != epoch:
            rng = np.random.default_rng([self.shuffle_seed, epoch])
            self._cached = (epoch, rng.permutation(self.n))
        return self._cached[1]

    def rows(self, step: int) -> np.ndarray:
        """Canonical indices of the samples of global step ``step``."""
        epoch, b = divmod(step, self.steps_per_epoch)
        return self._permutation(epoch)[b * self.batch_size:(b + 1) * self.batch_size]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and TensorFlow's generators (Keras draws the seeds of unseeded
    initializers from Python's ``random``), so that a seed fixes the initial weights."""
    import random
    random.seed(seed)
    np.random.seed(seed % (2**32))
    tf.random.set_seed(seed)


def _optimizer(train: TrainConfig, planned_steps: int):
    lr = learning_rate_schedule(train.lr_schedule, train.learning_rate, planned_steps)
    return make_optimizer(train.optimizer, lr,
                          sparse_learning_rate(train.lr_schedule, train.learning_rate))


def _as_tensors(x: Dict[str, np.ndarray]) -> Dict[str, tf.Tensor]:
    return {k: tf.convert_to_tensor(v) for k, v in x.items()}


class TopTrainer:
    """The advertiser's model and step (also the single-process baselines with ``width=0``).

    Args:
        model_name: a harness model (``models.registry.build_model``).
        features: the inputs this process holds.
        targets: the label columns.
        width: the media embedding's width (0: no media embedding).
        model_config, train_config: as in ``models.train``.
        planned_steps: the run's steps (for the learning-rate schedule).
        seed: weight initialisation.
    """

    def __init__(self, model_name: str, features: Sequence[Feature], targets: Sequence[str],
                 width: int, model_config: ModelConfig, train_config: TrainConfig,
                 planned_steps: int, seed: int):
        seed_everything(seed)
        self.features, self.targets, self.width = list(features), tuple(targets), int(width)
        self.model = build_top_model(model_name, features, model_config, targets, width, seed)
        self.model.optimizer = _optimizer(train_config, planned_steps)
        self.model_config = model_config
        self._step = tf.function(self._step_fn, reduce_retracing=True)
        self._predict = tf.function(self._predict_fn, reduce_retracing=True)

    def build(self, x: Dict[str, np.ndarray], embedding: Optional[np.ndarray],
              prior_rates: Optional[Dict[str, float]] = None) -> None:
        """Create every variable (one forward pass and the optimizer's slots) and, with the
        model config's ``prior_bias_init``, start each output at its base rate."""
        self.model(self._inputs(x, embedding))
        self.model.optimizer.build(self.model.trainable_variables)
        if self.model_config.prior_bias_init and prior_rates:
            self.model.set_prior_rates(prior_rates)

    def _inputs(self, x, embedding):
        inputs = _as_tensors(x)
        if self.width:
            inputs[MEDIA_EMBEDDING] = tf.convert_to_tensor(
                np.asarray(embedding, dtype=np.float32).reshape(-1, self.width))
        return inputs

    def _step_fn(self, inputs, labels):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            if self.width:
                tape.watch(inputs[MEDIA_EMBEDDING])
            outputs = self.model(inputs, training=True)
            loss = (self.model.compute_loss(outputs, labels)
                    + tf.add_n(self.model.losses or [tf.constant(0.0)]))
        sources = list(variables) + ([inputs[MEDIA_EMBEDDING]] if self.width else [])
        grads = tape.gradient(loss, sources)
        self.model.optimizer.apply_gradients(zip(grads[:len(variables)], variables))
        media_grad = grads[-1] if self.width else tf.zeros([0, 0])
        return loss, media_grad

    def step(self, x: Dict[str, np.ndarray], labels: Dict[str, np.ndarray],
             embedding: Optional[np.ndarray] = None) -> Tuple[float, np.ndarray]:
        """One optimisation step; returns the loss and the gradient of the loss with respect
        to each row of ``embedding`` (an empty array without one)."""
        loss, grad = self._step(self._inputs(x, embedding), _as_tensors(labels))
        return float(loss), grad.numpy()

    def _predict_fn(self, inputs):
        out = self.model(inputs, training=False)
        return {k: out[k] for k in ("pctr", "pcvr", "pctcvr")}

    def predict(self, x: Dict[str, np.ndarray], embedding: Optional[np.ndarray] = None
                ) -> Dict[str, np.ndarray]:
        """pCTR / pCVR / pCTCVR of a batch."""
        return {k: v.numpy() for k, v in self._predict(self._inputs(x, embedding)).items()}


class BottomTrainer:
    """The media party's bottom network: forward (clipped to ``clip`` when given) and the
    backward pass from the advertiser's embedding gradients.

    Args:
        features: the media features.
        width, units: the bottom network (``federated.model.MediaBottom``).
        embedding_dim: the width of each media categorical feature's table.
        train_config: optimizer and rate.
        planned_steps: the run's steps.
        seed: weight initialisation.
        clip: L2 clip of each embedding row (DP on) or None.
    """

    def __init__(self, features: Sequence[Feature], width: int, units: Sequence[int],
                 embedding_dim: int, train_config: TrainConfig, planned_steps: int, seed: int,
                 clip: Optional[float] = None):
        seed_everything(seed)
        self.features = list(features)
        self.model = MediaBottom(features, width, units, embedding_dim, name="media_bottom")
        self.model.optimizer = _optimizer(train_config, planned_steps)
        self.clip = clip
        self._forward = tf.function(self._forward_fn, reduce_retracing=True)
        self._backward = tf.function(self._backward_fn, reduce_retracing=True)

    def build(self, x: Dict[str, np.ndarray]) -> None:
        """Create every variable (one forward pass and the optimizer's slots)."""
        self.model(_as_tensors(x))
        self.model.optimizer.build(self.model.trainable_variables)

    def _clipped(self, inputs):
        e = self.model(inputs, training=True)
        if self.clip is not None:
            e = tf.clip_by_norm(e, self.clip, axes=[1])
        return e

    def _forward_fn(self, inputs):
        return self._clipped(inputs)

    def _backward_fn(self, inputs, grad):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            e = self._clipped(inputs)
        grads = tape.gradient(e, variables, output_gradients=grad)
        self.model.optimizer.apply_gradients(zip(grads, variables))

    def forward(self, x: Dict[str, np.ndarray]) -> np.ndarray:
        """The (clipped) embeddings of a batch, before any noise."""
        return self._forward(_as_tensors(x)).numpy()

    def backward(self, x: Dict[str, np.ndarray], grad: np.ndarray) -> None:
        """Apply the gradient ``grad`` (of the advertiser's loss w.r.t. the embeddings of
        ``x``) to the bottom network's weights."""
        self._backward(_as_tensors(x), tf.convert_to_tensor(np.asarray(grad, np.float32)))


class PartyCheckpoints:
    """A party's checkpoints, numbered by global step, each holding the model, the optimizer,
    the step, the count of applied batches and the hash chain of their digests.

    Both parties checkpoint at the same steps (every ``checkpoint_every`` and step 0), so after
    a crash they resume from the newest step both still have (:meth:`steps`)."""

    def __init__(self, directory: str, model: tf.keras.Model, keep: int = 4):
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.applied = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.chain = tf.Variable(CHAIN_START, dtype=tf.string, trainable=False)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                              step=self.step, applied=self.applied,
                                              chain=self.chain)
        self.directory = directory
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep)

    def steps(self) -> List[int]:
        """The steps this party holds a checkpoint of."""
        return sorted(int(p.rsplit("-", 1)[1]) for p in self.manager.checkpoints)

    def save(self) -> None:
        """Checkpoint the current state under its step number."""
        self.manager.save(checkpoint_number=int(self.step))

    def restore(self, step: int) -> None:
        """Restore the state of checkpoint ``step`` (one of :meth:`steps`)."""
        path = os.path.join(self.directory, f"ckpt-{step}")
        if step not in self.steps():
            raise FileNotFoundError(f"{self.directory}: no checkpoint of step {step} "
                                    f"(have {self.steps()})")
        self.checkpoint.restore(path).assert_existing_objects_matched()

    def record(self, digest: str) -> None:
        """Count one applied batch and extend the chain with its digest."""
        self.step.assign_add(1)
        self.applied.assign_add(1)
        self.chain.assign(extend_chain(self.chain.numpy().decode(), digest))

    def state(self) -> Dict:
        """Step, applied batches and chain (JSON-ready)."""
        return {"step": int(self.step), "applied_batches": int(self.applied),
                "chain": self.chain.numpy().decode()}


class LeakAudit:
    """Scores of the norm, direction and batch-PCA attacks on the gradients sent to the media
    party, with the protected label of each row (Li et al., ICLR 2022), and the Marvell bound of
    each batch (``federated.marvell``).

    The direction attack assumes the attacker knows one positive of each batch (the first);
    batches without a positive add no direction scores. The audit is checkpointed with the
    model (:func:`save_audit_segment`, :func:`load_audits`), so a restarted party reports the
    whole run.
    """

    ATTACKS = ("norm", "direction", "pca", "batch")

    def __init__(self):
        self.scores: Dict[str, List[np.ndarray]] = {a: [] for a in self.ATTACKS}
        self.labels: Dict[str, List[np.ndarray]] = {a: [] for a in self.ATTACKS}
        self.sum_kl: List[float] = []

    def add(self, grads: np.ndarray, labels: np.ndarray, sum_kl: Optional[float] = None) -> None:
        """Score one batch's sent gradients (and keep its Marvell sumKL, when given)."""
        from federated.privacy import pca_attack_scores
        y = np.asarray(labels).reshape(-1).astype(np.int8)
        norms = norm_attack_scores(grads)
        self._put("norm", norms, y)
        self._put("pca", pca_attack_scores(grads), y)
        # batch level: does a batch's noise level say whether it holds a conversion?
        self._put("batch", np.full(len(y), float(np.median(norms)) if len(y) else 0.0), y)
        positives = np.flatnonzero(y)
        if len(positives):
            known = int(positives[0])
            keep = np.arange(len(y)) != known
            self._put("direction", direction_attack_scores(grads, known)[keep], y[keep])
        if sum_kl is not None:
            self.sum_kl.append(float(sum_kl))

    def _put(self, attack: str, scores: np.ndarray, labels: np.ndarray) -> None:
        self.scores[attack].append(np.asarray(scores, dtype=np.float32))
        self.labels[attack].append(labels)

    def aucs(self) -> Dict[str, float]:
        """``leak_auc_<attack>`` for each attack (nan without both classes; ``batch`` scores
        every row by its batch's median gradient norm) and, when Marvell ran,
        ``marvell_auc_bound_at_mean_kl`` / ``marvell_auc_bound_max``: the bound on any attack's
        AUC on one gradient (``federated.marvell.auc_bound``, under Marvell's Gaussian model)
        at the batches' mean sumKL, and at the worst batch."""
        from federated.marvell import auc_bound
        from models.metrics import auc
        out = {}
        for attack in self.ATTACKS:
            key = f"leak_auc_{attack}"
            if self.scores[attack]:
                y = np.concatenate(self.labels[attack])
                out[key] = (auc(y, np.concatenate(self.scores[attack])) if 0 < y.sum() < len(y)
                            else float("nan"))
            else:
                out[key] = float("nan")
        if self.sum_kl:
            out["marvell_auc_bound_at_mean_kl"] = auc_bound(float(np.mean(self.sum_kl)))
            out["marvell_auc_bound_max"] = auc_bound(float(np.max(self.sum_kl)))
        return out

    def new_arrays(self, prefix: str) -> Dict[str, np.ndarray]:
        """The batches added since the last :meth:`mark_saved`, as named arrays (a segment for
        :func:`save_audit_segment`)."""
        marks = getattr(self, "_marks", {})
        out = {f"{prefix}sum_kl": np.asarray(self.sum_kl[marks.get("sum_kl", 0):], np.float64)}
        for attack in self.ATTACKS:
            start = marks.get(attack, 0)
            new_scores, new_labels = self.scores[attack][start:], self.labels[attack][start:]
            out[f"{prefix}{attack}_scores"] = (np.concatenate(new_scores) if new_scores
                                                else np.zeros(0, np.float32))
            out[f"{prefix}{attack}_labels"] = (np.concatenate(new_labels) if new_labels
                                                else np.zeros(0, np.int8))
        return out

    def mark_saved(self) -> None:
        """Everything added so far is in a written segment."""
        self._marks = {"sum_kl": len(self.sum_kl), **{a: len(self.scores[a])
                                                       for a in self.ATTACKS}}

    def extend(self, arrays, prefix: str) -> None:
        """Append a segment of :meth:`new_arrays` (already saved: the marks move past it)."""
        self.sum_kl.extend(float(k) for k in arrays[f"{prefix}sum_kl"])
        for attack in self.ATTACKS:
            scores = np.asarray(arrays[f"{prefix}{attack}_scores"])
            if len(scores):
                self.scores[attack].append(scores)
                self.labels[attack].append(np.asarray(arrays[f"{prefix}{attack}_labels"]))
        self._marks = {"sum_kl": len(self.sum_kl), **{a: len(self.scores[a])
                                                       for a in self.ATTACKS}}


def _segments(directory: str) -> List[int]:
    if not os.path.isdir(directory):
        return []
    return sorted(int(n[len("audit-"):-len(".npz")]) for n in os.listdir(directory)
                  if n.startswith("audit-") and n.endswith(".npz")
                  and n[len("audit-"):-len(".npz")].isdigit())


def save_audit_segment(directory: str, step: int, audits: Dict[str, LeakAudit]) -> None:
    """Write what the audits gained since the last checkpoint as ``DIR/audit-<step>.npz``
    (atomically), beside checkpoint ``step``: the segments up to a step rebuild its audit.
    Written before the checkpoint itself, so a crash between the two leaves a segment beyond
    the last checkpoint (deleted at the next load), never a checkpoint without its segment."""
    arrays: Dict[str, np.ndarray] = {}
    for name, audit in audits.items():
        arrays.update(audit.new_arrays(f"{name}__"))
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"audit-{step}.npz")
    tmp = path + ".partial.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    for audit in audits.values():
        audit.mark_saved()


def load_audits(directory: str, step: int, names: Sequence[str]) -> Dict[str, LeakAudit]:
    """The audits as of checkpoint ``step``: the segments up to ``step``; later segments (of
    batches that are replayed after the rollback) are deleted."""
    audits = {name: LeakAudit() for name in names}
    for seg in _segments(directory):
        path = os.path.join(directory, f"audit-{seg}.npz")
        if seg > step:
            os.remove(path)
            continue
        with np.load(path, allow_pickle=False) as z:
            for name in names:
                audits[name].extend(z, f"{name}__")
    return audits
