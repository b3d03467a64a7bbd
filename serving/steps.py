"""The three compute steps of the ``extcvr`` ensemble, free of Triton so that tests and the
in-process benchmark call exactly what the Python-backend models call.

Each step reads its version directory (written by ``python -m serving.export``): the artifact
(workflow / SavedModel / calibrator) plus ``serving.json`` with the step's settings. ``run`` takes
the tensors of several requests (what Triton's dynamic batcher hands to one ``execute``) and
returns, per request, a dict of output tensors or a ``RequestError``: one bad request never fails
the others. Valid requests are concatenated and computed in one call.

Every step takes ``gpu``: the device of a ``KIND_GPU`` Triton instance, None for ``KIND_CPU``
(and in-process calls). Only ``predict`` uses it (ONNX Runtime's providers from
``preprocessing.device``, or TensorFlow's device); ``preprocess`` and ``calibrate`` are numpy /
pandas work on the CPU, and ``serving.export`` gives them ``KIND_CPU`` instances.

Tensor layout inside the ensemble (batch dimension first):
- ids ``[B, 1]`` int64, continuous ``[B, 1]`` float32;
- a multi-hot feature as ``[B, W]`` int64 padded with 0 (Categorify's padding id, never a real
  code), with ``W`` = ``max_list`` fixed at export so that the dynamic batcher can merge requests.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from serving.preprocess import LENGTHS_SUFFIX, ListColumn, RequestError, signature_inputs

Tensors = Dict[str, np.ndarray]
Result = Union[Tensors, RequestError]


def read_settings(version_dir: str) -> Dict:
    """``serving.json`` of a step's version directory."""
    with open(os.path.join(version_dir, "serving.json")) as fh:
        return json.load(fh)


def _split(rows: Sequence[int], outputs: Tensors) -> List[Tensors]:
    bounds = np.cumsum([0, *rows])
    return [{k: v[a:b] for k, v in outputs.items()} for a, b in zip(bounds[:-1], bounds[1:])]


class PreprocessStep:
    """Raw request features -> processed model inputs (the training workflow; with
    ``serving.json["columns"]`` only those raw inputs' part of it, e.g. one federated party's,
    ``serving.federated_export``)."""

    def __init__(self, version_dir: str, executor: str = None, gpu: Optional[int] = None):
        from preprocessing import columns as C
        from serving.preprocess import RequestTransformer
        self.settings = read_settings(version_dir)
        spec = C.DatasetSpec.load(version_dir)
        self.transformer = RequestTransformer(os.path.join(version_dir, "workflow"), spec,
                                              executor=executor or self.settings["executor"],
                                              columns=self.settings.get("columns"))
        self.nullable = tuple(self.settings.get("nullable", ()))
        self.max_list = int(self.settings["max_list"])
        self.int_outputs = {c for c, d in self.settings["outputs"].items() if d == "int64"}

    def parse(self, tensors: Mapping[str, np.ndarray]) -> Dict[str, object]:
        """Validated raw columns of one request (``RequestError`` otherwise)."""
        from serving.preprocess import columns_from_tensors
        t = self.transformer
        return columns_from_tensors(tensors, t.inputs, t.multihot, self.nullable, self.max_list)

    def run(self, requests: Sequence[Mapping[str, np.ndarray]]) -> List[Result]:
        results: List[Result] = [None] * len(requests)  # type: ignore[list-item]
        parsed, keep = [], []
        for i, tensors in enumerate(requests):
            try:
                parsed.append(self.parse(tensors))
                keep.append(i)
            except RequestError as e:
                results[i] = e
        if parsed:
            rows = [len(next(iter(p.values()))) for p in parsed]
            merged = _concat_columns(parsed)
            processed = self.transformer.transform(merged)
            out = self.to_tensors(processed)
            for i, part in zip(keep, _split(rows, out)):
                results[i] = part
        return results

    def to_tensors(self, processed: Mapping[str, object]) -> Tensors:
        """Ensemble tensors of processed columns (see the module docstring)."""
        out = {}
        for c, v in processed.items():
            if isinstance(v, ListColumn):
                out[c] = v.to_padded(self.max_list).astype(np.int64)
            elif c in self.int_outputs:
                out[c] = np.asarray(v, dtype=np.int64).reshape(-1, 1)
            else:
                out[c] = np.asarray(v, dtype=np.float32).reshape(-1, 1)
        return out


def _concat_columns(parts: Sequence[Mapping[str, object]]) -> Dict[str, object]:
    if len(parts) == 1:
        return dict(parts[0])
    out = {}
    for c, v in parts[0].items():
        if isinstance(v, ListColumn):
            out[c] = ListColumn(np.concatenate([p[c].values for p in parts]),
                                np.concatenate([p[c].lengths for p in parts]))
        else:
            out[c] = np.concatenate([p[c] for p in parts])
    return out


class SignatureModel:
    """A model's ``serving_default`` under ONNX Runtime (``path/model.onnx``) or TensorFlow
    (``path/saved_model``).

    Args:
        path: the directory holding the model.
        runtime: ``onnx`` or ``tf``.
        outputs: the outputs to compute.
        threads: intra/inter-op threads (0 = the runtime's default).
        gpu: the GPU of a ``KIND_GPU`` instance (ONNX Runtime's providers from
            ``preprocessing.device``, or TensorFlow's ``/GPU:<gpu>``); None: the CPU.
    """

    def __init__(self, path: str, runtime: str, outputs: Sequence[str], threads: int = 1,
                 gpu: Optional[int] = None):
        self.runtime, self.outputs = runtime, list(outputs)
        if runtime == "onnx":  # TensorFlow is not even imported
            from preprocessing.device import detect
            from serving.onnx_export import OnnxModel
            self.onnx = OnnxModel(os.path.join(path, "model.onnx"), threads or 1,
                                  providers=detect().onnx_providers(gpu), outputs=outputs)
            return
        import tensorflow as tf
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # already initialised in this process
                pass
        self._tf = tf
        self.device = "/CPU:0" if gpu is None else f"/GPU:{int(gpu)}"
        self.serve = tf.saved_model.load(os.path.join(path, "saved_model")
                                         ).signatures["serving_default"]

    def __call__(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The outputs (float32, in the model's shapes) of one feed of signature inputs."""
        if self.runtime == "onnx":
            return self.onnx.run(feed)
        tf = self._tf
        with tf.device(self.device):
            out = self.serve(**{k: tf.constant(v) for k, v in feed.items()})
        return {k: out[k].numpy().astype(np.float32) for k in self.outputs}


class PredictStep:
    """Processed inputs -> raw ``pctr`` / ``pcvr``: the run's model under ONNX Runtime
    (``runtime: onnx``, exported by ``serving.export``) or the SavedModel's
    ``serving_default`` (``runtime: tf``).

    Args:
        version_dir: the step's version directory.
        gpu: the GPU of a ``KIND_GPU`` instance: ONNX Runtime's CUDA provider on it when
            ``preprocessing.device`` finds one (else the CPU provider), or TensorFlow on
            ``/GPU:<gpu>``; None: the CPU.
    """

    def __init__(self, version_dir: str, gpu: Optional[int] = None):
        self.settings = read_settings(version_dir)
        self.signature = self.settings["signature"]["inputs"]
        self.multihot = list(self.settings["multihot"])
        self.runtime = self.settings.get("runtime", "tf")
        self.gpu = gpu
        self.model = SignatureModel(version_dir, self.runtime, ("pctr", "pcvr"),
                                    int(self.settings.get("tf_threads", 0)), gpu)

    def predict(self, tensors: Mapping[str, np.ndarray]) -> Tensors:
        """Model outputs (``[B, 1]`` float32 ``pctr``, ``pcvr``) of one batch of ensemble
        tensors."""
        out = self.model(signature_feed(tensors, self.signature, self.multihot))
        return {k: out[k].reshape(-1, 1) for k in ("pctr", "pcvr")}

    def run(self, requests: Sequence[Mapping[str, np.ndarray]]) -> List[Result]:
        rows = [len(r[self.multihot[0] if self.multihot else next(iter(self.signature))])
                for r in requests]
        if len(requests) == 1:
            return [self.predict(requests[0])]
        return _split(rows, self.predict(concat_tensors(requests)))


def signature_feed(tensors: Mapping[str, np.ndarray], signature: Mapping[str, Mapping],
                   multihot: Sequence[str]) -> Dict[str, np.ndarray]:
    """SavedModel ``serving_default`` inputs (``[B]`` each, a multi-hot feature as
    ``__values`` / ``__offsets``) of ensemble tensors of processed columns (``[B, 1]``; a
    multi-hot one ``[B, W]`` padded with 0, the padding id)."""
    processed = {name: tensors[name] for name in signature
                 if not name.endswith("__values") and not name.endswith("__offsets")}
    for c in multihot:
        padded = np.asarray(tensors[c])
        processed[c] = ListColumn.from_padded(padded, (padded != 0).sum(axis=1))
    return signature_inputs(processed, signature)


def concat_tensors(requests: Sequence[Mapping[str, np.ndarray]]) -> Tensors:
    """The tensors of several requests concatenated along the batch dimension (2-D tensors
    of different widths, i.e. padded multi-hot features, padded with 0 to the widest)."""
    merged = {}
    for k in list(requests[0]):
        parts = [np.asarray(r[k]) for r in requests]
        if parts[0].ndim == 2 and len({p.shape[1] for p in parts}) > 1:
            w = max(p.shape[1] for p in parts)
            parts = [np.pad(p, ((0, 0), (0, w - p.shape[1]))) for p in parts]
        merged[k] = np.concatenate(parts)
    return merged


class CalibrateStep:
    """Raw ``pctr`` / ``pcvr`` + field ids -> calibrated ``pctr``, ``pcvr``, ``pctcvr``."""

    def __init__(self, version_dir: str, gpu: Optional[int] = None):
        from serving.calibration import load_calibrator
        self.settings = read_settings(version_dir)
        cal_dir = os.path.join(version_dir, "calibrator")
        self.calibrator = load_calibrator(cal_dir if os.path.isdir(cal_dir) else None)
        self.fields = tuple(self.calibrator.fields)

    def run(self, requests: Sequence[Mapping[str, np.ndarray]]) -> List[Result]:
        from serving.calibration import calibrate
        rows = [len(r["pctr"]) for r in requests]
        cat = {k: np.concatenate([np.asarray(r[k]).reshape(-1) for r in requests])
               for k in ("pctr", "pcvr", *self.fields)}
        try:
            pctr, pcvr, pctcvr = calibrate(self.calibrator, cat["pctr"], cat["pcvr"],
                                           {f: cat[f] for f in self.fields})
        except ValueError as e:  # e.g. a NaN prediction: an error for these requests only
            return [RequestError(f"calibrate: {e}") for _ in requests]
        out = {"pctr": pctr.reshape(-1, 1), "pcvr": pcvr.reshape(-1, 1),
               "pctcvr": pctcvr.reshape(-1, 1)}
        return _split(rows, out)


STEPS = {"preprocess": PreprocessStep, "predict": PredictStep, "calibrate": CalibrateStep}
LENGTHS = LENGTHS_SUFFIX
