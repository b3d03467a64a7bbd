"""The model steps of the federated repositories (``python -m serving.federated_export``), free
of Triton like ``serving.steps``: tests call exactly what the Python-backend models call.

- :class:`MediaBottomStep` (step ``media_bottom``, the media party's repository): processed
  ``media_*`` features -> ``media_embedding`` ``[B, width]`` float32, the federated run's bottom
  network. When the run trained with differential privacy (``media.json``: ``dp.enabled``), each
  served embedding is a release to the advertiser like a training one, so it gets the same
  Gaussian mechanism as in training (``federated.privacy.EmbeddingDP``): the row is clipped to L2
  norm ``clip`` and Gaussian noise of standard deviation ``noise_multiplier * 2 * clip`` (the
  replace-one sensitivity ``2 * clip``) is added, drawn from a numpy generator seeded by
  ``secrets`` per model instance (no seed in any file or log; the advertiser cannot remove it).
  The run's epsilon accounts for its training and test releases only: each served request for a
  user is one more release, and the privacy loss grows with their number.
- :class:`FederatedPredictStep` (step ``federated_predict``, the advertiser's repository):
  processed advertiser features and an optional ``media_embedding`` -> raw ``pctr``, ``pcvr``
  ``[B, 1]`` and ``used_media_embedding`` ``[B, 1]`` bool. A request that carries the
  embedding is scored by the run's top network (advertiser features + embedding); one without
  it by the advertiser-only model (the fallback, e.g. when the media side is down or slow, or
  the user is unknown to it). ``used_media_embedding`` says which, per row.

Each model runs under ONNX Runtime (``model.onnx``, ``runtime: onnx``) or TensorFlow
(``saved_model/``, ``runtime: tf``), in a sub-directory of the step's version directory
(``serving.steps.SignatureModel``).
"""

from __future__ import annotations

import os
import secrets
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from serving.preprocess import RequestError
from serving.steps import (Result, SignatureModel, Tensors, _split, concat_tensors,
                           read_settings, signature_feed)

MEDIA_EMBEDDING = "media_embedding"
USED = "used_media_embedding"


def _row_tensor(signature: Mapping[str, Mapping], multihot: Sequence[str]) -> str:
    """An ensemble tensor whose first dimension is the batch: a processed column's."""
    if multihot:
        return multihot[0]
    return next(n for n in signature if not n.endswith(("__values", "__offsets")))


def _without(signature: Mapping[str, Mapping], name: str) -> Dict[str, Mapping]:
    return {k: v for k, v in signature.items() if k != name}


class MediaBottomStep:
    """Processed media features -> ``media_embedding`` (clipped and noised when the run had
    DP on; see the module docstring). ``serving.json``: ``signature`` (the bottom SavedModel's
    inputs), ``multihot``, ``width``, ``runtime``, ``tf_threads``, ``dp`` (``enabled``,
    ``noise_multiplier``, ``clip``, ``noise_std``); the model is in ``bottom/``."""

    def __init__(self, version_dir: str, gpu: Optional[int] = None,
                 rng: Optional[np.random.Generator] = None):
        self.settings = read_settings(version_dir)
        self.signature = self.settings["signature"]
        self.multihot = list(self.settings["multihot"])
        self.width = int(self.settings["width"])
        dp = self.settings.get("dp") or {}
        self.dp = bool(dp.get("enabled"))
        self.clip = float(dp.get("clip", 0.0))
        self.noise_std = float(dp.get("noise_std", 0.0))
        if self.dp and not (self.clip > 0 and self.noise_std > 0):
            raise ValueError(f"DP is on but clip {self.clip} / noise_std {self.noise_std} "
                             f"are not both > 0")
        self.rng = rng or np.random.Generator(np.random.PCG64(secrets.randbits(128)))
        self.model = SignatureModel(os.path.join(version_dir, "bottom"),
                                    self.settings.get("runtime", "onnx"), [MEDIA_EMBEDDING],
                                    int(self.settings.get("tf_threads", 1)), gpu)
        self._rows_of = _row_tensor(self.signature, self.multihot)

    def privatise(self, embedding: np.ndarray) -> np.ndarray:
        """Each row clipped to L2 norm ``clip``, plus N(0, ``noise_std``^2) noise (DP on);
        unchanged otherwise."""
        if not self.dp:
            return embedding
        norms = np.linalg.norm(embedding.astype(np.float64), axis=1, keepdims=True)
        clipped = embedding * np.minimum(1.0, self.clip / np.maximum(norms, 1e-12))
        return (clipped + self.rng.normal(0.0, self.noise_std, embedding.shape)
                ).astype(np.float32)

    def embed(self, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[B, width]`` embeddings of one batch of processed media tensors (before DP)."""
        feed = signature_feed(tensors, self.signature, self.multihot)
        return self.model(feed)[MEDIA_EMBEDDING].reshape(-1, self.width)

    def run(self, requests: Sequence[Mapping[str, np.ndarray]]) -> List[Result]:
        rows = [len(np.asarray(r[self._rows_of])) for r in requests]
        merged = requests[0] if len(requests) == 1 else concat_tensors(requests)
        embedding = self.embed(merged)
        if not np.isfinite(embedding).all():
            return [RequestError("media_bottom: the bottom network gave a non-finite "
                                 "embedding") for _ in requests]
        return _split(rows, {MEDIA_EMBEDDING: self.privatise(embedding)})


class FederatedPredictStep:
    """Processed advertiser features + optional ``media_embedding`` -> raw ``pctr``, ``pcvr``
    and ``used_media_embedding`` (see the module docstring). ``serving.json``: ``width``,
    ``multihot``, ``runtime``, ``tf_threads``, ``top`` / ``fallback`` (each model's
    ``signature``); the models are in ``top/`` and ``fallback/``.

    A request's embedding is refused (a ``RequestError`` naming ``media_embedding``, for that
    request only) unless it is ``[B, width]`` with the rows of the other inputs and finite.
    """

    def __init__(self, version_dir: str, gpu: Optional[int] = None):
        self.settings = read_settings(version_dir)
        self.width = int(self.settings["width"])
        self.multihot = list(self.settings["multihot"])
        runtime = self.settings.get("runtime", "onnx")
        threads = int(self.settings.get("tf_threads", 1))
        self.signatures = {True: _without(self.settings["top"]["signature"], MEDIA_EMBEDDING),
                           False: self.settings["fallback"]["signature"]}
        self.models = {
            True: SignatureModel(os.path.join(version_dir, "top"), runtime, ("pctr", "pcvr"),
                                 threads, gpu),
            False: SignatureModel(os.path.join(version_dir, "fallback"), runtime,
                                  ("pctr", "pcvr"), threads, gpu)}
        self._rows_of = _row_tensor(self.signatures[True], self.multihot)

    def check_embedding(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Raises ``RequestError`` when the request's ``media_embedding`` is unusable."""
        e = np.asarray(tensors[MEDIA_EMBEDDING])
        rows = len(np.asarray(tensors[self._rows_of]))
        if e.ndim != 2 or e.shape[1] != self.width:
            raise RequestError(f"input '{MEDIA_EMBEDDING}' must be [B, {self.width}]; got "
                               f"shape {list(e.shape)}")
        if e.shape[0] != rows:
            raise RequestError(f"input '{MEDIA_EMBEDDING}' has {e.shape[0]} rows, the other "
                               f"inputs have {rows}")
        bad = ~np.isfinite(e)
        if bad.any():
            raise RequestError(f"input '{MEDIA_EMBEDDING}' holds {int(bad.sum())} non-finite "
                               f"value(s), first at row {int(np.argwhere(bad)[0][0])}")

    def predict(self, tensors: Mapping[str, np.ndarray], used: bool) -> Tensors:
        """``pctr``, ``pcvr`` ``[B, 1]`` of one batch: the top model (``used``) or the
        fallback."""
        multihot = [c for c in self.multihot if f"{c}__values" in self.signatures[used]]
        feed = signature_feed(tensors, self.signatures[used], multihot)
        if used:
            feed[MEDIA_EMBEDDING] = np.asarray(tensors[MEDIA_EMBEDDING], np.float32)
        out = self.models[used](feed)
        return {k: out[k].reshape(-1, 1) for k in ("pctr", "pcvr")}

    def run(self, requests: Sequence[Mapping[str, np.ndarray]]) -> List[Result]:
        results: List[Result] = [None] * len(requests)  # type: ignore[list-item]
        groups: Dict[bool, List[int]] = {True: [], False: []}
        for i, tensors in enumerate(requests):
            used = MEDIA_EMBEDDING in tensors
            try:
                if used:
                    self.check_embedding(tensors)
                groups[used].append(i)
            except RequestError as e:
                results[i] = e
        for used, index in groups.items():
            if not index:
                continue
            part = [requests[i] for i in index]
            rows = [len(np.asarray(r[self._rows_of])) for r in part]
            merged = part[0] if len(part) == 1 else concat_tensors(part)
            out = self.predict(merged, used)
            out[USED] = np.full((sum(rows), 1), used, dtype=bool)
            for i, piece in zip(index, _split(rows, out)):
                results[i] = piece
        return results


STEPS = {"media_bottom": MediaBottomStep, "federated_predict": FederatedPredictStep}
