"""Export a federated run as two Triton model repositories: the media party's and the
advertiser's.

Usage::

    python -m serving.federated_export --run RUN_DIR --fallback SAVED_MODEL_DIR --workflow WF_DIR
        [--calibrator CAL_DIR] --out-media REPO_DIR --out-advertiser REPO_DIR
        [--max-batch-size 1024] [--instances preprocess=1,predict=1,calibrate=1]
        [--queue-delay-us 100] [--nullable auto|none|COL,COL] [--max-list N]
        [--executor {lean,merlin}] [--runtime {onnx,tf}] [--tf-threads 1]
        [--probe RAW.parquet] [--instance-kind {auto,KIND_CPU,KIND_GPU}]

``RUN_DIR`` is a federated run (``python -m federated.local``'s ``runs/federated_seed<S>``):
``media/saved_model`` (the bottom network), ``media/media.json`` (its ``config.split.width``
and ``dp``) and ``advertiser/saved_model`` (the top network). ``--fallback`` is the
advertiser-only SavedModel (``federated.baselines.train_arm(..., export_dir=...)``,
``runs/advertiser_only_seed<S>/saved_model``). ``WF_DIR`` is the training workflow.

From Python: ``export_federated(FederatedRun(RUN_DIR, FALLBACK), WF_DIR, {"media": ...,
"advertiser": ...}, CAL_DIR, settings)``, or one repository with ``export_media`` /
``export_advertiser`` on ``read_media_side`` / ``read_advertiser_side``; ``settings`` is the
``serving.settings.ExportSettings`` of ``serving.export`` (the options after the paths).

**Media repository** (``--out-media``; the media party runs it beside its app's ad requests):

- ``media_embedding``: ``platform: "ensemble"``: ``media_preprocess`` -> ``media_bottom``.
  Inputs: the raw ``media_*`` request columns (ids ``[B, 1]`` int64, continuous ``[B, 1]``
  float32, as the ``extcvr`` ensemble takes them); output ``media_embedding`` ``[B, width]``
  float32.
- ``media_preprocess`` (Python backend, ``serving.steps.PreprocessStep``): the media columns'
  part of the workflow: ``Workflow.remove_inputs`` of every other input, saved pruned into the
  repository, so that it holds none of the advertiser's vocabularies or statistics.
- ``media_bottom`` (Python backend, ``serving.federated_steps.MediaBottomStep``): the bottom
  network; with the run's DP on, each row clipped to ``clip`` plus Gaussian noise of standard
  deviation ``noise_multiplier * 2 * clip`` (each served embedding is a release to the
  advertiser).

**Advertiser repository** (``--out-advertiser``; the advertiser runs it):

- ``extcvr_federated``: ``platform: "ensemble"``: ``advertiser_preprocess`` ->
  ``federated_predict`` -> ``advertiser_calibrate``. Inputs: the raw advertiser request
  columns (the wire format of ``extcvr``) and ``media_embedding`` ``[B, width]`` FP32 with
  ``optional: true``. Outputs: ``pctr``, ``pcvr`` (calibrated), ``pctcvr`` ``[B, 1]`` FP32 and
  ``used_media_embedding`` ``[B, 1]`` BOOL (true: the row was scored by the top network with
  the embedding; false: by the advertiser-only fallback).
- ``advertiser_preprocess``: the advertiser columns' part of the workflow (pruned likewise).
- ``federated_predict`` (``serving.federated_steps.FederatedPredictStep``): holds the top
  network and the fallback; a request with ``media_embedding`` gets the top network, one
  without it the fallback. An embedding of the wrong width or dtype is refused by Triton
  (the config's dims), a NaN / inf one or one whose rows differ by the step: an error
  response naming ``media_embedding``.
- ``advertiser_calibrate``: ``serving.steps.CalibrateStep`` (``--calibrator``, else the
  identity).

Why an ensemble with an optional input, and the routing inside one step: Triton 2.51's
ensemble scheduler accepts an ensemble input declared ``optional: true`` and hands it, when a
request carries it, to a step input that is optional too; a request without it runs the same
steps without it (checked on the real server by ``tests/serving/test_federated_export.py``;
Triton 2.2x refused optional ensemble inputs, server PR #3894). An ensemble cannot branch,
though, so the choice between the two networks is made inside ``federated_predict``, which holds
both models: no BLS round trip per request (``pb_utils.InferenceRequest`` would add a second
scheduling hop and serialise the step's requests), and preprocess and calibrate stay the same
dynamically batched steps as in ``extcvr``.

Everything else is ``serving.export``'s machinery: the same Python-backend template, the code
bundle (``serving/code_bundle.py``), the wire format, ``--nullable`` / ``--max-list`` from
``request_facts.json``, the ONNX conversion and its check against TensorFlow on a probe batch
(``--runtime onnx``, the default; for the top network with random embeddings), and each
repository written atomically; an existing non-empty output is replaced only when this command
wrote it (its ``export.json``).

Security: the workflow is a cloudpickle file; export and serve only artifacts this project
produced.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from common import atomic
from preprocessing import columns as C
from common.atomic import atomic_output_dir
from preprocessing.device import KIND_GPU, detect
from common.tables import print_table
from serving.export import (STEP_MODULES, RequestColumns, _python_config, _tensor,
                            calibrator_fields, ensemble_config, load_spec, probe_feed,
                            resolve_instance_kind, write_calibrate_step, write_config,
                            write_export_json, write_step)
from serving.federated_steps import MEDIA_EMBEDDING, USED
from serving.settings import INSTANCE_KINDS, RUNTIMES, ExportSettings, add_repository_options
from common.params import check_param

#: What the federated model steps import (``model.py`` loads ``serving.federated_steps``).
FEDERATED_MODULES = (*STEP_MODULES, "serving.federated_steps")
FORMAT_MEDIA = "extcvr.triton_repository.federated_media"
FORMAT_ADVERTISER = "extcvr.triton_repository.federated_advertiser"
MEDIA_ENSEMBLE = "media_embedding"
ADVERTISER_ENSEMBLE = "extcvr_federated"
OUTPUTS = ("pctr", "pcvr", "pctcvr")
PARTIES = ("media", "advertiser")


def saved_model_signature(path: str) -> Dict[str, Dict]:
    """``{"inputs": ..., "outputs": ...}`` of a SavedModel's ``serving_default``: per tensor
    its ``dtype`` and ``shape`` (None for the batch dimension).

    Raises:
        FileNotFoundError: no SavedModel at ``path``.
    """
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"{path}: no SavedModel (saved_model.pb)")
    import tensorflow as tf
    fn = tf.saved_model.load(path).signatures["serving_default"]

    def describe(specs):
        return {k: {"dtype": s.dtype.name, "shape": s.shape.as_list()}
                for k, s in sorted(specs.items())}
    return {"inputs": describe(fn.structured_input_signature[1]),
            "outputs": describe(fn.structured_outputs)}


def processed_columns(signature_inputs: Mapping[str, Mapping], order: Sequence[str]
                      ) -> Tuple[Dict[str, str], List[str]]:
    """``(processed column -> "int64" / "float32", multi-hot columns)`` that a model's
    signature takes (``media_embedding`` excluded), in the order of ``order`` (the spec's
    features)."""
    kinds: Dict[str, str] = {}
    multihot = []
    for name, s in signature_inputs.items():
        if name == MEDIA_EMBEDDING or name.endswith("__offsets"):
            continue
        if name.endswith("__values"):
            name = name[: -len("__values")]
            multihot.append(name)
            kinds[name] = "int64"
        else:
            kinds[name] = "float32" if s["dtype"].startswith("float") else "int64"
    unknown = [c for c in kinds if c not in order]
    if unknown:
        raise ValueError(f"model inputs {unknown} are not features of the dataset spec")
    ordered = {c: kinds[c] for c in order if c in kinds}
    return ordered, [c for c in ordered if c in multihot]


def _media_json(run_dir: str) -> Dict:
    path = os.path.join(run_dir, "media", "media.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found; --run must be a federated run directory "
                                f"with media/ and advertiser/")
    return json.load(open(path))


def _run_width(report: Dict, widths: Dict[str, int]) -> int:
    """The embedding width all of ``widths`` and ``media.json``'s ``config.split.width``
    agree on (``ValueError`` otherwise)."""
    split = report.get("config", {}).get("split", {})
    if "width" in split:
        widths = {**widths, "media.json config.split.width": int(split["width"])}
    if len(set(widths.values())) != 1 or not min(widths.values()):
        raise ValueError(f"embedding widths differ: {widths}")
    return next(iter(widths.values()))


def read_media_side(run_dir: str) -> Dict:
    """The media party's model and settings (:func:`export_media`'s ``side``): the run
    directory, the bottom network's signature and path, the embedding width and the DP
    settings of ``media/media.json`` (with ``noise_std`` = ``noise_multiplier * 2 * clip`` when
    enabled).

    Raises:
        FileNotFoundError: no ``media/saved_model`` or ``media/media.json``.
        ValueError: the bottom network gives no ``media_embedding``, or its width differs
            from ``media.json``'s, or ``media.json`` has no usable ``dp`` settings.
    """
    path = os.path.join(run_dir, "media", "saved_model")
    report = _media_json(run_dir)
    sig = saved_model_signature(path)
    out = sig["outputs"].get(MEDIA_EMBEDDING)
    if out is None:
        raise ValueError(f"{path}: outputs {sorted(sig['outputs'])}, no '{MEDIA_EMBEDDING}' "
                         f"(federated.model.export_bottom)")
    width = _run_width(report, {"bottom output": out["shape"][-1]})
    dp = report.get("dp")
    if not isinstance(dp, dict) or "enabled" not in dp:
        raise ValueError(f"{run_dir}/media/media.json: no 'dp' settings (enabled, "
                         f"noise_multiplier, clip)")
    enabled = bool(dp["enabled"])
    multiplier, clip = float(dp.get("noise_multiplier") or 0.0), float(dp.get("clip") or 0.0)
    if enabled and not (multiplier > 0 and clip > 0):
        raise ValueError(f"{run_dir}/media/media.json: DP is enabled but noise_multiplier "
                         f"{multiplier} / clip {clip} are not both > 0")
    return {"run_dir": run_dir, "path": path, "signature": sig, "width": width,
            "dp": {"enabled": enabled, "noise_multiplier": multiplier, "clip": clip,
                   "noise_std": multiplier * 2.0 * clip if enabled else 0.0}}


def read_advertiser_side(run_dir: str, fallback: str) -> Dict:
    """The advertiser's models (:func:`export_advertiser`'s ``side``): the run directory, the
    top network (``advertiser/saved_model``) and the fallback, their signatures and paths, and
    the embedding width (checked against ``media.json`` when the run directory has it).

    Raises:
        FileNotFoundError: a missing SavedModel.
        ValueError: the top network takes no ``media_embedding`` or the fallback takes one;
            the widths differ.
    """
    paths = {"top": os.path.join(run_dir, "advertiser", "saved_model"), "fallback": fallback}
    sig = {k: saved_model_signature(p) for k, p in paths.items()}
    top_in = sig["top"]["inputs"].get(MEDIA_EMBEDDING)
    if top_in is None:
        raise ValueError(f"{paths['top']}: takes no '{MEDIA_EMBEDDING}' "
                         f"(federated.model.export_top with width > 0)")
    if MEDIA_EMBEDDING in sig["fallback"]["inputs"]:
        raise ValueError(f"--fallback {fallback}: takes '{MEDIA_EMBEDDING}'; the fallback is "
                         f"the advertiser-only model (width 0)")
    has_report = os.path.isfile(os.path.join(run_dir, "media", "media.json"))
    width = _run_width(_media_json(run_dir) if has_report else {},
                       {"top input": top_in["shape"][-1]})
    return {"run_dir": run_dir, "paths": paths, "signatures": sig, "width": width}


def _check_nullable(nullable, spec: C.DatasetSpec) -> None:
    """An explicit ``--nullable COL,...`` names continuous features of the spec."""
    names = (nullable.split(",") if isinstance(nullable, str) and
             nullable not in ("auto", "none", "") else
             list(nullable) if isinstance(nullable, (list, tuple)) else [])
    unknown = sorted(set(c for c in names if c) - set(spec.continuous))
    if unknown:
        raise ValueError(f"--nullable: {unknown} are not continuous features "
                         f"{list(spec.continuous)}")


def _party_nullable(nullable, continuous: Sequence[str]):
    """An explicit ``--nullable`` list restricted to one party's continuous columns."""
    if isinstance(nullable, str) and nullable not in ("auto", "none", ""):
        return [c for c in nullable.split(",") if c in continuous]
    if isinstance(nullable, (list, tuple)):
        return [c for c in nullable if c in continuous]
    return nullable


def _copy_model(src: str, dst: str, feed, outputs: Sequence[str], st: _Resolved
                ) -> Optional[float]:
    """``dst/saved_model`` (a copy of ``src``) and, with ``--runtime onnx``, ``dst/model.onnx``
    checked against TensorFlow on ``feed()`` (with ``st``'s providers); returns the max abs
    difference (None without ONNX)."""
    os.makedirs(dst)
    shutil.copytree(src, os.path.join(dst, "saved_model"))
    if st.settings.runtime != "onnx":
        return None
    from serving.onnx_export import check_against_tensorflow, convert_saved_model
    onnx_path = os.path.join(dst, "model.onnx")
    convert_saved_model(src, onnx_path)
    return check_against_tensorflow(src, onnx_path, feed(), providers=st.providers,
                                    outputs=outputs)


class _Party(RequestColumns):
    """One party's request columns (an explicit ``--nullable`` list restricted to them)."""

    def _nullable(self, nullable, continuous: Sequence[str]):
        return _party_nullable(nullable, continuous)

    def write_preprocess(self, stage: str, model: str, workflow_dir: str,
                         settings: ExportSettings) -> None:
        """``model``: the party's columns' part of the workflow, saved pruned (only the
        party's inputs, vocabularies and statistics) into the step."""
        from serving.preprocess import load_request_workflow
        spec = self.spec
        d = write_step(stage, model, {"executor": settings.executor, "nullable": self.nullable,
                                      "max_list": self.max_list, "outputs": self.processed,
                                      "columns": self.raw_inputs}, step="preprocess")
        drop = [*spec.targets, *spec.ground_truth, spec.split]
        load_request_workflow(workflow_dir, drop, self.raw_inputs).save(
            os.path.join(d, "workflow"))
        spec.save(d)
        write_config(stage, model, _python_config(
            model, settings.max_batch_size, self.raw_tensors(), self.proc_tensors(),
            settings.instances["preprocess"], settings.queue_delay_us))


class _Resolved:
    """What both exports check and resolve the same way before writing: the output may be
    replaced, the workflow is there; the model steps' instance kind and ONNX Runtime
    providers, the dataset spec, an explicit ``--nullable`` list against it."""

    def __init__(self, settings: ExportSettings, workflow_dir: str, out: str, fmt: str):
        _check_target(settings)
        atomic.check_replaceable(out, "export.json", fmt, "serving.federated_export",
                                 f"Choose a new or empty directory, e.g. "
                                 f"{os.path.join(out, 'cpu')}")
        if not os.path.isfile(os.path.join(workflow_dir, "workflow.pkl")):
            raise FileNotFoundError(f"{os.path.join(workflow_dir, 'workflow.pkl')}: no saved "
                                    f"workflow")
        self.settings = settings
        self.kind = resolve_instance_kind(settings.instance_kind, settings.target)
        self.providers = detect().onnx_providers(0 if self.kind == KIND_GPU else None)
        self.spec = load_spec(workflow_dir, settings.spec_dir)
        _check_nullable(settings.nullable, self.spec)


def _check_party(columns: Sequence[str], media: bool, what: str) -> None:
    wrong = [c for c in columns if c.startswith(C.MEDIA_PREFIX) != media]
    if wrong:
        raise ValueError(f"{what} takes {wrong}: the media party holds exactly the "
                         f"{C.MEDIA_PREFIX}* columns, the advertiser every other one")


@dataclasses.dataclass(frozen=True)
class FederatedRun:
    """What the federated repositories serve: ``run_dir``, a federated run (``media/`` and
    ``advertiser/``; ``python -m federated.local``'s ``runs/federated_seed<S>``), and
    ``fallback``, the advertiser-only SavedModel directory
    (``runs/advertiser_only_seed<S>/saved_model``)."""

    run_dir: str
    fallback: str


def _check_target(settings: ExportSettings) -> None:
    check_param(settings.target == "cpu", "target",
                "'cpu' for the federated repositories (Python-backend steps)", settings.target)


def _embedding_input(width: int) -> str:
    """The advertiser's optional ``media_embedding`` input."""
    return _tensor(MEDIA_EMBEDDING, "float32", [width], optional=True)


def export_media(side: Dict, workflow_dir: str, out: str,
                 settings: ExportSettings = ExportSettings()) -> Dict:
    """Write the media party's repository ``out`` (``media_embedding``; see the module
    docstring); returns its ``export.json``.

    Args:
        side: the media party's model: :func:`read_media_side` of the federated run.
        workflow_dir, out, settings: as :func:`export_federated`'s (``out``: this repository).
    """
    st = _Resolved(settings, workflow_dir, out, FORMAT_MEDIA)
    spec, mb = st.spec, settings.max_batch_size
    processed, multihot = processed_columns(side["signature"]["inputs"], spec.features)
    _check_party(processed, True, f"the bottom network {side['path']}")
    media = _Party(processed, multihot, spec, workflow_dir, settings)
    with atomic_output_dir(out) as stage:
        media.write_preprocess(stage, "media_preprocess", workflow_dir, settings)
        diff = _write_media_bottom(stage, media, side, workflow_dir, st)
        os.makedirs(os.path.join(stage, MEDIA_ENSEMBLE, "1"))
        proc_map = {c: f"proc_{c}" for c in media.processed}
        write_config(stage, MEDIA_ENSEMBLE, ensemble_config(
            MEDIA_ENSEMBLE, mb, media.raw_tensors(),
            [_tensor(MEDIA_EMBEDDING, "float32", [side["width"]])], [
                ("media_preprocess", {n: n for n in media.raw_names()}, proc_map),
                ("media_bottom", proc_map, {MEDIA_EMBEDDING: MEDIA_EMBEDDING})]))
        info = _media_info(side, media, st, diff)
        write_export_json(stage, info)
    return info


def _write_media_bottom(stage: str, media: _Party, side: Dict, workflow_dir: str,
                        st: _Resolved) -> Optional[float]:
    """``media_bottom``: the bottom network with the run's DP settings; returns the ONNX
    model's max abs difference from TensorFlow (None without ONNX)."""
    settings = st.settings
    sig, width = side["signature"]["inputs"], side["width"]
    d = write_step(stage, "media_bottom", {
        "module": "serving.federated_steps", "signature": sig, "multihot": media.multihot,
        "max_list": media.max_list, "width": width, "runtime": settings.runtime,
        "tf_threads": settings.tf_threads, "dp": side["dp"]},
        step="media_bottom", modules=FEDERATED_MODULES)

    def feed():
        return probe_feed(workflow_dir, media.spec, sig, settings, columns=media.raw_inputs)
    diff = _copy_model(side["path"], os.path.join(d, "bottom"), feed, [MEDIA_EMBEDDING], st)
    write_config(stage, "media_bottom", _python_config(
        "media_bottom", settings.max_batch_size, media.proc_tensors(),
        [_tensor(MEDIA_EMBEDDING, "float32", [width])], settings.instances["predict"],
        settings.queue_delay_us, st.kind))
    return diff


def _media_info(side: Dict, media: _Party, st: _Resolved, diff: Optional[float]) -> Dict:
    """The content of the media repository's ``export.json``."""
    settings, width = st.settings, side["width"]
    return {"format": FORMAT_MEDIA, "format_version": 1, "model": MEDIA_ENSEMBLE,
            "source": {"run": os.path.basename(os.path.normpath(side["run_dir"]))},
            "max_batch_size": settings.max_batch_size,
            "max_queue_delay_us": settings.queue_delay_us,
            "instances": {k: settings.instances[k] for k in ("preprocess", "predict")},
            "instance_kind": st.kind, "executor": settings.executor,
            "runtime": settings.runtime, "width": width, "dp": side["dp"],
            "nullable": media.nullable, "max_list": media.max_list, "onnx_max_abs_diff": diff,
            "inputs": media.input_types(), "outputs": {MEDIA_EMBEDDING: ["float32", width]}}


def export_advertiser(side: Dict, workflow_dir: str, out: str, calibrator: Optional[str] = None,
                      settings: ExportSettings = ExportSettings()) -> Dict:
    """Write the advertiser's repository ``out`` (``extcvr_federated``; see the module
    docstring); returns its ``export.json``.

    Args:
        side: the advertiser's models: :func:`read_advertiser_side` of the federated run and
            the fallback.
        workflow_dir, out, calibrator, settings: as :func:`export_federated`'s (``out``: this
            repository).
    """
    st = _Resolved(settings, workflow_dir, out, FORMAT_ADVERTISER)
    mb = settings.max_batch_size
    adv = _advertiser_columns(side, workflow_dir, st)
    fields, cal_method = calibrator_fields(calibrator, adv.processed)
    with atomic_output_dir(out) as stage:
        adv.write_preprocess(stage, "advertiser_preprocess", workflow_dir, settings)
        diffs = _write_federated_predict(stage, adv, side, workflow_dir, st)
        cal_out = write_calibrate_step(stage, "advertiser_calibrate", calibrator, fields,
                                       settings)
        os.makedirs(os.path.join(stage, ADVERTISER_ENSEMBLE, "1"))
        proc_map = {c: f"proc_{c}" for c in adv.processed}
        write_config(stage, ADVERTISER_ENSEMBLE, ensemble_config(
            ADVERTISER_ENSEMBLE, mb, adv.raw_tensors() + [_embedding_input(side["width"])],
            cal_out + [_tensor(USED, "bool", [1])], [
                ("advertiser_preprocess", {n: n for n in adv.raw_names()}, proc_map),
                ("federated_predict", {**proc_map, MEDIA_EMBEDDING: MEDIA_EMBEDDING},
                 {"pctr": "raw_pctr", "pcvr": "raw_pcvr", USED: USED}),
                ("advertiser_calibrate", {"pctr": "raw_pctr", "pcvr": "raw_pcvr",
                                          **{f: f"proc_{f}" for f in fields}},
                 {o: o for o in OUTPUTS})]))
        info = _advertiser_info(side, adv, st, (fields, cal_method), diffs)
        write_export_json(stage, info)
    return info


def _advertiser_columns(side: Dict, workflow_dir: str, st: _Resolved) -> _Party:
    """The advertiser's request columns: what either network takes, in the spec's order;
    both networks must take advertiser columns only."""
    sig, spec = side["signatures"], st.spec
    top_proc, top_mh = processed_columns(sig["top"]["inputs"], spec.features)
    fb_proc, fb_mh = processed_columns(sig["fallback"]["inputs"], spec.features)
    union = {**top_proc, **fb_proc}  # what either network takes, in the spec's order
    processed = {c: union[c] for c in spec.features if c in union}
    _check_party(top_proc, False, f"the top network {side['paths']['top']}")
    _check_party(fb_proc, False, f"the fallback {side['paths']['fallback']}")
    return _Party(processed, [c for c in processed if c in top_mh or c in fb_mh], spec,
                  workflow_dir, st.settings)


def _advertiser_feeds(side: Dict, adv: _Party, workflow_dir: str,
                      settings: ExportSettings) -> Dict[str, Callable[[], Dict]]:
    """The probe feed of each network (``top``, ``fallback``): one probe batch, built on first
    use from the union of both signatures, with random embeddings of about the trained
    scale."""
    import numpy as np
    sig, cache = side["signatures"], {}

    def batch() -> Dict:
        if "all" not in cache:
            inputs = {**sig["top"]["inputs"], **sig["fallback"]["inputs"]}
            inputs.pop(MEDIA_EMBEDDING)
            probe_rows = probe_feed(workflow_dir, adv.spec, inputs, settings,
                                    columns=adv.raw_inputs)
            rows = next(len(v) for k, v in probe_rows.items()
                        if not k.endswith(("__values", "__offsets")))
            probe_rows[MEDIA_EMBEDDING] = np.random.default_rng(0).normal(
                0.0, 1.0, (rows, side["width"])).astype(np.float32)
            cache["all"] = probe_rows
        return cache["all"]

    def feed_of(names) -> Callable[[], Dict]:
        return lambda: {k: v for k, v in batch().items() if k in names}
    return {name: feed_of(sig[name]["inputs"]) for name in ("top", "fallback")}


def _write_federated_predict(stage: str, adv: _Party, side: Dict, workflow_dir: str,
                             st: _Resolved) -> Dict[str, Optional[float]]:
    """``federated_predict``: the top network and the fallback, routed by the optional
    ``media_embedding``; returns each ONNX model's max abs difference from TensorFlow."""
    settings, sig = st.settings, side["signatures"]
    d = write_step(stage, "federated_predict", {
        "module": "serving.federated_steps", "width": side["width"], "multihot": adv.multihot,
        "max_list": adv.max_list, "runtime": settings.runtime,
        "tf_threads": settings.tf_threads, "top": {"signature": sig["top"]["inputs"]},
        "fallback": {"signature": sig["fallback"]["inputs"]}},
        step="federated_predict", modules=FEDERATED_MODULES)
    feeds = _advertiser_feeds(side, adv, workflow_dir, settings)
    diffs = {name: _copy_model(side["paths"][name], os.path.join(d, name), feeds[name],
                               ("pctr", "pcvr"), st)
             for name in ("top", "fallback")}
    raw_out = [_tensor("pctr", "float32", [1]), _tensor("pcvr", "float32", [1]),
               _tensor(USED, "bool", [1])]
    write_config(stage, "federated_predict", _python_config(
        "federated_predict", settings.max_batch_size,
        adv.proc_tensors() + [_embedding_input(side["width"])], raw_out,
        settings.instances["predict"], settings.queue_delay_us, st.kind))
    return diffs


def _advertiser_info(side: Dict, adv: _Party, st: _Resolved,
                     calibration: Tuple[List[str], Optional[str]],
                     diffs: Dict[str, Optional[float]]) -> Dict:
    """The content of the advertiser repository's ``export.json`` (``calibration``: the
    calibrator's fields and method)."""
    settings, (fields, cal_method) = st.settings, calibration
    return {"format": FORMAT_ADVERTISER, "format_version": 1, "model": ADVERTISER_ENSEMBLE,
            "source": {"run": os.path.basename(os.path.normpath(side["run_dir"])),
                       "fallback": os.path.basename(os.path.normpath(
                           side["paths"]["fallback"]))},
            "max_batch_size": settings.max_batch_size,
            "max_queue_delay_us": settings.queue_delay_us,
            "instances": dict(settings.instances),
            "instance_kind": st.kind, "executor": settings.executor,
            "runtime": settings.runtime, "width": side["width"], "calibrator": cal_method,
            "fields": fields, "nullable": adv.nullable, "max_list": adv.max_list,
            "onnx_max_abs_diff": diffs if settings.runtime == "onnx" else None,
            "inputs": {**adv.input_types(), MEDIA_EMBEDDING: "float32 (optional)"},
            "outputs": {**{o: ["float32", 1] for o in OUTPUTS}, USED: ["bool", 1]}}


def export_federated(run: FederatedRun, workflow_dir: str, out: Mapping[str, str],
                     calibrator: Optional[str] = None,
                     settings: ExportSettings = ExportSettings()) -> Dict[str, Dict]:
    """Write the media and the advertiser repositories (:func:`export_media`,
    :func:`export_advertiser`); returns ``{"media": ..., "advertiser": ...}``, the content of
    each one's ``export.json``.

    Args:
        run: the federated run (``media/`` and ``advertiser/``) and the advertiser-only
            fallback SavedModel.
        workflow_dir: ``PROC_DIR/workflow`` (with ``dataset_spec.json`` and
            ``request_facts.json``).
        out: the repositories, ``{"media": ..., "advertiser": ...}`` (each new, empty, or an
            earlier export of this command).
        calibrator: a ``calibration.calibrate`` directory (its fields must be advertiser columns).
        settings: as ``serving.export.export``'s, ``target`` ``cpu``; ``instances`` counts
            ``preprocess``, ``predict`` (``media_bottom`` and ``federated_predict``) and
            ``calibrate`` instances; ``runtime`` runs the networks in the model steps;
            ``instance_kind``: the model steps' instances
            (``serving.export.resolve_instance_kind``).

    Raises:
        FileExistsError: an output holds something this command did not write, or both are
            the same directory.
        FileNotFoundError: a missing artifact.
        ValueError / RuntimeError: inconsistent models or settings (e.g. the bottom's and the
            top's widths differ); an ONNX model disagrees with TensorFlow.
    """
    check_param(isinstance(out, Mapping) and set(out) == set(PARTIES), "out",
                f"a mapping of {PARTIES} to repository directories", out)
    _check_target(settings)
    if os.path.abspath(out["media"]) == os.path.abspath(out["advertiser"]):
        raise FileExistsError("--out-media and --out-advertiser must be different directories")
    # refuse a foreign directory, and inconsistent widths, before writing either repository
    for party, fmt in (("media", FORMAT_MEDIA), ("advertiser", FORMAT_ADVERTISER)):
        atomic.check_replaceable(out[party], "export.json", fmt, "serving.federated_export")
    media_side = read_media_side(run.run_dir)
    advertiser_side = read_advertiser_side(run.run_dir, run.fallback)
    if media_side["width"] != advertiser_side["width"]:
        raise ValueError(f"the bottom network gives {media_side['width']} values per row, the "
                         f"top network takes {advertiser_side['width']}")
    media = export_media(media_side, workflow_dir, out["media"], settings)
    advertiser = export_advertiser(advertiser_side, workflow_dir, out["advertiser"], calibrator,
                                   settings)
    return {"media": media, "advertiser": advertiser}


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m serving.federated_export``."""
    parser = argparse.ArgumentParser(prog="python -m serving.federated_export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True,
                        help="a federated run directory (media/ and advertiser/)")
    parser.add_argument("--fallback", required=True,
                        help="the advertiser-only SavedModel (served without an embedding)")
    parser.add_argument("--workflow", required=True, help="PROC_DIR/workflow")
    parser.add_argument("--calibrator", default=None, help="CAL_DIR with calibrator.json")
    parser.add_argument("--out-media", required=True, help="the media party's repository")
    parser.add_argument("--out-advertiser", required=True,
                        help="the advertiser's repository")
    add_repository_options(parser)
    parser.add_argument("--runtime", default="onnx", choices=RUNTIMES,
                        help="what runs the networks in media_bottom / federated_predict")
    parser.add_argument("--tf-threads", type=int, default=1,
                        help="intra/inter-op threads per model instance (0 = the runtime's)")
    parser.add_argument("--probe", default=None,
                        help="raw Parquet rows that check the ONNX models")
    parser.add_argument("--instance-kind", default="auto", choices=("auto", *INSTANCE_KINDS),
                        help="the model steps' Triton instances (auto: preprocessing.device)")
    args = parser.parse_args(argv)
    try:
        settings = ExportSettings.from_args(args)
        info = export_federated(
            FederatedRun(args.run, args.fallback), args.workflow,
            {"media": args.out_media, "advertiser": args.out_advertiser}, args.calibrator,
            settings)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m, a = info["media"], info["advertiser"]
    dp = m["dp"]

    def diff(x):
        return "-" if x is None else f"{x:.2g}"
    print_table("serving.federated_export", [
        ("media repository", os.path.abspath(args.out_media)),
        ("media model", f"{MEDIA_ENSEMBLE}: media_preprocess -> media_bottom "
                        f"({len(m['inputs'])} inputs -> {MEDIA_EMBEDDING} [B, {m['width']}])"),
        ("serving DP noise", f"std {dp['noise_std']:.4g} (noise_multiplier "
                             f"{dp['noise_multiplier']:g} x 2 x clip {dp['clip']:g})"
         if dp["enabled"] else "off (the run trained without DP)"),
        ("advertiser repository", os.path.abspath(args.out_advertiser)),
        ("advertiser model", f"{ADVERTISER_ENSEMBLE}: advertiser_preprocess -> "
                             f"federated_predict -> advertiser_calibrate"),
        ("advertiser inputs", f"{len(a['inputs']) - 1} + {MEDIA_EMBEDDING} (optional)"),
        ("without the embedding", f"the fallback {os.path.abspath(args.fallback)}"),
        ("calibrator", a["calibrator"] or "identity"),
        ("runtime", args.runtime + (
            f" (max |ONNX - TF|: bottom {diff(m['onnx_max_abs_diff'])}, top "
            f"{diff(a['onnx_max_abs_diff']['top'])}, fallback "
            f"{diff(a['onnx_max_abs_diff']['fallback'])})" if args.runtime == "onnx" else "")),
        ("instances", f"{resolve_instance_kind(settings.instance_kind, settings.target)} "
                      f"{a['instances']}"),
        ("max_batch_size", a["max_batch_size"]),
        ("nullable", ", ".join(m["nullable"] + a["nullable"]) or "-")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
