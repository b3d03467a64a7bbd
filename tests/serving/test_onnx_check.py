"""serving.onnx_export.check_against_tensorflow: the ONNX-vs-TensorFlow check is relative to
each output's scale (probabilities absolute, unbounded outputs such as an embedding relative)."""

import numpy as np
import pytest
import tensorflow as tf

from serving import onnx_export


def _saved_model(path, scale):
    class Scaled(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"pcvr": tf.sigmoid(x), "embedding": x * scale}
    module = Scaled()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


def _fake_onnx(monkeypatch, offsets):
    class Fake:
        def __init__(self, path, providers=None, outputs=()):
            self.outputs = outputs

        def __call__(self, feed):
            x = np.asarray(feed["x"], np.float32)
            exact = {"pcvr": 1 / (1 + np.exp(-x)), "embedding": x * SCALE}
            return {k: (exact[k] + offsets[k]).astype(np.float32) for k in self.outputs}
    monkeypatch.setattr(onnx_export, "OnnxModel", Fake)


SCALE = 2000.0


def test_an_embedding_of_large_magnitude_passes_within_a_few_float32_spacings(
        tmp_path, monkeypatch):
    saved = _saved_model(tmp_path / "m", SCALE)
    feed = {"x": np.array([-1.0, 0.5, 1.0], np.float32)}
    _fake_onnx(monkeypatch, {"pcvr": 0.0, "embedding": 2.44e-4})  # one spacing at 2000
    diff = onnx_export.check_against_tensorflow(saved, "m.onnx", feed,
                                                outputs=("pcvr", "embedding"))
    assert diff == pytest.approx(2.44e-4, rel=1e-2)


def test_a_probability_off_by_more_than_the_tolerance_is_refused(tmp_path, monkeypatch):
    saved = _saved_model(tmp_path / "m", SCALE)
    feed = {"x": np.array([-1.0, 0.5, 1.0], np.float32)}
    _fake_onnx(monkeypatch, {"pcvr": 1e-4, "embedding": 0.0})
    with pytest.raises(RuntimeError, match="differ by"):
        onnx_export.check_against_tensorflow(saved, "m.onnx", feed,
                                             outputs=("pcvr", "embedding"))
    _fake_onnx(monkeypatch, {"pcvr": 0.0, "embedding": 0.1})  # 5e-5 of the scale
    with pytest.raises(RuntimeError, match="of the output's scale"):
        onnx_export.check_against_tensorflow(saved, "m.onnx", feed,
                                             outputs=("pcvr", "embedding"))
