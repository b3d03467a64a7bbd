"""Export a trained model as a TensorFlow SavedModel with a ``serving_default`` signature.

The signature takes the processed features exactly as the Merlin loader yields them (ids int64,
continuous float32, multi-hot features as ``name__values`` int64 plus ``name__offsets`` int64
row splits) and returns ``pctr``, ``pcvr`` and ``pctcvr`` (float32, one per row). The export
is written to a staging directory and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Dict, Sequence

import tensorflow as tf

from models.inputs import Feature


def signature_specs(features: Sequence[Feature]) -> Dict[str, tf.TensorSpec]:
    """TensorSpecs of the serving signature's inputs."""
    specs = {}
    for f in features:
        if f.kind == "continuous":
            specs[f.name] = tf.TensorSpec([None], tf.float32, name=f.name)
        elif f.kind == "categorical":
            specs[f.name] = tf.TensorSpec([None], tf.int64, name=f.name)
        else:
            specs[f"{f.name}__values"] = tf.TensorSpec([None], tf.int64, name=f"{f.name}__values")
            specs[f"{f.name}__offsets"] = tf.TensorSpec([None], tf.int64,
                                                        name=f"{f.name}__offsets")
    return specs


def cast_to_signature(batch: Dict[str, tf.Tensor], specs: Dict[str, tf.TensorSpec]
                      ) -> Dict[str, tf.Tensor]:
    """Select and cast a loader batch to the signature's names and dtypes."""
    return {k: tf.cast(tf.reshape(batch[k], [-1]), s.dtype) for k, s in specs.items()}


class ServingModule(tf.Module):
    """What the SavedModel holds: the model's variables and its ``serving_default`` function.

    Not the Keras object itself: saving a Keras model also traces every layer's call
    functions for Keras' own loader, which took half of a short training run's time and which
    nothing here uses (serving, evaluation, ONNX conversion and the NGC wrapper all call the
    signature).
    """

    def __init__(self, model: tf.keras.Model, specs: Dict[str, tf.TensorSpec]):
        super().__init__(name="extcvr_serving")
        self.model_variables = list(model.variables)  # tracked: restored with the signature

        @tf.function(input_signature=[specs])
        def serve(inputs):
            out = model(inputs, training=False)
            return {k: tf.cast(out[k], tf.float32) for k in ("pctr", "pcvr", "pctcvr")}

        self.serve = serve


def save_atomically(module: tf.Module, serve, path: str) -> None:
    """``tf.saved_model.save`` of ``module`` with ``serve`` as its ``serving_default``
    signature, written to a staging directory beside ``path`` and renamed into place."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".saved_model.partial-", dir=parent)
    try:
        tf.saved_model.save(module, staging, signatures={"serving_default": serve})
        if os.path.exists(path):
            shutil.rmtree(path)
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export_saved_model(model: tf.keras.Model, features: Sequence[Feature], path: str) -> Dict:
    """Write ``model`` as a SavedModel at ``path`` (its ``serving_default`` signature, see
    :class:`ServingModule`); returns the signature description."""
    specs = signature_specs(features)
    module = ServingModule(model, specs)
    save_atomically(module, module.serve, path)
    return {"inputs": {k: {"dtype": s.dtype.name, "shape": [None]} for k, s in specs.items()},
            "outputs": {k: {"dtype": "float32", "shape": [None]}
                        for k in ("pctr", "pcvr", "pctcvr")}}
