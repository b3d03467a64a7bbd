"""The run's SavedModel as an ONNX model for ONNX Runtime, checked against TensorFlow.

ONNX Runtime runs the ``predict`` step of the CPU target: on this 2-core machine it is about 5x
faster than calling the SavedModel's signature at batch 1 and about 3x at batch 200, with a
maximum difference of about 1e-7 (``benchmarks/RESULTS.md``, "Serving"). The conversion is
tf2onnx's own command line on the SavedModel (same signature: ids int64, continuous float32,
multi-hot ``__values`` / ``__offsets``); after it, both models score a probe batch (built by
``serving.export.probe_feed`` from the workflow's fitted state or a ``--probe`` file) and the
ONNX model is refused unless they agree within ``tolerance``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

OPSET = 15
CPU_PROVIDER = "CPUExecutionProvider"
OUTPUTS = ("pctr", "pcvr")


def convert_saved_model(saved_model: str, onnx_path: str, opset: int = OPSET) -> None:
    """Convert ``saved_model`` (its ``serving_default``) to ``onnx_path`` with tf2onnx.

    Raises:
        RuntimeError: tf2onnx failed; the message holds the tail of its output.
    """
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved_model,
           "--output", onnx_path, "--opset", str(opset)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.isfile(onnx_path):
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RuntimeError(f"tf2onnx could not convert {saved_model}:\n{tail}")
    import onnx
    model = onnx.load(onnx_path)  # tf2onnx writes "converted from <absolute source path>"
    model.graph.doc_string = "tf2onnx conversion of the run's SavedModel (serving_default)"
    onnx.save(model, onnx_path)


class OnnxModel:
    """The exported model under an ONNX Runtime session.

    Args:
        onnx_path: the ``model.onnx`` written by ``convert_saved_model``.
        threads: intra/inter-op threads (0 = ONNX Runtime's default).
        providers: the session's execution providers (default: the CPU provider only); a
            ``KIND_GPU`` predict instance passes ``preprocessing.device``'s
            ``onnx_providers(gpu)``.
        outputs: the model outputs to compute (default ``pctr``, ``pcvr``).
    """

    def __init__(self, onnx_path: str, threads: int = 1,
                 providers: Optional[Sequence[object]] = None,
                 outputs: Sequence[str] = OUTPUTS):
        import onnxruntime as ort
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = threads
        self.session = ort.InferenceSession(onnx_path, options,
                                            providers=list(providers or [CPU_PROVIDER]))
        self.outputs = [o.name for o in self.session.get_outputs() if o.name in outputs]

    def run(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The outputs (float32, in the model's shapes) of one feed of signature inputs."""
        values = self.session.run(self.outputs, {k: np.asarray(v) for k, v in feed.items()})
        return {k: np.asarray(v, dtype=np.float32) for k, v in zip(self.outputs, values)}

    def __call__(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The outputs, e.g. ``pctr`` and ``pcvr``, flattened (1-D float32)."""
        return {k: v.reshape(-1) for k, v in self.run(feed).items()}


def check_against_tensorflow(saved_model: str, onnx_path: str, feed: Mapping[str, np.ndarray],
                             tolerance: float = 1e-5,
                             providers: Optional[Sequence[object]] = None,
                             outputs: Sequence[str] = OUTPUTS) -> float:
    """Max abs difference of ``outputs`` (default ``pctr`` / ``pcvr``) between the SavedModel
    and the ONNX model (under ``providers``, those it will be served with; default the CPU
    provider).

    The check is relative to each output's scale: ``tolerance`` times ``max(1, max |output|)``.
    Probabilities are checked to ``tolerance`` absolute; an unbounded output (a media embedding
    of magnitude 2000 has a float32 spacing of 2.4e-4) to ``tolerance`` of its largest value,
    since two correct float32 programs that sum in another order differ by a few spacings.

    Raises:
        RuntimeError: the difference exceeds the tolerance.
    """
    import tensorflow as tf
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    ref = serve(**{k: tf.constant(v) for k, v in feed.items()})
    got = OnnxModel(onnx_path, providers=providers, outputs=outputs)(feed)
    diff, worst = 0.0, 0.0
    for k in outputs:
        expected = ref[k].numpy().reshape(-1)
        gap = float(np.max(np.abs(expected - got[k]))) if expected.size else 0.0
        scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
        diff, worst = max(diff, gap), max(worst, gap / scale)
    if not worst <= tolerance:
        raise RuntimeError(f"{onnx_path}: ONNX and TensorFlow outputs differ by {diff:.3g} "
                           f"({worst:.3g} of the output's scale, > {tolerance}) on the probe "
                           f"rows; not exported")
    return diff
