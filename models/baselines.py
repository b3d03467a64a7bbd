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

from typing import Dict, Sequence

import numpy as np
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


def build_model(name: str, features: Sequence[Feature], config: ModelConfig,
                targets: Sequence[str], seed: int = 0) -> CVRModel:
    """Instantiate the model ``name``: one of ``MODELS``, the UKD teacher and students
    (``ukd_teacher``, ``ukd``, ``ukd_base``: ``models.ukd``) or one of the AutoHERI family
    (``models.autoheri.model.AUTOHERI_MODELS``; ``seed`` draws ``autoheri_random``'s edges)."""
    from models.autoheri.model import AUTOHERI_MODELS, build_autoheri
    from models.ukd.student import UKDBaseStudent, UKDStudent
    from models.ukd.teacher import UKDTeacher
    if name in AUTOHERI_MODELS:
        return build_autoheri(name, features, config, targets, seed)
    models = {**MODELS, "ukd_teacher": UKDTeacher, "ukd": UKDStudent,
              "ukd_base": UKDBaseStudent}
    if name not in models:
        raise ValueError(f"The 'model' parameter must be one of "
                         f"{sorted(models) + sorted(AUTOHERI_MODELS)}. Got {name!r} instead.")
    return models[name](features, config, targets)
