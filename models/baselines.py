"""Entire-space baselines: naive CVR, ESMM, ESCM2-IPS and MMoE.

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

from typing import Dict, Sequence

import tensorflow as tf

from models.config import ModelConfig
from models.inputs import Feature, InputLayer

EPS = 1e-7


def bce(labels: tf.Tensor, probs: tf.Tensor) -> tf.Tensor:
    """Per-example binary cross-entropy on probabilities clipped to [EPS, 1 - EPS]."""
    p = tf.clip_by_value(probs, EPS, 1.0 - EPS)
    y = tf.cast(labels, tf.float32)
    return -(y * tf.math.log(p) + (1.0 - y) * tf.math.log(1.0 - p))


def masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of ``values`` over rows where ``mask`` is 1 (0 when the mask is empty)."""
    mask = tf.cast(mask, tf.float32)
    return tf.reduce_sum(values * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


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

    def train_step(self, data):
        """One optimisation step on ``(features, labels)``; returns ``{"loss": ...}``."""
        x, y = data
        with tf.GradientTape() as tape:
            outputs = self(x, training=True)
            loss = self.compute_loss(outputs, y) + tf.add_n(self.losses or [tf.constant(0.0)])
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}

    def test_step(self, data):
        """The loss of one batch without updating weights."""
        x, y = data
        outputs = self(x, training=False)
        return {"loss": self.compute_loss(outputs, y)}


def _label(labels, name):
    return tf.reshape(tf.cast(labels[name], tf.float32), [-1])


class NaiveCVR(CVRModel):
    """CTR tower on all impressions and CVR tower on clicked impressions only (BASE in ESMM).

    Loss: ``CE(click, pCTR)`` over D plus ``CE(purchase, pCVR)`` over D_click. The CVR tower is
    trained where clicks happened and served everywhere: the sample-selection bias.
    """

    def __init__(self, features, config, targets=("click", "purchase"), **kwargs):
        super().__init__(features, config, targets, **kwargs)
        self.ctr_tower = mlp(config.tower_units, config.dropout, "ctr_tower")
        self.cvr_tower = mlp(config.tower_units, config.dropout, "cvr_tower")

    def call(self, inputs, training=False):
        h = self.embed(inputs)
        pctr = tf.reshape(self.ctr_tower(h, training=training), [-1])
        pcvr = tf.reshape(self.cvr_tower(h, training=training), [-1])
        return {"pctr": pctr, "pcvr": pcvr, "pctcvr": pctr * pcvr}

    def compute_loss(self, outputs, labels):
        click = _label(labels, "click")
        return (tf.reduce_mean(bce(click, outputs["pctr"]))
                + masked_mean(bce(_label(labels, "purchase"), outputs["pcvr"]), click))


class ESMM(NaiveCVR):
    """ESMM: ``CE(click, pCTR) + CE(click * purchase, pCTR * pCVR)`` over all impressions.

    There is no direct CVR loss; pCVR is learned through pCTCVR in the entire space.
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
        weights = 1.0 / tf.maximum(tf.stop_gradient(outputs["pctr"]), self.config.ips_clip)
        ips = tf.reduce_mean(click * weights * bce(_label(labels, "purchase"), outputs["pcvr"]))
        return super().compute_loss(outputs, labels) + self.config.ips_weight * ips


class MMoE(CVRModel):
    """MMoE over the funnel tasks: shared experts, one softmax gate and one tower per task.

    Tasks: click on D, cart given click and purchase given click on D_click (cart only when
    the data has it). pCTCVR = pCTR * pCVR.
    """

    def __init__(self, features, config, targets=("click", "purchase"), **kwargs):
        super().__init__(features, config, targets, **kwargs)
        self.tasks = [t for t in ("click", "cart", "purchase") if t in self.targets]
        self.experts = [mlp(config.mmoe_expert_units, config.dropout, f"expert{i}",
                            output=False) for i in range(config.mmoe_experts)]
        self.gates = {t: tf.keras.layers.Dense(config.mmoe_experts, activation="softmax",
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

    def compute_loss(self, outputs, labels):
        click = _label(labels, "click")
        loss = (tf.reduce_mean(bce(click, outputs["pctr"]))
                + masked_mean(bce(_label(labels, "purchase"), outputs["pcvr"]), click))
        if "pcart" in outputs:
            loss += masked_mean(bce(_label(labels, "cart"), outputs["pcart"]), click)
        return loss


MODELS = {"naive": NaiveCVR, "esmm": ESMM, "escm2_ips": ESCM2IPS, "mmoe": MMoE}


def build_model(name: str, features: Sequence[Feature], config: ModelConfig,
                targets: Sequence[str]) -> CVRModel:
    """Instantiate the model ``name`` (one of ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"The 'model' parameter must be one of {sorted(MODELS)}. "
                         f"Got {name!r} instead.")
    return MODELS[name](features, config, targets)
