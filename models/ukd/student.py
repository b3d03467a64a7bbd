"""The UKD students: a CVR model that also learns from the teacher's soft labels on the
unclicked impressions, with (``ukd``) or without (``ukd_base``) the uncertainty terms.

Xu et al., "UKD: Debiasing Conversion Rate Estimation via Uncertainty-regularized Knowledge
Distillation", WWW 2022, Sections 3.3-3.4; the project's algorithms reference, "UKD".
Trained on the output of ``models.pseudolabel`` (the column ``teacher_pcvr``).

Network on the shared input layer: a CTR tower (``tower_units``), and a CVR representation
(``tower_units``' hidden layers) under two CVR heads ``p`` and ``p'``, each a sigmoid unit behind
its own dropout (``ukd_head_dropout``): in training the two see different dropout masks, so
they disagree most where the data say least. Serving output: ``pcvr = (p + p') / 2`` (our
choice), ``pctcvr = pctr * pcvr``.

Loss per batch of ``B`` rows, ``z`` the purchase label, ``t`` the teacher's pCVR,
``u = KL(p || p')`` (Bernoulli), ``sg`` stop-gradient::

    1/B [ sum_{clicked} (CE(z, p) + CE(z, p')) / 2
          + alpha * sum_{unclicked} w * (CE(t, p) + CE(t, p')) / 2
          + kl_weight * sum_{unclicked} u ]  +  gamma * mean CE(click, pCTR)
    w = exp(-lambda * sg(u))

The sums over the batch keep the paper's weighting of the two populations (about 24
unclicked rows per clicked one at the defaults). ``ukd_base``: ``w = 1`` and no KL term (the
base student of the paper, same network). That ``u`` is held constant in ``w`` is our choice:
otherwise the student could lower the distillation loss by making its heads disagree.
"""

from __future__ import annotations

import tensorflow as tf

from models.baselines import EPS, CVRModel, _label, bce, mlp
from models.ukd.config import UKDConfig
from preprocessing import columns as C

#: The students: they train on the teacher's pseudo-labels (data from ``models.pseudolabel``).
PSEUDO_LABEL_MODELS = ("ukd", "ukd_base")


def training_label_columns(model_name: str, schema, data_dir: str) -> list:
    """The columns a model trains on beyond the features and targets: ``teacher_pcvr`` for the
    UKD students (an error naming ``models.pseudolabel`` when the data lack it), else none."""
    if model_name not in PSEUDO_LABEL_MODELS:
        return []
    if C.TEACHER_PCVR not in schema.column_names:
        raise ValueError(f"{data_dir}: the {model_name} student trains on the teacher's "
                         f"pseudo-labels (column {C.TEACHER_PCVR}), which this dataset lacks; "
                         "write them with `python -m models.pseudolabel --teacher TEACHER_RUN "
                         f"--data {data_dir} --out PROC_PL` and train on PROC_PL")
    return [C.TEACHER_PCVR]


def bernoulli_kl(p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    """``KL(Bernoulli(p) || Bernoulli(q))`` per example, on probabilities clipped to
    ``[EPS, 1 - EPS]``."""
    p = tf.clip_by_value(p, EPS, 1.0 - EPS)
    q = tf.clip_by_value(q, EPS, 1.0 - EPS)
    return p * tf.math.log(p / q) + (1.0 - p) * tf.math.log((1.0 - p) / (1.0 - q))


def logit_gap(p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    """``(logit p - logit q)^2`` per example, on probabilities clipped to ``[EPS, 1 - EPS]``:
    a disagreement of the two heads that does not shrink with the pCVR level (our option)."""
    p = tf.clip_by_value(p, EPS, 1.0 - EPS)
    q = tf.clip_by_value(q, EPS, 1.0 - EPS)
    return tf.square(tf.math.log(p / (1.0 - p)) - tf.math.log(q / (1.0 - q)))


#: ``UKDConfig.uncertainty`` -> the per-example disagreement of the two heads.
UNCERTAINTY = {"kl": bernoulli_kl, "logit": logit_gap}


def masked_median(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """The median of ``values`` over rows where ``mask`` is 1 (the upper one of an even count;
    0 when the mask is empty)."""
    kept = tf.sort(tf.boolean_mask(values, mask > 0))
    n = tf.size(kept)
    return tf.cond(n > 0, lambda: kept[n // 2], lambda: tf.constant(0.0, values.dtype))


def soft_bce(targets: tf.Tensor, probs: tf.Tensor) -> tf.Tensor:
    """Cross-entropy against soft targets in [0, 1] (``bce`` without the cast to labels)."""
    p = tf.clip_by_value(probs, EPS, 1.0 - EPS)
    t = tf.cast(targets, tf.float32)
    return -(t * tf.math.log(p) + (1.0 - t) * tf.math.log(1.0 - p))


class UKDStudent(CVRModel):
    """The uncertainty-regularised student (see the module docstring)."""

    #: whether the distillation is weighted by exp(-lambda u) and the KL term is added
    uncertainty = True

    def __init__(self, features, config, targets=("click", "purchase"), **kwargs):
        super().__init__(features, config, targets, **kwargs)
        units = config.tower_units
        self.ctr_tower = mlp(units, config.dropout, "ctr_tower")
        self.cvr_representation = mlp(units, config.dropout, "cvr_representation",
                                      output=False)
        self.options = config.family(UKDConfig)
        self.head_dropout = [tf.keras.layers.Dropout(self.options.head_dropout,
                                                     name=f"cvr_head{k}_dropout")
                             for k in range(2)]
        self.heads = [tf.keras.layers.Dense(1, activation="sigmoid", name=f"cvr_head{k}")
                      for k in range(2)]

    def call(self, inputs, training=False):
        h = self.embed(inputs)
        pctr = tf.reshape(self.ctr_tower(h, training=training), [-1])
        r = self.cvr_representation(h, training=training)
        p, q = (tf.reshape(head(drop(r, training=training)), [-1])
                for drop, head in zip(self.head_dropout, self.heads))
        pcvr = 0.5 * (p + q)
        return {"pctr": pctr, "pcvr": pcvr, "pctcvr": pctr * pcvr, "pcvr_a": p, "pcvr_b": q}

    def output_layers(self):
        """The CTR tower's output unit and the first CVR head (both heads start at the base
        rate: see :meth:`set_prior_rates`)."""
        return {C.CLICK: self.ctr_tower.layers[-1], C.PURCHASE: self.heads[0]}

    def set_prior_rates(self, rates):
        """As ``CVRModel.set_prior_rates``, for both CVR heads."""
        super().set_prior_rates(rates)
        self.heads[1].bias.assign(self.heads[0].bias)

    def compute_loss(self, outputs, labels):
        click = _label(labels, C.CLICK)
        unclicked = 1.0 - click
        z = _label(labels, C.PURCHASE)
        t = _label(labels, C.TEACHER_PCVR)
        p, q = outputs["pcvr_a"], outputs["pcvr_b"]
        clicked_ce = 0.5 * (bce(z, p) + bce(z, q))
        distill = 0.5 * (soft_bce(t, p) + soft_bce(t, q))
        cfg = self.options
        per_row = click * clicked_ce
        if self.uncertainty:
            u = UNCERTAINTY[cfg.uncertainty](p, q)
            lam = cfg.lam
            if cfg.lambda_mode == "relative":
                lam = lam / tf.maximum(masked_median(tf.stop_gradient(u), unclicked), 1e-12)
            weight = tf.exp(-lam * tf.stop_gradient(u))
            per_row += unclicked * (cfg.alpha * weight * distill + cfg.kl_weight * u)
        else:
            per_row += unclicked * cfg.alpha * distill
        return (tf.reduce_mean(per_row)
                + cfg.gamma * tf.reduce_mean(bce(click, outputs["pctr"])))


class UKDBaseStudent(UKDStudent):
    """The base student: distillation with weight 1 and no KL regulariser (same network)."""

    uncertainty = False
