"""federated.training: the training order, both halves of a split step, checkpoints and the
label-leak audit (in one process, without gRPC)."""

import os

import numpy as np
import pytest

from federated.parties import ADVERTISER, MEDIA, PartyData
from federated.training import (CHAIN_START, BottomTrainer, LeakAudit, PartyCheckpoints,
                                TopTrainer, TrainingOrder, batch_digest, extend_chain)
from models.config import ModelConfig, TrainConfig

TINY = ModelConfig(embedding_dim=4, tower_units=(8,))
TRAIN = TrainConfig(batch_size=256, learning_rate=0.01, max_steps=20)
TARGETS = ("click", "cart", "purchase")
WIDTH = 4
ROWS = np.arange(256)


@pytest.fixture(scope="module")
def parties(party_dirs):
    """``(media, advertiser)`` ``PartyData`` of the training split."""
    out, _ = party_dirs
    return (PartyData.load(os.path.join(out, MEDIA), "train"),
            PartyData.load(os.path.join(out, ADVERTISER), "train"))


def _bottom(media, clip=None, seed=0):
    bottom = BottomTrainer(media.features, WIDTH, (8,), 4, TRAIN, planned_steps=20, seed=seed,
                           clip=clip)
    bottom.build(media.batch(ROWS[:8]))
    return bottom


def _weights(model):
    return [v.numpy().copy() for v in model.variables]


# --------------------------------------------------------------------------------------------
# Training order and digests
# --------------------------------------------------------------------------------------------

def test_training_order_visits_every_sample_once_per_epoch():
    order = TrainingOrder(n=1003, batch_size=100, epochs=2, shuffle_seed=5)
    assert order.steps_per_epoch == 11 and order.total_steps == 22
    for epoch in range(2):
        steps = range(epoch * 11, (epoch + 1) * 11)
        rows = np.concatenate([order.rows(s) for s in steps])
        assert sorted(rows.tolist()) == list(range(1003))
        assert [len(order.rows(s)) for s in steps] == [100] * 10 + [3]
    assert not np.array_equal(order.rows(0), order.rows(11))  # a new shuffle each epoch


def test_training_order_is_the_same_for_the_same_seed_and_differs_for_another():
    a, b = TrainingOrder(500, 64, 2, 1), TrainingOrder(500, 64, 2, 1)
    c = TrainingOrder(500, 64, 2, 2)
    steps = [3, 0, 9, 4]  # out of order: the cache must not change what a step holds
    assert all(np.array_equal(a.rows(s), b.rows(s)) for s in steps)
    assert not np.array_equal(a.rows(0), c.rows(0))


def test_training_order_stops_at_max_steps():
    assert TrainingOrder(1000, 100, 3, 0, max_steps=7).total_steps == 7
    assert TrainingOrder(1000, 100, 3, 0, max_steps=100).total_steps == 30


def test_training_order_refuses_an_empty_intersection():
    with pytest.raises(ValueError, match="empty intersection"):
        TrainingOrder(0, 100, 1, 0)


def test_batch_digest_and_chain_are_deterministic_and_order_sensitive():
    keys = np.array([11, 22, 33], dtype=np.uint64)
    assert batch_digest(keys) == batch_digest(keys.copy())
    assert len(batch_digest(keys)) == 32
    assert batch_digest(keys) != batch_digest(keys[::-1])
    d1, d2 = batch_digest(keys), batch_digest(keys[::-1])
    assert extend_chain(CHAIN_START, d1) == extend_chain(CHAIN_START, d1)
    assert extend_chain(extend_chain(CHAIN_START, d1), d2) != extend_chain(
        extend_chain(CHAIN_START, d2), d1)
    assert extend_chain(CHAIN_START, d1) != CHAIN_START


# --------------------------------------------------------------------------------------------
# Both halves of a step
# --------------------------------------------------------------------------------------------

def test_top_trainer_step_returns_an_embedding_gradient_and_lowers_the_loss(parties):
    _, adv = parties
    top = TopTrainer("esmm", adv.features, TARGETS, WIDTH, TINY, TRAIN, planned_steps=20,
                     seed=0)
    x, labels = adv.batch(ROWS), adv.columns(TARGETS, ROWS)
    embedding = np.random.default_rng(0).normal(size=(len(ROWS), WIDTH)).astype(np.float32)
    top.build(x, embedding)
    losses = []
    for _ in range(8):
        loss, grad = top.step(x, labels, embedding)
        assert grad.shape == (len(ROWS), WIDTH) and np.isfinite(grad).all()
        losses.append(loss)
    assert np.abs(grad).sum() > 0
    assert losses[-1] < losses[0]
    preds = top.predict(x, embedding)
    assert {k: v.shape for k, v in preds.items()} == {k: (len(ROWS),)
                                                      for k in ("pctr", "pcvr", "pctcvr")}


def test_bottom_trainer_backward_changes_the_bottom_weights(parties):
    media, _ = parties
    bottom = _bottom(media)
    x = media.batch(ROWS)
    e = bottom.forward(x)
    assert e.shape == (len(ROWS), WIDTH)
    before = _weights(bottom.model)
    bottom.backward(x, np.random.default_rng(0).normal(size=e.shape))
    after = _weights(bottom.model)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    assert not np.allclose(bottom.forward(x), e)


def test_bottom_trainer_with_clip_sends_rows_no_longer_than_clip(parties):
    media, _ = parties
    x = media.batch(ROWS)
    plain = _bottom(media)
    unclipped = np.linalg.norm(plain.forward(x), axis=1)
    clip = float(np.median(unclipped))
    clipped = _bottom(media, clip=clip)
    clipped.model.set_weights(plain.model.get_weights())
    norms = np.linalg.norm(clipped.forward(x), axis=1)
    assert norms.max() <= clip * (1 + 1e-5)
    short = unclipped < clip
    np.testing.assert_allclose(norms[short], unclipped[short], rtol=1e-5)
    np.testing.assert_allclose(norms[~short], clip, rtol=1e-5)


def test_the_same_seed_gives_the_same_initial_bottom_weights(parties):
    media, _ = parties
    first, second = _bottom(media, seed=0), _bottom(media, seed=0)
    for a, b in zip(_weights(first.model), _weights(second.model)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def test_party_checkpoints_round_trip_step_applied_chain_and_weights(parties, tmp_path):
    media, _ = parties
    x = media.batch(ROWS)
    grad = np.random.default_rng(0).normal(size=(len(ROWS), WIDTH))
    bottom = _bottom(media)
    ckpts = PartyCheckpoints(str(tmp_path / "ckpt"), bottom.model)
    ckpts.save()  # step 0
    at_zero = _weights(bottom.model)
    for digest in ("aa", "bb"):
        bottom.backward(x, grad)
        ckpts.record(digest)
    ckpts.save()  # step 2
    at_two, state_two = _weights(bottom.model), ckpts.state()
    assert state_two == {"step": 2, "applied_batches": 2,
                         "chain": extend_chain(extend_chain(CHAIN_START, "aa"), "bb")}
    bottom.backward(x, grad)
    ckpts.record("cc")

    # a resumed process: a fresh model and fresh checkpoint objects over the same directory
    resumed = _bottom(media, seed=1)
    again = PartyCheckpoints(str(tmp_path / "ckpt"), resumed.model)
    assert again.steps() == [0, 2]
    again.restore(2)
    assert again.state() == state_two
    for a, b in zip(_weights(resumed.model), at_two):
        np.testing.assert_array_equal(a, b)
    again.restore(0)
    assert again.state() == {"step": 0, "applied_batches": 0, "chain": CHAIN_START}
    for a, b in zip(_weights(resumed.model), at_zero):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 1"):
        again.restore(1)


# --------------------------------------------------------------------------------------------
# Leak audit
# --------------------------------------------------------------------------------------------

def test_leak_audit_scores_separable_gradients_near_one_and_noise_near_half():
    rng = np.random.default_rng(0)
    leaky, blind = LeakAudit(), LeakAudit()
    for _ in range(5):
        y = (rng.random(200) < 0.2).astype(np.int32)
        g = np.where(y[:, None] == 1, [2.0, 0.0, 0.0], [0.0, -0.3, 0.0]) \
            + 0.05 * rng.normal(size=(200, 3))
        leaky.add(g, y)
        blind.add(rng.normal(size=(200, 3)), y)
    aucs = leaky.aucs()
    assert aucs["leak_auc_norm"] > 0.99 and aucs["leak_auc_direction"] > 0.99
    assert aucs["leak_auc_pca"] > 0.99  # the rare class in the long tail of the first PC
    for value in blind.aucs().values():
        assert abs(value - 0.5) < 0.06


def test_leak_audit_is_nan_without_both_classes():
    audit = LeakAudit()
    assert all(np.isnan(v) for v in audit.aucs().values())
    audit.add(np.ones((10, 3)), np.zeros(10))  # no positive: no direction scores
    assert audit.scores["direction"] == []
    assert all(np.isnan(v) for v in audit.aucs().values())


def test_leak_audit_segments_rebuild_the_audit_of_a_checkpoint_and_drop_later_ones(tmp_path):
    from federated.training import load_audits, save_audit_segment
    rng = np.random.default_rng(1)
    sent, raw = LeakAudit(), LeakAudit()
    batches = [((rng.random(50) < 0.3).astype(np.int8), rng.normal(size=(50, 3)))
               for _ in range(6)]
    for step, (y, g) in enumerate(batches, 1):
        sent.add(g, y, sum_kl=0.01 * step)
        raw.add(g * 2, y)
        if step % 2 == 0:
            save_audit_segment(str(tmp_path), step, {"sent": sent, "raw": raw})
    back = load_audits(str(tmp_path), 4, ("sent", "raw"))  # a restart resumes at step 4
    again = LeakAudit()
    for y, g in batches[:4]:
        again.add(g, y, sum_kl=0.0)
    assert back["sent"].sum_kl == pytest.approx([0.01, 0.02, 0.03, 0.04])
    for attack in LeakAudit.ATTACKS:
        np.testing.assert_allclose(np.concatenate(back["sent"].scores[attack]),
                                   np.concatenate(again.scores[attack]), rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit-2.npz", "audit-4.npz"]
    empty = load_audits(str(tmp_path / "none"), 0, ("sent",))["sent"]
    assert empty.aucs()["leak_auc_norm"] != empty.aucs()["leak_auc_norm"]  # nan
