"""The AutoHERI network: edge gates and their gradients, derived edges, chains, loss, steps."""

import numpy as np
import pytest
import tensorflow as tf

from models.autoheri.architecture import candidate_edges
from models.autoheri.model import build_autoheri
from models.registry import build_model
from models.config import ModelConfig, model_config_from_flat
from models.inputs import Feature

FEATURES = [Feature("item_id", "categorical", 50), Feature("x", "continuous")]
CFG = ModelConfig(embedding_dim=4, tower_units=(8, 4))
THREE = ("click", "cart", "purchase")
TWO = ("click", "purchase")


def _batch(n=128, seed=0, cart=True):
    rng = np.random.default_rng(seed)
    x = {"item_id": tf.constant(rng.integers(0, 50, n), tf.int64),
         "x": tf.constant(rng.normal(size=n), tf.float32)}
    click = rng.random(n) < 0.3
    carted = click & (rng.random(n) < 0.5)
    purchase = carted & (rng.random(n) < 0.5)
    labels = {"click": click, "purchase": purchase, **({"cart": carted} if cart else {})}
    return x, {k: tf.constant(v.astype(np.int32)) for k, v in labels.items()}


def _np_bce(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _searchable(cfg=CFG, targets=THREE):
    model = build_model("autoheri", FEATURES, cfg, targets)
    model.optimizer = tf.keras.optimizers.Adam(1e-3)
    model.edge_optimizer = tf.keras.optimizers.Adam(0.05)
    return model


def test_edge_relaxation_gradients_reach_every_edge_logit():
    model = _searchable()
    x, y = _batch()
    with tf.GradientTape() as tape:
        loss = model.compute_loss(model(x, training=True), y)
    grad = tape.gradient(loss, model.edge_logits).numpy()
    assert grad.shape == (27 if len(CFG.tower_units) == 3 else 12,)
    assert np.isfinite(grad).all() and (np.abs(grad) > 0).all()


def test_edge_probabilities_start_at_the_configured_value_through_the_temperature():
    cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(8, 4), autoheri_edge_init=0.2,
                                      autoheri_temperature=3.0))
    model = _searchable(cfg)
    model(_batch()[0])
    np.testing.assert_allclose(model.edge_probabilities().numpy(), 0.2, rtol=1e-5)
    np.testing.assert_allclose(model.edge_logits.numpy(), 3.0 * np.log(0.2 / 0.8), rtol=1e-5)


def test_the_joint_step_moves_edges_and_weights_and_the_sparsity_pulls_edges_down():
    x, y = _batch()
    moved = {}
    for sparsity in (0.0, 1.0):
        cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(8, 4),
                                          autoheri_sparsity=sparsity))
        tf.random.set_seed(0)
        model = _searchable(cfg)
        model.edge_optimizer = tf.keras.optimizers.SGD(0.05)  # Adam would rescale the pull
        model(x)
        a0 = model.edge_logits.numpy().copy()
        w0 = model.hidden["purchase"][0].kernel.numpy().copy()
        for _ in range(3):
            model.train_step((x, y))
        assert not np.allclose(model.hidden["purchase"][0].kernel.numpy(), w0)
        moved[sparsity] = model.edge_logits.numpy() - a0
        assert np.abs(moved[sparsity]).min() > 0
    assert (moved[1.0] < moved[0.0]).all()


def test_the_bilevel_weight_step_leaves_edges_and_the_edge_step_moves_only_them():
    cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(8, 4),
                                      autoheri_search="bilevel"))
    model = _searchable(cfg)
    x, y = _batch()
    model(x)
    a0 = model.edge_logits.numpy().copy()
    model.train_step((x, y))
    np.testing.assert_array_equal(model.edge_logits.numpy(), a0)
    weights = [v.numpy().copy() for v in model.weight_variables()]
    model.edge_step(_batch(seed=1))
    assert np.abs(model.edge_logits.numpy() - a0).min() > 0
    for before, v in zip(weights, model.weight_variables()):
        np.testing.assert_array_equal(v.numpy(), before)


def test_the_derived_model_has_exactly_the_kept_edges():
    candidates = candidate_edges(THREE, 2)
    kept = [candidates[1], candidates[4], candidates[11]]
    model = build_autoheri("autoheri", FEATURES, CFG, THREE, edges=kept)
    model(_batch()[0])
    assert model.edges == kept and model.edge_logits is None
    built = {part for v in model.trainable_variables for part in v.name.split("/")
             if part.startswith("edge_")}
    assert built == {e.layer_name for e in kept}
    for e in kept:
        assert model.projections[e.layer_name].kernel.shape == (
            CFG.tower_units[e.source_layer], CFG.tower_units[e.target_layer])
    with pytest.raises(ValueError, match="not candidates"):
        build_autoheri("autoheri", FEATURES, CFG, TWO, edges=[candidates[1]])


def _copy_towers(src, dst):
    """Give ``dst`` the input layer, tower layers and heads of ``src`` (edges stay its own)."""
    dst.embed.set_weights(src.embed.get_weights())
    for task in src.tasks:
        for a, b in zip(src.hidden[task] + [src.heads[task]], dst.hidden[task] + [dst.heads[task]]):
            b.set_weights(a.get_weights())


def test_a_kept_edge_changes_the_downstream_output_and_leaves_the_upstream_one():
    candidates = candidate_edges(THREE, 2)
    x = _batch()[0]
    none = build_autoheri("autoheri_none", FEATURES, CFG, THREE)
    out_none = none(x)
    one = build_autoheri("autoheri", FEATURES, CFG, THREE, edges=[candidates[0]])  # click->cart
    one(x)
    _copy_towers(none, one)
    out_one = one(x)
    np.testing.assert_allclose(out_one["pctr"].numpy(), out_none["pctr"].numpy(), rtol=1e-6)
    assert not np.allclose(out_one["pcart"].numpy(), out_none["pcart"].numpy())


@pytest.mark.parametrize("targets", [TWO, THREE])
def test_both_chains_build_and_train_a_step(targets):
    x, y = _batch(cart="cart" in targets)
    for name in ("autoheri", "autoheri_none", "autoheri_all"):
        model = build_model(name, FEATURES, CFG, targets)
        model.optimizer = tf.keras.optimizers.Adam(1e-2)
        if name == "autoheri":
            model.edge_optimizer = tf.keras.optimizers.Adam(0.05)
        out = model(x)
        assert ("pcart" in out) == ("cart" in targets)
        before = [v.numpy().copy() for v in model.trainable_variables]
        loss = float(model.train_step((x, y))["loss"])
        assert np.isfinite(loss)
        assert any(not np.allclose(b, v.numpy())
                   for b, v in zip(before, model.trainable_variables))
    n_up = len(targets) - 1
    assert len(build_model("autoheri_all", FEATURES, CFG, targets).edges) == (
        {1: 4, 2: 12}[n_up])


def test_the_three_stage_outputs_multiply_along_the_chain_and_the_loss_is_entire_space():
    cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(8, 4), ctcvr_weight=3.0,
                                      ctcart_weight=0.5))
    model = build_model("autoheri_all", FEATURES, cfg, THREE)
    x, y = _batch()
    out = model(x)
    p = {k: v.numpy() for k, v in out.items()}
    np.testing.assert_allclose(p["pcvr"], p["pcart"] * p["pbuy"], rtol=1e-6)
    np.testing.assert_allclose(p["pctcvr"], p["pctr"] * p["pcvr"], rtol=1e-6)
    click, cart, purchase = (y[k].numpy() for k in ("click", "cart", "purchase"))
    expected = (_np_bce(click, p["pctr"]).mean()
                + 0.5 * _np_bce(click * cart, p["pctr"] * p["pcart"]).mean()
                + 3.0 * _np_bce(click * purchase, p["pctcvr"]).mean())
    assert float(model.compute_loss(out, y)) == pytest.approx(expected, rel=1e-5)


def test_the_none_ablation_on_two_stages_is_esmm():
    """``autoheri_none`` without cart has ESMM's towers and loss: same weights, same outputs."""
    x, y = _batch(cart=False)
    esmm = build_model("esmm", FEATURES, CFG, TWO)
    none = build_model("autoheri_none", FEATURES, CFG, TWO)
    esmm(x), none(x)
    none.embed.set_weights(esmm.embed.get_weights())
    for task, tower in (("click", esmm.ctr_tower), ("purchase", esmm.cvr_tower)):
        for dense, ref in zip(none.hidden[task] + [none.heads[task]], tower.layers):
            dense.set_weights(ref.get_weights())
    out_e, out_n = esmm(x), none(x)
    np.testing.assert_allclose(out_e["pcvr"].numpy(), out_n["pcvr"].numpy(), rtol=1e-6)
    assert float(esmm.compute_loss(out_e, y)) == pytest.approx(
        float(none.compute_loss(out_n, y)), rel=1e-6)


def test_the_purchase_tower_of_the_three_stage_chain_starts_at_purchase_given_cart():
    model = build_model("autoheri_none", FEATURES, CFG, THREE)
    model(_batch()[0])
    model.set_prior_rates({"click": 0.05, "cart": 0.2, "purchase": 0.05})
    bias = {t: float(layer.bias.numpy()[0]) for t, layer in model.output_layers().items()}
    assert bias["purchase"] == pytest.approx(np.log(0.25 / 0.75), rel=1e-6)
    assert bias["cart"] == pytest.approx(np.log(0.2 / 0.8), rel=1e-6)


def test_the_random_ablation_needs_its_edge_count_and_is_seeded_by_the_run():
    with pytest.raises(ValueError, match="autoheri_random_edges"):
        build_model("autoheri_random", FEATURES, CFG, THREE)
    cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(8, 4), autoheri_random_edges=3))
    a, b, c = (build_model("autoheri_random", FEATURES, cfg, THREE, seed=s) for s in (0, 0, 1))
    assert a.edges == b.edges and len(a.edges) == 3 and a.edges != c.edges
    topk = model_config_from_flat(dict(embedding_dim=4, tower_units=(8, 4), autoheri_derive="topk",
                                       autoheri_top_k=5))
    assert len(build_model("autoheri_random", FEATURES, topk, THREE).edges) == 5


# ---------------------------------------------------------------- issue 33: the search's fixes

def test_zero_initialised_projections_make_every_edge_start_as_the_edgeless_chain():
    cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(8, 4),
                                      autoheri_zero_init_projections=True))
    every = build_model("autoheri_all", FEATURES, cfg, THREE)
    none = build_model("autoheri_none", FEATURES, cfg, THREE)
    x, y = _batch()
    every(x), none(x)
    assert every.projections and all(not np.any(p.kernel.numpy())
                                     for p in every.projections.values())
    # the same tower weights give the same outputs: the edges add exactly nothing yet ...
    kernels = [p.kernel for p in every.projections.values()]
    shared = [v for v in every.weights if not any(v is k for k in kernels)]
    assert [v.shape for v in shared] == [v.shape for v in none.weights]
    for src, dst in zip(shared, none.weights):
        dst.assign(src)
    out_every, out_none = every(x), none(x)
    np.testing.assert_allclose(out_every["pcvr"].numpy(), out_none["pcvr"].numpy(), atol=1e-7)
    # ... and their gradient is not zero: an edge can grow
    with tf.GradientTape() as tape:
        loss = every.compute_loss(every(x, training=True), y)
    grads = tape.gradient(loss, [p.kernel for p in every.projections.values()])
    assert any(np.abs(g.numpy()).max() > 0 for g in grads)


def test_a_falling_temperature_pushes_the_gates_toward_zero_or_one():
    def gates_after(steps, final):
        cfg = model_config_from_flat(dict(embedding_dim=4, tower_units=(8, 4),
                                          autoheri_temperature=1.0,
                                          autoheri_temperature_final=final))
        model = _searchable(cfg)
        model.set_planned_steps(steps)
        x, _ = _batch()
        model(x)
        model.optimizer.build(model.trainable_variables)
        model.edge_logits.assign(np.linspace(-0.5, 0.5, model.edge_logits.shape[0]))
        before = model.edge_probabilities().numpy()
        model.optimizer.iterations.assign(steps)
        return before, model.edge_probabilities().numpy()

    before, constant = gates_after(10, 1.0)
    np.testing.assert_allclose(before, constant)
    before, annealed = gates_after(10, 0.1)
    # at the end of the search T = 0.1: p = sigmoid(a / 0.1)
    np.testing.assert_allclose(annealed, 1 / (1 + np.exp(-np.linspace(-0.5, 0.5, 12) / 0.1)),
                               rtol=1e-5)
    assert np.abs(annealed - 0.5).min() >= np.abs(before - 0.5).min()
    assert np.abs(annealed - 0.5).mean() > 2 * np.abs(before - 0.5).mean()


@pytest.mark.parametrize("flat, param", [
    (dict(autoheri_temperature=1.0, autoheri_temperature_final=2.0), "autoheri_temperature_final"),
    (dict(autoheri_search_epochs=-1.0), "autoheri_search_epochs"),
])
def test_bad_search_options_are_refused_naming_the_parameter(flat, param):
    with pytest.raises(ValueError, match=param):
        model_config_from_flat(dict(embedding_dim=4, tower_units=(8, 4), **flat))
