"""The UKD teacher: gradient reversal, the adversarial schedule, the losses, and a run of
``models.train --model ukd_teacher`` that logs the discriminator's AUC per epoch."""

import numpy as np
import pytest
import tensorflow as tf

from models.config import TrainConfig, model_config_from_flat
from models.inputs import Feature
from models.ukd.teacher import GradientReversal, UKDTeacher, adversarial_weight

FEATURES = [Feature("user_id", "categorical", 50), Feature("app_id", "categorical", 5),
            Feature("item_price", "continuous")]
CONFIG = model_config_from_flat(dict(embedding_dim=4, ukd_representation_units=(8,),
                                     ukd_head_units=(4,)))


def _batch(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = {"user_id": tf.constant(rng.integers(0, 50, (n, 1))),
         "app_id": tf.constant(rng.integers(0, 5, (n, 1))),
         "item_price": tf.constant(rng.random((n, 1)), tf.float32)}
    click = rng.random(n) < 0.5
    y = {"click": tf.constant(click.astype(np.int32)),
         "purchase": tf.constant((click & (rng.random(n) < 0.3)).astype(np.int32))}
    return x, y


@pytest.mark.parametrize("weight", [1.0, 0.3])
def test_gradient_reversal_flips_the_sign_of_the_gradient_reaching_its_input(weight):
    layer = GradientReversal()
    x = tf.constant(np.random.default_rng(1).normal(size=(5, 3)), tf.float32)
    layer(x)
    layer.weight.assign(weight)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        out = layer(x)
        loss = tf.reduce_sum(out * out)
        plain = tf.reduce_sum(x * x)
    np.testing.assert_array_equal(out.numpy(), x.numpy())  # the identity forward
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(),
                               -weight * tape.gradient(plain, x).numpy(), rtol=1e-6)


def test_the_discriminator_gradient_reaches_the_representation_reversed():
    """d(discriminator loss)/d(representation weights) with the reversal equals minus
    lambda times the same gradient without it, while the discriminator's own gradient is
    unchanged."""
    x, y = _batch()
    model = UKDTeacher(FEATURES, CONFIG)
    model(x)
    click = tf.cast(y["click"], tf.float32)

    def grads(weight):
        model.reversal.weight.assign(weight)
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            p = tf.clip_by_value(out["pctr"], 1e-7, 1 - 1e-7)
            loss = -tf.reduce_mean(click * tf.math.log(p) + (1 - click) * tf.math.log(1 - p))
        rep = model.representation.trainable_variables
        disc = model.discriminator.trainable_variables
        g = tape.gradient(loss, rep + disc)
        return g[:len(rep)], g[len(rep):]

    rep_plain, disc_plain = grads(-1.0)   # weight -1: an ordinary, unreversed gradient
    rep_rev, disc_rev = grads(0.5)
    for a, b in zip(rep_rev, rep_plain):
        np.testing.assert_allclose(a.numpy(), -0.5 * b.numpy(), rtol=1e-5, atol=1e-8)
        assert np.abs(b.numpy()).max() > 0
    for a, b in zip(disc_rev, disc_plain):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-8)


def test_the_dann_schedule_rises_from_zero_to_the_weight_and_constant_stays():
    values = [float(adversarial_weight("dann", 2.0, t)) for t in (0.0, 0.1, 0.5, 1.0, 3.0)]
    assert values[0] == 0.0 and values == sorted(values)
    assert values[3] == pytest.approx(2.0, abs=1e-3) and values[4] == values[3]
    assert float(adversarial_weight("constant", 0.7, 0.0)) == pytest.approx(0.7)


def test_the_cvr_loss_uses_clicked_rows_only_and_the_discriminator_every_row():
    tf.keras.utils.set_random_seed(0)
    x, y = _batch()
    model = UKDTeacher(FEATURES, CONFIG)
    model(x)
    model.set_prior_rates({"click": 0.2, "purchase": 0.05})  # outputs away from 0.5
    out = model(x)
    base = float(model.compute_loss(out, y))
    flipped = dict(y, purchase=tf.where(tf.cast(y["click"], tf.bool), y["purchase"],
                                        1 - y["purchase"]))  # unclicked purchases change
    assert float(model.compute_loss(out, flipped)) == pytest.approx(base, rel=1e-6)
    other_clicks = dict(y, click=1 - y["click"], purchase=tf.zeros_like(y["purchase"]))
    assert abs(float(model.compute_loss(out, other_clicks)) - base) > 0.1


def test_a_train_step_follows_the_schedule_over_the_planned_steps():
    x, y = _batch()
    model = UKDTeacher(FEATURES, CONFIG)
    model(x)
    model.optimizer = tf.keras.optimizers.Adam(1e-2)
    model.set_planned_steps(4)
    weights = []
    for _ in range(4):
        model.train_step((x, y))
        weights.append(float(model.reversal.weight))
    expected = [float(adversarial_weight("dann", 1.0, i / 4)) for i in range(4)]
    np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_a_teacher_run_logs_the_discriminator_auc_per_epoch(small_processed, tmp_path):
    from models.train import train
    metrics = train("ukd_teacher", small_processed, str(tmp_path / "run"), 0,
                    model_config_from_flat(dict(embedding_dim=4, ukd_representation_units=(16,),
                                                ukd_head_units=(8,))),
                    TrainConfig(batch_size=2048, epochs=2, checkpoint_every=1000),
                    progress=False)
    aucs = [h["valid_discriminator_auc"] for h in metrics["history"]]
    assert len(aucs) == 2 and all(0.0 <= a <= 1.0 for a in aucs)
    assert "entire_space_cvr_auc" in metrics["test"]


def test_the_4m_teacher_config_changes_only_the_adversarial_weight():
    """``models/configs/ukd_teacher_4m.yaml`` (the validation-day choice that
    ``models/ukd/compare.sh`` trains with) sets the weight and leaves every other field at
    ``models.train``'s default."""
    import os

    from models.config import load_configs
    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "models", "configs",
                        "ukd_teacher_4m.yaml")
    model_config, train_config = load_configs(path)
    defaults_model, defaults_train = load_configs(None)
    from models.config import with_model_options
    from models.ukd.config import UKDConfig
    assert model_config.family(UKDConfig).adversarial_weight == 0.3 != \
        defaults_model.family(UKDConfig).adversarial_weight
    assert model_config == with_model_options(defaults_model, ukd_adversarial_weight=0.3)
    assert train_config == defaults_train
