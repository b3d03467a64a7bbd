"""The shared input layer, built from the Merlin schema of a processed dataset.

Every model (the baselines here, AutoHERI, UKD and the federated towers later) embeds its
inputs with this one layer, so that a comparison between models is a comparison of what sits
on top of it.

- Categorical features: one embedding table each, sized from the Categorify cardinality in the
  schema (folded by modulo above ``max_embedding_rows``).
- Multi-hot features: the Merlin loader's ``name__values`` / ``name__offsets`` pair, embedded and
  mean-pooled per row.
- Continuous features: concatenated as they are (already normalised by the workflow).

Columns tagged ``ground_truth``, ``target`` or ``time_split`` are never features: the feature
list comes from ``preprocessing.workflow.feature_columns``, and ``InputLayer`` refuses a feature
spec that names a ground-truth column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import tensorflow as tf

from preprocessing import columns as C
from preprocessing.workflow import feature_columns

KINDS = ("categorical", "multihot", "continuous")


@dataclass(frozen=True)
class Feature:
    """One model input: its column name, kind and (for ids) vocabulary cardinality."""

    name: str
    kind: str
    cardinality: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Feature '{self.name}': kind must be one of {KINDS}, "
                             f"got {self.kind!r}")
        if self.kind != "continuous" and self.cardinality < 1:
            raise ValueError(f"Feature '{self.name}': a {self.kind} feature needs a "
                             f"cardinality >= 1, got {self.cardinality}")


def features_from_schema(schema) -> List[Feature]:
    """The model inputs of a processed Merlin schema, in schema order."""
    out = []
    for name in feature_columns(schema):
        col = schema[name]
        tags = {str(getattr(t, "value", t)) for t in col.tags}
        if "continuous" in tags:
            out.append(Feature(name, "continuous"))
        else:
            card = int(col.properties["embedding_sizes"]["cardinality"])
            out.append(Feature(name, "multihot" if col.is_list else "categorical", card))
    return out


def input_names(features: Sequence[Feature]) -> List[str]:
    """The tensor names the model takes (multi-hot features as values + offsets)."""
    names = []
    for f in features:
        if f.kind == "multihot":
            names += [f"{f.name}__values", f"{f.name}__offsets"]
        else:
            names.append(f.name)
    return names


@tf.keras.utils.register_keras_serializable(package="extcvr")
class InputLayer(tf.keras.layers.Layer):
    """Embeds categorical and multi-hot features and concatenates continuous ones.

    Args:
        features: the model inputs (see ``features_from_schema``).
        embedding_dim: width of every embedding.
        max_embedding_rows: cap on rows per table (0 = none); ids are folded by modulo.
        l2: L2 penalty on the embedding outputs.

    Input: a dict of tensors keyed by ``input_names(features)``; ids are int, continuous
    values float, offsets the row splits of the multi-hot values.
    Output: a float32 tensor of shape (batch, output_dim).
    """

    def __init__(self, features: Sequence[Feature], embedding_dim: int = 16,
                 max_embedding_rows: int = 0, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        leaked = [f.name for f in features if f.name in C.GROUND_TRUTH or f.name in C.FUNNEL]
        if leaked:
            raise ValueError(f"InputLayer: columns {leaked} are ground truth or targets and can "
                             f"never be model features")
        self.features = [f if isinstance(f, Feature) else Feature(**f) for f in features]
        self.embedding_dim = embedding_dim
        self.max_embedding_rows = max_embedding_rows
        self.l2 = l2
        self.tables: Dict[str, tf.keras.layers.Embedding] = {}
        for f in self.features:
            if f.kind != "continuous":
                rows = f.cardinality
                if max_embedding_rows:
                    rows = min(rows, max_embedding_rows)
                self.tables[f.name] = tf.keras.layers.Embedding(
                    rows, embedding_dim, name=f"emb_{f.name}",
                    embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.05))

    @property
    def output_dim(self) -> int:
        """Width of the concatenated output."""
        n_cont = sum(f.kind == "continuous" for f in self.features)
        return n_cont + self.embedding_dim * (len(self.features) - n_cont)

    def _rows(self, name: str, ids: tf.Tensor) -> tf.Tensor:
        table = self.tables[name]
        ids = tf.cast(tf.reshape(ids, [-1]), tf.int64)
        return table(tf.math.floormod(ids, tf.cast(table.input_dim, tf.int64)))

    def call(self, inputs: Dict[str, tf.Tensor]) -> tf.Tensor:
        parts = []
        for f in self.features:
            if f.kind == "categorical":
                parts.append(self._rows(f.name, inputs[f.name]))
            elif f.kind == "multihot":
                values = tf.reshape(inputs[f"{f.name}__values"], [-1])
                splits = tf.cast(tf.reshape(inputs[f"{f.name}__offsets"], [-1]), tf.int64)
                ragged = tf.RaggedTensor.from_row_splits(self._rows(f.name, values), splits)
                parts.append(tf.reduce_mean(ragged, axis=1))
            else:
                parts.append(tf.reshape(tf.cast(inputs[f.name], tf.float32), [-1, 1]))
        out = tf.concat(parts, axis=1)
        if self.l2:
            self.add_loss(self.l2 * tf.reduce_mean(tf.reduce_sum(tf.square(out), axis=1)))
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"features": [vars(f) for f in self.features],
                       "embedding_dim": self.embedding_dim,
                       "max_embedding_rows": self.max_embedding_rows, "l2": self.l2})
        return config
