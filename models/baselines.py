"""Entire-space baselines: naive CVR (and its shared-embedding variant), ESMM, ESCM2-IPS, MMoE.

Each model maps the feature dict to probabilities ``{"pctr", "pcvr", "pctcvr"}`` (MMoE also
``"pcart"``) and defines its loss in ``compute_loss``; the loop lives in ``models/train.py``
(the way TensorFlow Recommenders leaves ``fit`` to Keras). ``CVRModel.train_step`` is the
Keras-style single step that any loop calls.

References:
    Ma et al., "Entire Space Multi-Task Model", SIGIR 2018 (ESMM).
    Wang et al., "ESCM2: Entire Space Counterfactual Multi-Task Model", SIGIR 2022.
    Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts", KDD 2018 (MMoE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf

from common.params import check_param
from models import registry
from models.config import FamilyConfig, ModelConfig
from models.inputs import Feature, InputLayer

EPS = 1e-7


@dataclass(frozen=True)
class MMoEConfig(FamilyConfig):
    """MMoE's options (``model: {mmoe: {...}}``).

    Args:
        experts: number of MMoE experts.
        expert_units: hidden units of each MMoE expert.
    """

    KEY = "mmoe"
    # flat names mmoe_experts, mmoe_expert_units (KEY_field)
    experts: int = 4
    expert_units: Tuple[int, ...] = (128, 64)

    def __post_init__(self):
        object.__setattr__(self, "expert_units", tuple(self.expert_units))
        check_param(self.experts >= 1, "mmoe_experts", ">= 1", self.experts)
        check_param(len(self.expert_units) >= 1 and all(u >= 1 for u in self.expert_units),
                    "mmoe_expert_units", "a non-empty list of positive ints", self.expert_units)


@dataclass(frozen=True)
class ESCM2Config(FamilyConfig):
    """ESCM2-IPS's options (``model: {escm2: {...}}``).

    Args:
        ips_clip: lower clip of pCTR in the ESCM2-IPS weights 1 / pCTR (our choice).
        ips_weight: weight of the ESCM2 counterfactual CVR risk.
    """

    KEY = "escm2"
    LEGACY = {"ips_clip": "ips_clip", "ips_weight": "ips_weight"}
    ips_clip: float = 0.05
    ips_weight: float = 1.0

    def __post_init__(self):
        check_param(0.0 < self.ips_clip <= 1.0, "ips_clip", "in (0, 1]", self.ips_clip)
        check_param(self.ips_weight >= 0, "ips_weight", ">= 0", self.ips_weight)


def bce(labels: tf.Tensor, probs: tf.Tensor) -> tf.Tensor:
    """Per-example binary cross-entropy on probabilities clipped to [EPS, 1 - EPS]."""
    p = tf.clip_by_value(probs, EPS, 1.0 - EPS)
    y = tf.cast(labels, tf.float32)
    return -(y * tf.math.log(p) + (1.0 - y) * tf.math.log(1.0 - p))


def masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of ``values`` over rows where ``mask`` is 1 (0 when the mask is empty).

    In a step on several replicas (``models.distribute``) it is the mean over the global
    batch's masked rows, divided by this replica's share of the rows
    (:meth:`CVRModel.replica_share`), so that the share-weighted losses the replicas sum hold
    the global masked mean, not a mean of per-replica means."""
    mask = tf.cast(mask, tf.float32)
    total, count = tf.reduce_sum(values * mask), tf.reduce_sum(mask)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return total / tf.maximum(count, 1.0)
    rows = tf.cast(tf.size(mask), tf.float32)
    global_count, global_rows = context.all_reduce("SUM", [count, rows])
    return total / tf.maximum(global_count, 1.0) * global_rows / tf.maximum(rows, 1.0)


def mlp(units: Sequence[int], dropout: float, name: str, output: bool = True
        ) -> tf.keras.Sequential:
    """Hidden ReLU layers (with dropout), then a sigmoid output unit when ``output``."""
    layers = []
    for i, u in enumerate(units):
        layers.append(tf.keras.layers.Dense(u, activation="relu", name=f"{name}_dense{i}"))
        if dropout:
            layers.append(tf.keras.layers.Dropout(dropout))
    if output:
        layers.append(tf.keras.layers.Dense(1, activation="sigmoid", name=f"{name}_out"))
    return tf.keras.Sequential(layers, name=name)


class CVRModel(tf.keras.Model):
    """Base class: the shared input layer, the loss contract and a Keras-style step.

    Args:
        features: model inputs (``models.inputs.features_from_schema``).
        config: architecture options.
        targets: the label columns available (a subset of click, cart, purchase).
    """

    #: The history key of the validation click AUC is ``valid_`` + this (the UKD teacher
    #: reports its discriminator's AUC there).
    click_auc_name = "ctr_auc"

    def __init__(self, features: Sequence[Feature], config: ModelConfig,
                 targets: Sequence[str] = ("click", "purchase"), **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.targets = tuple(targets)
        self.embed = InputLayer(features, config.embedding_dim, config.max_embedding_rows,
                                config.l2, name="inputs")

    def compute_loss(self, outputs: Dict[str, tf.Tensor], labels: Dict[str, tf.Tensor]
                     ) -> tf.Tensor:
        """The training loss of one batch (subclasses define it)."""
        raise NotImplementedError

    def output_layers(self) -> Dict[str, tf.keras.layers.Dense]:
        """The sigmoid output unit of each task: click, cart, purchase (subclasses)."""
        raise NotImplementedError

    def set_prior_rates(self, rates: Dict[str, float]) -> None:
        """Set each task's output bias to the logit of its base rate (click over D, cart and
        purchase over D_click), so that training starts from calibrated constants instead of
        0.5. Call it on a built model before training; tasks absent from ``rates`` keep 0.
        """
        for task, layer in self.output_layers().items():
            if task in rates:
                p = min(max(rates[task], 1e-6), 1.0 - 1e-6)
                layer.bias.assign(tf.fill(layer.bias.shape, float(np.log(p / (1.0 - p)))))

    def set_planned_steps(self, steps: int) -> None:
        """The trainer tells the model how many steps the run plans (before training), for a
        schedule over the run (the UKD teacher's adversarial weight); most models ignore it."""

    @staticmethod
    def replica_share(labels: Dict[str, tf.Tensor]) -> tf.Tensor:
        """This replica's rows over the global batch's (1 outside a multi-replica step).

        A step's loss is a mean over the rows a replica sees; weighted by this share, the
        gradients the strategy sums over the replicas are those of the global batch's mean
        (``models.distribute``)."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return tf.constant(1.0)
        rows = tf.cast(tf.size(next(iter(labels.values()))), tf.float32)
        return rows / tf.maximum(context.all_reduce("SUM", rows), 1.0)

    def train_step(self, data):
        """One optimisation step on ``(features, labels)``; returns ``{"loss": ...}``, the
        loss weighted by :meth:`replica_share` (the global batch's mean once summed over the
        replicas)."""
        x, y = data
        with tf.GradientTape() as tape:
            outputs = self(x, training=True)
            loss = self.compute_loss(outputs, y) + tf.add_n(self.losses or [tf.constant(0.0)])
            loss = loss * self.replica_share(y)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}

    def test_step(self, data):
        """The loss and ``pctr`` of one batch without updating weights."""
        x, y = data
        outputs = self(x, training=False)
        return {"loss": self.compute_loss(outputs, y), "pctr": outputs["pctr"]}


def _label(labels, name):
    return tf.reshape(tf.cast(labels[name], tf.float32), [-1])


class TwoTowerCVR(CVRModel):
    """A CTR tower and a CVR tower; ``pCTCVR = pCTR * pCVR``. Subclasses define the loss.

    ``shared_embeddings`` (a class attribute) says whether both towers read one input layer
    (ESMM's shared lookup table) or each its own (two independent single-task models).
    """

    shared_embeddings = True

    def __init__(self, features, config, targets=("click", "purchase"), **kwargs):
        super().__init__(features, config, targets, **kwargs)
        self.ctr_tower = mlp(config.tower_units, config.dropout, "ctr_tower")
        self.cvr_tower = mlp(config.tower_units, config.dropout, "cvr_tower")
        self.cvr_embed = self.embed if self.shared_embeddings else InputLayer(
            features, config.embedding_dim, config.max_embedding_rows, config.l2,
            name="cvr_inputs")

    def call(self, inputs, training=False):
        h_ctr = self.embed(inputs)
        h_cvr = h_ctr if self.shared_embeddings else self.cvr_embed(inputs)
        pctr = tf.reshape(self.ctr_tower(h_ctr, training=training), [-1])
        pcvr = tf.reshape(self.cvr_tower(h_cvr, training=training), [-1])
        return {"pctr": pctr, "pcvr": pcvr, "pctcvr": pctr * pcvr}

    def output_layers(self):
        """The output units of the CTR (click) and CVR (purchase) towers."""
        return {"click": self.ctr_tower.layers[-1], "purchase": self.cvr_tower.layers[-1]}


class NaiveCVR(TwoTowerCVR):
    """BASE in ESMM: a CVR model trained on clicked impressions only, and its own CTR model.

    Loss: ``CE(click, pCTR)`` over D plus ``CE(purchase, pCVR)`` over D_click, with separate
    embedding tables, so the two are independent single-task models (the CTR model only
    supplies pCTR for pCTCVR). The CVR model is trained where clicks happened and served
    everywhere: the sample-selection bias, and it learns its embeddings from clicks alone: the
    data sparsity. Ma et al., SIGIR 2018, Section 4.2 (BASE).
    """

    shared_embeddings = False

    def compute_loss(self, outputs, labels):
        click = _label(labels, "click")
        return (tf.reduce_mean(bce(click, outputs["pctr"]))
                + masked_mean(bce(_label(labels, "purchase"), outputs["pcvr"]), click))


class NaiveSharedCVR(NaiveCVR):
    """The naive CVR loss on clicks with embeddings shared with the CTR task.

    Not a paper baseline: it separates the two advantages ESMM claims. It has the
    representation transfer from the CTR task (data sparsity) but still trains pCVR on
    D_click only (sample-selection bias).
    """

    shared_embeddings = True


class ESMM(TwoTowerCVR):
    """ESMM: ``CE(click, pCTR) + CE(click * purchase, pCTR * pCVR)`` over all impressions.

    There is no direct CVR loss; pCVR is learned through pCTCVR in the entire space, and both
    towers share one embedding table. Ma et al., SIGIR 2018.
    """

    def compute_loss(self, outputs, labels):
        click = _label(labels, "click")
        ctcvr = click * _label(labels, "purchase")
        return (tf.reduce_mean(bce(click, outputs["pctr"]))
                + self.config.ctcvr_weight * tf.reduce_mean(bce(ctcvr, outputs["pctcvr"])))


class ESCM2IPS(ESMM):
    """ESCM2-IPS: the ESMM losses plus an inverse-propensity-weighted CVR risk on D_click.

    ``R_IPS = (1/|D|) sum_{D_click} CE(purchase, pCVR) / max(pCTR, ips_clip)``, with the pCTR
    weights held constant (stop-gradient) and clipped below at ``ips_clip`` (our choice).
    """

    def compute_loss(self, outputs, labels):
        click = _label(labels, "click")
        options = self.config.family(ESCM2Config)
        weights = 1.0 / tf.maximum(tf.stop_gradient(outputs["pctr"]), options.ips_clip)
        ips = tf.reduce_mean(click * weights * bce(_label(labels, "purchase"), outputs["pcvr"]))
        return super().compute_loss(outputs, labels) + options.ips_weight * ips


class MMoE(CVRModel):
    """MMoE over the funnel tasks: shared experts, one softmax gate and one tower per task.

    Tasks: click on D, cart given click and purchase given click on D_click (cart only when
    the data has it). pCTCVR = pCTR * pCVR.
    """

    def __init__(self, features, config, targets=("click", "purchase"), **kwargs):
        super().__init__(features, config, targets, **kwargs)
        self.tasks = [t for t in ("click", "cart", "purchase") if t in self.targets]
        options = config.family(MMoEConfig)
        self.experts = [mlp(options.expert_units, config.dropout, f"expert{i}",
                            output=False) for i in range(options.experts)]
        self.gates = {t: tf.keras.layers.Dense(options.experts, activation="softmax",
                                               name=f"gate_{t}") for t in self.tasks}
        self.towers = {t: mlp(config.tower_units, config.dropout, f"{t}_tower")
                       for t in self.tasks}

    def call(self, inputs, training=False):
        h = self.embed(inputs)
        experts = tf.stack([e(h, training=training) for e in self.experts], axis=1)
        out = {}
        for t in self.tasks:
            gate = self.gates[t](h)[:, :, None]
            mixed = tf.reduce_sum(gate * experts, axis=1)
            out[t] = tf.reshape(self.towers[t](mixed, training=training), [-1])
        result = {"pctr": out["click"], "pcvr": out["purchase"],
                  "pctcvr": out["click"] * out["purchase"]}
        if "cart" in out:
            result["pcart"] = out["cart"]
        return result

    def output_layers(self):
        """The output unit of each task tower."""
        return {t: tower.layers[-1] for t, tower in self.towers.items()}

    def compute_loss(self, outputs, labels):
        click = _label(labels, "click")
        loss = (tf.reduce_mean(bce(click, outputs["pctr"]))
                + masked_mean(bce(_label(labels, "purchase"), outputs["pcvr"]), click))
        if "pcart" in outputs:
            loss += masked_mean(bce(_label(labels, "cart"), outputs["pcart"]), click)
        return loss


MODELS = {"naive": NaiveCVR, "naive_shared": NaiveSharedCVR, "esmm": ESMM,
          "escm2_ips": ESCM2IPS, "mmoe": MMoE}


def build_baseline(name: str, features: Sequence[Feature], config: ModelConfig,
                   targets: Sequence[str], seed: int = 0) -> CVRModel:
    """One of :data:`MODELS` (``seed`` is unused: nothing is drawn at random)."""
    return MODELS[name](features, config, targets)


FAMILY = registry.register(registry.ModelFamily(
    names={"naive": "BASE of ESMM: CVR on clicks, its own CTR model and embeddings",
           "naive_shared": "the naive CVR loss with embeddings shared with the CTR task",
           "esmm": "ESMM: CTR and CTCVR losses over all impressions",
           "escm2_ips": "ESCM2-IPS: ESMM plus an IPS-weighted CVR risk on clicks",
           "mmoe": "MMoE over click, cart and purchase"},
    build=build_baseline, configs=(MMoEConfig, ESCM2Config)))
