"""The UKD teacher: a CVR model whose representation cannot tell clicked from unclicked traffic.

Three parts on the shared input layer (Xu et al., "UKD: Debiasing Conversion Rate Estimation
via Uncertainty-regularized Knowledge Distillation", WWW 2022, Section 3.2;
the project's algorithms reference, "UKD"):

- ``T_f``, the representation: ReLU layers ``ukd_representation_units`` on the input layer;
- ``T_p``, the CVR head on ``T_f``: ``CE(purchase, pCVR)`` on clicked rows only;
- ``T_d``, the click discriminator on ``T_f`` behind a gradient-reversal layer: ``CE(click,
  pD)`` on every row. The discriminator learns to tell clicks from non-clicks; the reversed
  gradient, scaled by ``lambda(t)``, trains ``T_f`` to defeat it, so that the clicked and
  unclicked representations become indistinguishable and ``T_p``'s predictions carry over to
  the unclicked impressions (the pseudo-labels of ``models.pseudolabel``).

``lambda(t) = ukd_adversarial_weight * (2 / (1 + exp(-10 t)) - 1)`` with ``t`` the fraction of
the planned steps done (Ganin and Lempitsky, ICML 2015: the discriminator gets to learn before
the representation is pushed), or the constant ``ukd_adversarial_weight``
(``ukd_adversarial_schedule: constant``).

Outputs: ``pcvr`` (the teacher's CVR), ``pctr`` (the discriminator's click probability: not a
CTR model, its AUC should fall towards 0.5 as training goes on; ``models.train`` logs it per
epoch as ``valid_discriminator_auc``) and ``pctcvr = pctr * pcvr`` for the harness.
"""

from __future__ import annotations

import tensorflow as tf

from models.baselines import CVRModel, _label, bce, masked_mean, mlp
from models.ukd.config import UKDConfig
from preprocessing import columns as C


class GradientReversal(tf.keras.layers.Layer):
    """The identity forward; the gradient times ``-weight`` backward (Ganin and Lempitsky,
    "Unsupervised Domain Adaptation by Backpropagation", ICML 2015).

    ``weight`` is a non-trainable variable, so that a schedule can move it between steps
    without retracing.
    """

    def build(self, input_shape):
        self.weight = self.add_weight(name="weight", shape=(), trainable=False,
                                      initializer=tf.keras.initializers.Constant(1.0))
        super().build(input_shape)

    def call(self, x):
        held = tf.stop_gradient(x)
        # forward: held + w * 0 = x exactly; backward: d/dx = -w
        return held + tf.cast(self.weight, x.dtype) * (held - x)


def adversarial_weight(schedule: str, weight: float, progress: tf.Tensor) -> tf.Tensor:
    """``lambda(t)`` of the module docstring for ``progress`` = t in [0, 1]."""
    if schedule == "constant":
        return tf.constant(weight, tf.float32)
    t = tf.clip_by_value(tf.cast(progress, tf.float32), 0.0, 1.0)
    return weight * (2.0 / (1.0 + tf.exp(-10.0 * t)) - 1.0)


class UKDTeacher(CVRModel):
    """The click-adaptive teacher (see the module docstring)."""

    #: what ``models.train`` calls the validation AUC of ``pctr`` in the epoch history
    click_auc_name = "discriminator_auc"

    def __init__(self, features, config, targets=("click", "purchase"), **kwargs):
        super().__init__(features, config, targets, **kwargs)
        self.options = config.family(UKDConfig)
        self.representation = mlp(self.options.representation_units, config.dropout,
                                  "teacher_representation", output=False)
        self.cvr_head = mlp(self.options.head_units, config.dropout, "teacher_cvr_head")
        self.reversal = GradientReversal(name="gradient_reversal")
        self.discriminator = mlp(self.options.head_units, config.dropout,
                                 "click_discriminator")
        self.planned_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                         name="planned_steps")

    def set_planned_steps(self, steps: int) -> None:
        """The run's planned step count: the time axis of the adversarial weight schedule."""
        self.planned_steps.assign(int(steps))

    def call(self, inputs, training=False):
        h = self.representation(self.embed(inputs), training=training)
        pcvr = tf.reshape(self.cvr_head(h, training=training), [-1])
        pclick = tf.reshape(self.discriminator(self.reversal(h), training=training), [-1])
        return {"pctr": pclick, "pcvr": pcvr, "pctcvr": pclick * pcvr}

    def output_layers(self):
        """The output units of the discriminator (click) and the CVR head (purchase)."""
        return {C.CLICK: self.discriminator.layers[-1], C.PURCHASE: self.cvr_head.layers[-1]}

    def compute_loss(self, outputs, labels):
        click = _label(labels, C.CLICK)
        return (masked_mean(bce(_label(labels, C.PURCHASE), outputs["pcvr"]), click)
                + tf.reduce_mean(bce(click, outputs["pctr"])))

    def train_step(self, data):
        """Set the reversal weight for this step, then the base step."""
        planned = tf.cast(tf.maximum(self.planned_steps, 1), tf.float32)
        progress = tf.cast(self.optimizer.iterations, tf.float32) / planned
        self.reversal.weight.assign(adversarial_weight(
            self.options.adversarial_schedule, self.options.adversarial_weight, progress))
        return super().train_step(data)
