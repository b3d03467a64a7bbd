"""The UKD students: the loss terms on clicked and unclicked rows, the uncertainty weight,
the base student, and runs on pseudo-labelled data."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from models.config import ModelConfig, TrainConfig, model_config_from_flat
from models.inputs import Feature
from models.ukd.student import UKDBaseStudent, UKDStudent, bernoulli_kl, soft_bce

FEATURES = [Feature("user_id", "categorical", 50), Feature("item_price", "continuous")]
CONFIG = model_config_from_flat(dict(embedding_dim=4, tower_units=(8, 4), ukd_alpha=0.5,
                                     ukd_gamma=0.2,
                                     ukd_lambda=100.0, ukd_kl_weight=1.0, ukd_head_dropout=0.3))


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = {"user_id": tf.constant(rng.integers(0, 50, (n, 1))),
         "item_price": tf.constant(rng.random((n, 1)), tf.float32)}
    click = (rng.random(n) < 0.3).astype(np.float32)
    y = {"click": tf.constant(click),
         "purchase": tf.constant(click * (rng.random(n) < 0.2)),
         "teacher_pcvr": tf.constant(rng.uniform(0.01, 0.2, n).astype(np.float32))}
    return x, y


def _outputs(p, q, pctr):
    p, q, pctr = (tf.constant(v, tf.float32) for v in (p, q, pctr))
    return {"pcvr_a": p, "pcvr_b": q, "pcvr": 0.5 * (p + q), "pctr": pctr,
            "pctcvr": pctr * 0.5 * (p + q)}


def test_the_loss_follows_the_formula_with_the_uncertainty_weight_and_kl_term():
    rng = np.random.default_rng(3)
    n = 50
    p, q, pctr = rng.uniform(0.02, 0.9, (3, n))
    _, y = _data(n, seed=4)
    model = UKDStudent(FEATURES, CONFIG)
    got = float(model.compute_loss(_outputs(p, q, pctr), y))
    c, z, t = (y[k].numpy() for k in ("click", "purchase", "teacher_pcvr"))

    def ce(a, b):
        return -(a * np.log(b) + (1 - a) * np.log(1 - b))
    u = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    per_row = (c * 0.5 * (ce(z, p) + ce(z, q))
               + (1 - c) * (0.5 * np.exp(-100 * u) * 0.5 * (ce(t, p) + ce(t, q)) + u))
    want = per_row.mean() + 0.2 * ce(c, pctr).mean()
    assert got == pytest.approx(want, rel=1e-5)
    base = float(UKDBaseStudent(FEATURES, CONFIG).compute_loss(_outputs(p, q, pctr), y))
    per_row_base = c * 0.5 * (ce(z, p) + ce(z, q)) + (1 - c) * 0.5 * 0.5 * (ce(t, p) + ce(t, q))
    assert base == pytest.approx(per_row_base.mean() + 0.2 * ce(c, pctr).mean(), rel=1e-5)


def test_pseudo_labels_act_on_unclicked_rows_only_and_purchases_on_clicked_rows_only():
    tf.keras.utils.set_random_seed(0)
    x, y = _data()
    model = UKDStudent(FEATURES, CONFIG)
    model(x)
    model.set_prior_rates({"click": 0.3, "purchase": 0.05})  # pCVR near 0.05, not 0.5
    out = model(x, training=False)
    base = float(model.compute_loss(out, y))
    clicked = y["click"] > 0
    moved_t = dict(y, teacher_pcvr=tf.where(clicked, 0.9, y["teacher_pcvr"]))
    assert float(model.compute_loss(out, moved_t)) == pytest.approx(base, rel=1e-6)
    moved_t = dict(y, teacher_pcvr=tf.where(clicked, y["teacher_pcvr"], 0.9))
    assert float(model.compute_loss(out, moved_t)) > base + 0.1  # far from the teacher now


def test_disagreeing_heads_get_less_distillation_weight():
    """The same distillation target, heads that agree vs heads that disagree: the weighted
    distillation term of the disagreeing pair is smaller than its unweighted one by
    exp(-lambda u)."""
    p = tf.constant([0.1, 0.1])
    q = tf.constant([0.1, 0.3])
    u = bernoulli_kl(p, q).numpy()
    assert u[0] == pytest.approx(0.0, abs=1e-7) and u[1] > 0.05
    assert np.exp(-CONFIG.flat()["ukd_lambda"] * u[1]) < 1e-2


def test_the_serving_pcvr_is_the_mean_of_the_two_heads_and_training_dropout_splits_them():
    x, _ = _data()
    model = UKDStudent(FEATURES, CONFIG)
    out = model(x, training=False)
    np.testing.assert_allclose(out["pcvr"].numpy(),
                               0.5 * (out["pcvr_a"].numpy() + out["pcvr_b"].numpy()), rtol=1e-6)
    model.heads[1].set_weights(model.heads[0].get_weights())
    same = model(x, training=False)
    np.testing.assert_allclose(same["pcvr_a"].numpy(), same["pcvr_b"].numpy())
    trained = model(x, training=True)  # independent dropout masks
    assert not np.allclose(trained["pcvr_a"].numpy(), trained["pcvr_b"].numpy())


def test_soft_cross_entropy_is_minimal_at_the_target():
    t = tf.constant([0.2, 0.2, 0.2])
    loss = soft_bce(t, tf.constant([0.1, 0.2, 0.3])).numpy()
    assert loss[1] < loss[0] and loss[1] < loss[2]


def _assert_exported_like_any_run(run_dir):
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert "entire_space_cvr_auc" in metrics["test"]
    sig = json.load(open(os.path.join(run_dir, "signature.json")))
    assert set(sig["outputs"]) == {"pctr", "pcvr", "pctcvr"}
    assert "teacher_pcvr" not in sig["inputs"]


def test_the_student_trains_on_pseudo_labels_and_exports_like_any_run(ukd_student_run):
    _assert_exported_like_any_run(ukd_student_run)


def test_the_base_student_trains_on_pseudo_labels_and_exports_like_any_run(pseudolabelled,
                                                                          tmp_path):
    from models.train import train
    run_dir = str(tmp_path / "ukd_base")
    train("ukd_base", pseudolabelled, run_dir, 0, ModelConfig(embedding_dim=4, tower_units=(8, 4)),
          TrainConfig(batch_size=2048, max_steps=4, checkpoint_every=1000), progress=False)
    _assert_exported_like_any_run(run_dir)


def test_a_student_on_data_without_pseudo_labels_is_a_clear_error(small_processed, tmp_path,
                                                                 capsys):
    from models.train import main
    assert main(["--model", "ukd", "--data", small_processed, "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert "models.pseudolabel" in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [("ukd_alpha", -1.0), ("ukd_lambda", -0.1),
                                          ("ukd_head_dropout", 1.0),
                                          ("ukd_adversarial_schedule", "linear"),
                                          ("ukd_representation_units", ())])
def test_an_invalid_ukd_setting_is_refused_with_its_name(field, value):
    with pytest.raises(ValueError, match=field):
        model_config_from_flat({field: value})


@pytest.mark.parametrize("uncertainty", ["kl", "logit"])
def test_a_relative_lambda_weights_the_median_disagreement_by_exp_minus_lambda(uncertainty):
    """``lambda_mode: relative``: lambda is ``lam / median(u)`` over the unclicked rows, so the
    loss follows the formula with that lambda, for either definition of ``u``."""
    rng = np.random.default_rng(5)
    n = 60
    p, q, pctr = rng.uniform(0.02, 0.9, (3, n))
    _, y = _data(n, seed=6)
    config = model_config_from_flat(dict(CONFIG.flat(), ukd_lambda=3.0,
                                          ukd_lambda_mode="relative",
                                          ukd_uncertainty=uncertainty))
    got = float(UKDStudent(FEATURES, config).compute_loss(_outputs(p, q, pctr), y))
    c, z, t = (y[k].numpy() for k in ("click", "purchase", "teacher_pcvr"))

    def ce(a, b):
        return -(a * np.log(b) + (1 - a) * np.log(1 - b))
    if uncertainty == "kl":
        u = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    else:
        u = (np.log(p / (1 - p)) - np.log(q / (1 - q))) ** 2
    unclicked = np.sort(u[c == 0])
    lam = 3.0 / unclicked[len(unclicked) // 2]
    per_row = (c * 0.5 * (ce(z, p) + ce(z, q))
               + (1 - c) * (0.5 * np.exp(-lam * u) * 0.5 * (ce(t, p) + ce(t, q)) + u))
    assert got == pytest.approx(per_row.mean() + 0.2 * ce(c, pctr).mean(), rel=1e-4)


def test_the_logit_gap_does_not_shrink_with_the_pcvr_level():
    from models.ukd.student import logit_gap
    low = tf.constant([0.01]), tf.constant([0.01 * np.e / (1 - 0.01 + 0.01 * np.e)])
    mid = tf.constant([0.5]), tf.constant([np.e / (1 + np.e)])
    assert float(logit_gap(*low)[0]) == pytest.approx(1.0, rel=1e-4)
    assert float(logit_gap(*mid)[0]) == pytest.approx(1.0, rel=1e-4)
    assert float(bernoulli_kl(*low)[0]) < 0.2 * float(bernoulli_kl(*mid)[0])


@pytest.mark.parametrize("field, value", [("ukd_uncertainty", "variance"),
                                          ("ukd_lambda_mode", "adaptive")])
def test_an_unknown_uncertainty_option_is_refused_with_its_name(field, value):
    with pytest.raises(ValueError, match=field):
        model_config_from_flat({field: value})
