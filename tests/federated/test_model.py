"""federated.model: the media bottom network, the advertiser's top model and their exports."""

import os

import numpy as np
import pytest
import tensorflow as tf

from federated.model import (MEDIA_EMBEDDING, MediaBottom, WithMediaEmbedding, build_top_model,
                             export_bottom, export_top)
from federated.parties import ADVERTISER, MEDIA, PartyData
from models.config import ModelConfig

TINY = ModelConfig(embedding_dim=4, tower_units=(8,))
TARGETS = ("click", "cart", "purchase")
ROWS = np.arange(64)


@pytest.fixture(scope="module")
def parties(party_dirs):
    """``(media, advertiser)`` ``PartyData`` of the training split."""
    out, _ = party_dirs
    return (PartyData.load(os.path.join(out, MEDIA), "train"),
            PartyData.load(os.path.join(out, ADVERTISER), "train"))


def _tensors(x):
    return {k: tf.convert_to_tensor(v) for k, v in x.items()}


def _serve(path, inputs):
    fn = tf.saved_model.load(path).signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(**_tensors(inputs)).items()}


@pytest.mark.parametrize("name", ["esmm", "naive"])
def test_top_model_with_a_width_takes_the_media_embedding_into_pcvr(parties, name):
    _, adv = parties
    model = build_top_model(name, adv.features, TINY, TARGETS, width=4, seed=0)
    assert isinstance(model.embed, WithMediaEmbedding)
    assert isinstance(model.cvr_embed, WithMediaEmbedding)
    assert (model.cvr_embed is model.embed) == (name == "esmm")  # naive: two input layers
    x = adv.batch(ROWS)
    rng = np.random.default_rng(0)
    out = {}
    for i, embedding in enumerate((np.zeros((len(ROWS), 4)), rng.normal(0, 3, (len(ROWS), 4)))):
        out[i] = model(_tensors({**x, MEDIA_EMBEDDING: embedding.astype(np.float32)}))
    assert out[0]["pcvr"].shape == (len(ROWS),)
    assert not np.allclose(out[0]["pcvr"].numpy(), out[1]["pcvr"].numpy(), atol=1e-4)
    assert not np.allclose(out[0]["pctr"].numpy(), out[1]["pctr"].numpy(), atol=1e-4)


def test_top_model_of_width_zero_is_the_plain_harness_model(parties):
    _, adv = parties
    model = build_top_model("esmm", adv.features, TINY, TARGETS, width=0, seed=0)
    assert not isinstance(model.embed, WithMediaEmbedding)
    out = model(_tensors(adv.batch(ROWS)))  # no media_embedding needed
    assert set(out) >= {"pctr", "pcvr", "pctcvr"}
    assert all(v.shape == (len(ROWS),) for k, v in out.items() if k in ("pctr", "pcvr"))


def test_media_bottom_gives_one_row_of_width_units_per_sample(parties):
    media, _ = parties
    bottom = MediaBottom(media.features, width=6, units=(8,), embedding_dim=4)
    out = bottom(_tensors(media.batch(ROWS)))
    assert out.shape == (len(ROWS), 6) and out.dtype == tf.float32


def test_exported_bottom_reproduces_the_keras_embeddings(parties, tmp_path):
    media, _ = parties
    bottom = MediaBottom(media.features, width=4, units=(8,), embedding_dim=4)
    x = media.batch(ROWS)
    expected = bottom(_tensors(x)).numpy()
    path = str(tmp_path / "bottom")
    signature = export_bottom(bottom, media.features, path)
    assert signature["outputs"][MEDIA_EMBEDDING]["shape"] == [None, 4]
    assert set(signature["inputs"]) == set(x)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".saved_model.partial-")]
    got = _serve(path, x)
    np.testing.assert_allclose(got[MEDIA_EMBEDDING], expected, rtol=1e-5, atol=1e-6)


def test_exported_top_reproduces_the_keras_predictions(parties, tmp_path):
    _, adv = parties
    model = build_top_model("esmm", adv.features, TINY, TARGETS, width=4, seed=0)
    x = adv.batch(ROWS)
    x[MEDIA_EMBEDDING] = np.random.default_rng(1).normal(size=(len(ROWS), 4)).astype(np.float32)
    expected = model(_tensors(x), training=False)
    path = str(tmp_path / "top")
    signature = export_top(model, adv.features, 4, path)
    assert signature["inputs"][MEDIA_EMBEDDING]["shape"] == [None, 4]
    assert set(signature["outputs"]) == {"pctr", "pcvr", "pctcvr"}
    got = _serve(path, x)
    for k in ("pctr", "pcvr", "pctcvr"):
        np.testing.assert_allclose(got[k], expected[k].numpy(), rtol=1e-5, atol=1e-6)
