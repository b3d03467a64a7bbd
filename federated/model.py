"""The split model: the media party's bottom network and the advertiser's top network.

- :class:`MediaBottom` (media side): the harness's input layer over the ``media_*`` features,
  a small ReLU MLP and a linear layer of ``width`` units: the embedding that crosses to the
  advertiser (EFLS's "follower" network).
- :func:`build_top_model` (advertiser side): any harness model (ESMM, AutoHERI, UKD, ...) over
  the advertiser's features, whose input layer also takes the received embedding
  (:class:`WithMediaEmbedding`): the towers see ``concat(advertiser inputs, media embedding)``.
  With ``width=0`` it is the plain harness model: the advertiser-only baseline, and, given every
  column, the centralised upper bound.

The model code computes outputs and losses only; the loops live in ``federated.training``.
References: Alibaba EFLS (github.com/alibaba/Elastic-Federated-Learning-Solution); Vepakomma et
al., "Split learning for health", 2018.
"""

from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf

from models.baselines import CVRModel, mlp
from models.config import ModelConfig
from models.registry import build_model
from models.export import save_atomically, signature_specs
from models.inputs import Feature, InputLayer

MEDIA_EMBEDDING = "media_embedding"


@tf.keras.utils.register_keras_serializable(package="extcvr")
class MediaBottom(tf.keras.Model):
    """The media party's network: ``features -> embedding`` of ``width`` units.

    Args:
        features: the media party's inputs (``media_*`` columns).
        width: the embedding's width (what crosses the wire per sample).
        units: hidden ReLU units between the input layer and the embedding.
        embedding_dim: width of each categorical feature's table.
    """

    def __init__(self, features: Sequence[Feature], width: int, units: Sequence[int] = (64,),
                 embedding_dim: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.width = int(width)
        self.embed = InputLayer(features, embedding_dim, name="media_inputs")
        self.hidden = mlp(tuple(units), 0.0, "media_bottom", output=False)
        self.project = tf.keras.layers.Dense(self.width, name="media_embedding")

    def call(self, inputs, training=False):
        return self.project(self.hidden(self.embed(inputs), training=training))


@tf.keras.utils.register_keras_serializable(package="extcvr")
class WithMediaEmbedding(tf.keras.layers.Layer):
    """An input layer that appends the media party's embedding to the advertiser's inputs.

    Args:
        inner: the advertiser's own ``InputLayer``.
        width: the embedding's width; the input dict carries it as ``media_embedding``.
    """

    def __init__(self, inner: InputLayer, width: int, **kwargs):
        super().__init__(**kwargs)
        self.inner, self.width = inner, int(width)

    @property
    def output_dim(self) -> int:
        """Width of the concatenated output."""
        return self.inner.output_dim + self.width

    def call(self, inputs):
        media = tf.reshape(tf.cast(inputs[MEDIA_EMBEDDING], tf.float32), [-1, self.width])
        return tf.concat([self.inner(inputs), media], axis=1)


def build_top_model(name: str, features: Sequence[Feature], config: ModelConfig,
                    targets: Sequence[str], width: int, seed: int = 0) -> CVRModel:
    """The harness model ``name`` over ``features``, taking a ``width``-wide media embedding
    too (``width=0``: the plain model). Every harness model embeds its inputs through
    ``self.embed`` (and two-tower models without shared tables through ``self.cvr_embed``), so
    wrapping those layers feeds the embedding to every tower."""
    model = build_model(name, features, config, targets, seed)
    if width:
        shared = getattr(model, "cvr_embed", None) is model.embed
        model.embed = WithMediaEmbedding(model.embed, width, name="inputs_with_media")
        if shared:
            model.cvr_embed = model.embed
        elif hasattr(model, "cvr_embed"):
            model.cvr_embed = WithMediaEmbedding(model.cvr_embed, width,
                                                 name="cvr_inputs_with_media")
    return model


def export_bottom(bottom: MediaBottom, features: Sequence[Feature], path: str) -> Dict:
    """Write the media bottom network as a SavedModel: processed media features in,
    ``media_embedding`` (float32, ``[None, width]``) out. No noise: the DP noise is added by the
    sender at request time (``federated.privacy``). Returns the signature description."""
    specs = signature_specs(features)
    module = tf.Module(name="extcvr_media_bottom")
    module.model_variables = list(bottom.variables)

    @tf.function(input_signature=[specs])
    def serve(inputs):
        return {MEDIA_EMBEDDING: tf.cast(bottom(inputs, training=False), tf.float32)}

    module.serve = serve
    save_atomically(module, serve, path)
    return {"inputs": {k: {"dtype": s.dtype.name, "shape": [None]} for k, s in specs.items()},
            "outputs": {MEDIA_EMBEDDING: {"dtype": "float32", "shape": [None, bottom.width]}}}


def export_top(model: CVRModel, features: Sequence[Feature], width: int, path: str) -> Dict:
    """Write the advertiser's top network as a SavedModel: processed advertiser features and
    (``width > 0``) ``media_embedding`` (float32, ``[None, width]``) in; ``pctr``, ``pcvr``,
    ``pctcvr`` out. Returns the signature description."""
    specs = dict(signature_specs(features))
    if width:
        specs[MEDIA_EMBEDDING] = tf.TensorSpec([None, width], tf.float32, name=MEDIA_EMBEDDING)
    module = tf.Module(name="extcvr_top")
    module.model_variables = list(model.variables)

    @tf.function(input_signature=[specs])
    def serve(inputs):
        out = model(inputs, training=False)
        return {k: tf.cast(out[k], tf.float32) for k in ("pctr", "pcvr", "pctcvr")}

    module.serve = serve
    save_atomically(module, serve, path)
    inputs = {k: {"dtype": s.dtype.name, "shape": [None]} for k, s in specs.items()}
    if width:
        inputs[MEDIA_EMBEDDING]["shape"] = [None, width]
    return {"inputs": inputs, "outputs": {k: {"dtype": "float32", "shape": [None]}
                                          for k in ("pctr", "pcvr", "pctcvr")}}
