"""The baselines' outputs and losses, checked against the formulas by hand."""

import numpy as np
import pytest
import tensorflow as tf

from models.baselines import MODELS, bce
from models.registry import build_model
from models.config import ModelConfig, model_config_from_flat
from models.inputs import Feature

FEATURES = [Feature("item_id", "categorical", 50), Feature("x", "continuous")]
CFG = model_config_from_flat(dict(embedding_dim=4, tower_units=(8,), mmoe_expert_units=(8,),
                                  mmoe_experts=2))


def _batch(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = {"item_id": tf.constant(rng.integers(0, 50, n), tf.int64),
         "x": tf.constant(rng.normal(size=n), tf.float32)}
    click = rng.random(n) < 0.3
    cart = click & (rng.random(n) < 0.5)
    purchase = cart & (rng.random(n) < 0.5)
    y = {k: tf.constant(v.astype(np.int32)) for k, v in
         {"click": click, "cart": cart, "purchase": purchase}.items()}
    return x, y


def _np_bce(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_outputs_are_probabilities_and_pctcvr_is_their_product(name):
    model = build_model(name, FEATURES, CFG, ("click", "cart", "purchase"))
    x, _ = _batch()
    out = {k: v.numpy() for k, v in model(x).items()}
    for k in ("pctr", "pcvr", "pctcvr"):
        assert out[k].shape == (64,) and ((out[k] > 0) & (out[k] < 1)).all()
    assert np.allclose(out["pctcvr"], out["pctr"] * out["pcvr"])


@pytest.mark.parametrize("weight", [1.0, 3.0])
def test_esmm_loss_is_ctr_ce_plus_weighted_ctcvr_ce_over_all_impressions(weight):
    cfg = ModelConfig(embedding_dim=4, tower_units=(8,), ctcvr_weight=weight)
    model = build_model("esmm", FEATURES, cfg, ("click", "purchase"))
    x, y = _batch()
    out = model(x)
    p = {k: v.numpy() for k, v in out.items()}
    click, purchase = y["click"].numpy(), y["purchase"].numpy()
    expected = (_np_bce(click, p["pctr"]).mean()
                + weight * _np_bce(click * purchase, p["pctcvr"]).mean())
    assert float(model.compute_loss(out, y)) == pytest.approx(expected, rel=1e-5)


def test_naive_cvr_loss_ignores_purchase_labels_of_unclicked_rows():
    model = build_model("naive", FEATURES, CFG, ("click", "purchase"))
    x, y = _batch()
    out = model(x)
    flipped = dict(y)
    unclicked = y["click"].numpy() == 0
    flipped["purchase"] = tf.constant(np.where(unclicked, 1, y["purchase"].numpy()), tf.int32)
    assert float(model.compute_loss(out, y)) == pytest.approx(
        float(model.compute_loss(out, flipped)), rel=1e-6)


def test_escm2_adds_the_clipped_inverse_propensity_cvr_risk_to_esmm():
    cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(8,), ips_clip=0.2,
                                      ips_weight=0.5,
                                      ctcvr_weight=2.0))
    model = build_model("escm2_ips", FEATURES, cfg, ("click", "purchase"))
    x, y = _batch()
    out = model(x)
    p = {k: v.numpy() for k, v in out.items()}
    click, purchase = y["click"].numpy(), y["purchase"].numpy()
    esmm = _np_bce(click, p["pctr"]).mean() + 2.0 * _np_bce(click * purchase,
                                                             p["pctcvr"]).mean()
    ips = (click / np.maximum(p["pctr"], 0.2) * _np_bce(purchase, p["pcvr"])).mean()
    assert float(model.compute_loss(out, y)) == pytest.approx(esmm + 0.5 * ips, rel=1e-5)


def test_mmoe_has_a_cart_head_only_when_cart_is_a_target():
    x, _ = _batch()
    assert "pcart" in build_model("mmoe", FEATURES, CFG, ("click", "cart", "purchase"))(x)
    assert "pcart" not in build_model("mmoe", FEATURES, CFG, ("click", "purchase"))(x)


def test_a_train_step_lowers_the_loss_on_a_fixed_batch():
    model = build_model("esmm", FEATURES, CFG, ("click", "purchase"))
    model.optimizer = tf.keras.optimizers.Adam(0.05)
    x, y = _batch(512)
    first = float(model.train_step((x, y))["loss"])
    for _ in range(30):
        last = float(model.train_step((x, y))["loss"])
    assert last < first


def test_unknown_model_name_is_rejected():
    with pytest.raises(ValueError, match="'model' parameter"):
        build_model("dcn", FEATURES, CFG, ("click", "purchase"))


def test_bce_clips_probabilities():
    assert np.isfinite(bce(tf.constant([1.0, 0.0]), tf.constant([0.0, 1.0])).numpy()).all()


def _embedding_variables(model):
    return {v.name for v in model.trainable_variables if "emb_" in v.name}


def test_naive_cvr_tower_has_its_own_embeddings_and_its_loss_never_updates_the_ctr_ones():
    model = build_model("naive", FEATURES, CFG, ("click", "purchase"))
    x, y = _batch()
    with tf.GradientTape() as tape:
        out = model(x)
        cvr_loss = tf.reduce_mean(bce(tf.cast(y["purchase"], tf.float32), out["pcvr"]))
    ctr_tables = model.embed.trainable_variables
    cvr_tables = model.cvr_embed.trainable_variables
    assert ctr_tables and cvr_tables
    assert not {v.ref() for v in ctr_tables} & {v.ref() for v in cvr_tables}
    grads = tape.gradient(cvr_loss, ctr_tables)
    assert all(g is None for g in grads)


@pytest.mark.parametrize("name", ["naive_shared", "esmm", "escm2_ips"])
def test_shared_embedding_models_feed_both_towers_from_one_input_layer(name):
    model = build_model(name, FEATURES, CFG, ("click", "purchase"))
    x, _ = _batch()
    model(x)
    assert model.cvr_embed is model.embed
    assert len(_embedding_variables(model)) == 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prior_rates_start_every_task_at_its_base_rate(name):
    cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(8,), mmoe_expert_units=(8,),
                                      mmoe_experts=2))
    model = build_model(name, FEATURES, cfg, ("click", "cart", "purchase"))
    x, _ = _batch(n=2048)
    model(x)
    for layer in model.output_layers().values():  # zero the weights: output = sigmoid(bias)
        layer.kernel.assign(tf.zeros_like(layer.kernel))
    model.set_prior_rates({"click": 0.04, "cart": 0.1, "purchase": 0.02})
    out = model(x)
    assert np.allclose(out["pctr"].numpy(), 0.04, atol=1e-6)
    assert np.allclose(out["pcvr"].numpy(), 0.02, atol=1e-6)
    if "pcart" in out:
        assert np.allclose(out["pcart"].numpy(), 0.1, atol=1e-6)
