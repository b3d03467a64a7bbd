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
import json
import os
import shutil
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from preprocessing import atomic
from preprocessing import columns as C
from preprocessing.atomic import atomic_output_dir
from preprocessing.device import KIND_GPU, detect
from preprocessing.report import print_table
from serving.export import (INSTANCE_KINDS, RUNTIMES, STEP_MODULES, _python_config, _tensor,
                            add_repository_options,
                            calibrator_fields, ensemble_config, load_spec, parse_instances,
                            probe_feed, processed_tensor_configs, raw_tensor_configs,
                            request_settings, resolve_instance_kind, write_config, write_step)
from serving.federated_steps import MEDIA_EMBEDDING, USED

#: What the federated model steps import (``model.py`` loads ``serving.federated_steps``).
FEDERATED_MODULES = (*STEP_MODULES, "serving.federated_steps")
FORMAT_MEDIA = "extcvr.triton_repository.federated_media"
FORMAT_ADVERTISER = "extcvr.triton_repository.federated_advertiser"
MEDIA_ENSEMBLE = "media_embedding"
ADVERTISER_ENSEMBLE = "extcvr_federated"
OUTPUTS = ("pctr", "pcvr", "pctcvr")
PROBE_ROWS = 2000


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
    """The media party's model and settings: the bottom network's signature and path, the
    embedding width and the DP settings of ``media/media.json`` (with ``noise_std`` =
    ``noise_multiplier * 2 * clip`` when enabled).

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
    return {"path": path, "signature": sig, "width": width,
            "dp": {"enabled": enabled, "noise_multiplier": multiplier, "clip": clip,
                   "noise_std": multiplier * 2.0 * clip if enabled else 0.0}}


def read_advertiser_side(run_dir: str, fallback: str) -> Dict:
    """The advertiser's models: the top network (``advertiser/saved_model``) and the fallback,
    their signatures and paths, and the embedding width (checked against ``media.json`` when
    the run directory has it).

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
    return {"paths": paths, "signatures": sig, "width": width}


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


def _copy_model(src: str, dst: str, runtime: str, feed, outputs: Sequence[str],
                providers) -> Optional[float]:
    """``dst/saved_model`` (a copy of ``src``) and, with ``onnx``, ``dst/model.onnx`` checked
    against TensorFlow on ``feed()``; returns the max abs difference (None without ONNX)."""
    os.makedirs(dst)
    shutil.copytree(src, os.path.join(dst, "saved_model"))
    if runtime != "onnx":
        return None
    from serving.onnx_export import check_against_tensorflow, convert_saved_model
    onnx_path = os.path.join(dst, "model.onnx")
    convert_saved_model(src, onnx_path)
    return check_against_tensorflow(src, onnx_path, feed(), providers=providers,
                                    outputs=outputs)


class _Party:
    """One party's request columns: processed dtypes, raw inputs, nullable, max_list."""

    def __init__(self, processed: Dict[str, str], multihot: List[str], spec: C.DatasetSpec,
                 workflow_dir: str, nullable, max_list: Optional[int]):
        self.processed, self.multihot = processed, multihot
        continuous = [c for c, d in processed.items() if d == "float32"]
        self.nullable, self.max_list = request_settings(
            workflow_dir, multihot, continuous, _party_nullable(nullable, continuous), max_list)
        self.raw_inputs = [c for c in spec.features if c in processed]
        self.raw_types = {c: ("float32" if c in spec.continuous else "int64")
                          for c in self.raw_inputs}

    def raw_tensors(self) -> List[str]:
        return raw_tensor_configs(self.raw_inputs, self.raw_types, self.multihot)

    def proc_tensors(self) -> List[str]:
        return processed_tensor_configs(self.processed, self.multihot, self.max_list)

    def raw_names(self) -> List[str]:
        return [t.split('"')[1] for t in self.raw_tensors()]

    def input_types(self) -> Dict[str, str]:
        return {n: ("int64" if n.endswith("__lengths") else self.raw_types[n])
                for n in self.raw_names()}

    def write_preprocess(self, stage: str, model: str, workflow_dir: str, spec: C.DatasetSpec,
                         executor: str, max_batch: int, instances: int, delay_us: int) -> None:
        """``model``: the party's columns' part of the workflow, saved pruned (only the
        party's inputs, vocabularies and statistics) into the step."""
        from serving.preprocess import load_request_workflow
        d = write_step(stage, model, {"executor": executor, "nullable": self.nullable,
                                      "max_list": self.max_list, "outputs": self.processed,
                                      "columns": self.raw_inputs}, step="preprocess")
        drop = [*spec.targets, *spec.ground_truth, spec.split]
        load_request_workflow(workflow_dir, drop, self.raw_inputs).save(
            os.path.join(d, "workflow"))
        spec.save(d)
        write_config(stage, model, _python_config(model, max_batch, self.raw_tensors(),
                                                  self.proc_tensors(), instances, delay_us))


class _Settings:
    """What both exports check and resolve the same way."""

    def __init__(self, workflow_dir: str, out: str, fmt: str, max_batch_size: int,
                 instances: Optional[Dict], runtime: str, nullable,
                 instance_kind: Optional[str], spec_dir: Optional[str]):
        if max_batch_size < 1:
            raise ValueError(f"--max-batch-size must be >= 1; got {max_batch_size}")
        if runtime not in RUNTIMES:
            raise ValueError(f"--runtime must be one of {RUNTIMES}; got {runtime!r}")
        atomic.check_replaceable(out, "export.json", fmt, "serving.federated_export",
                                 f"Choose a new or empty directory, e.g. "
                                 f"{os.path.join(out, 'cpu')}")
        if not os.path.isfile(os.path.join(workflow_dir, "workflow.pkl")):
            raise FileNotFoundError(f"{os.path.join(workflow_dir, 'workflow.pkl')}: no saved "
                                    f"workflow")
        self.kind = resolve_instance_kind(instance_kind, "cpu")
        self.providers = detect().onnx_providers(0 if self.kind == KIND_GPU else None)
        self.instances = instances or parse_instances("")
        self.spec = load_spec(workflow_dir, spec_dir)
        _check_nullable(nullable, self.spec)


def _check_party(columns: Sequence[str], media: bool, what: str) -> None:
    wrong = [c for c in columns if c.startswith(C.MEDIA_PREFIX) != media]
    if wrong:
        raise ValueError(f"{what} takes {wrong}: the media party holds exactly the "
                         f"{C.MEDIA_PREFIX}* columns, the advertiser every other one")


def export_media(run_dir: str, workflow_dir: str, out: str, max_batch_size: int = 1024,
                 instances: Optional[Dict] = None, delay_us: int = 100, nullable="auto",
                 max_list: Optional[int] = None, executor: str = "lean", tf_threads: int = 1,
                 runtime: str = "onnx", probe: Optional[str] = None,
                 instance_kind: Optional[str] = None, spec_dir: Optional[str] = None,
                 side: Optional[Dict] = None) -> Dict:
    """Write the media party's repository ``out`` (``media_embedding``; see the module
    docstring); returns its ``export.json``. Arguments as :func:`export_federated`; ``side``:
    :func:`read_media_side`'s result when already read."""
    st = _Settings(workflow_dir, out, FORMAT_MEDIA, max_batch_size, instances, runtime,
                   nullable, instance_kind, spec_dir)
    spec, instances, mb = st.spec, st.instances, max_batch_size
    side = side or read_media_side(run_dir)
    sig, width, dp = side["signature"]["inputs"], side["width"], side["dp"]
    processed, multihot = processed_columns(sig, spec.features)
    _check_party(processed, True, f"the bottom network {side['path']}")
    media = _Party(processed, multihot, spec, workflow_dir, nullable, max_list)
    with atomic_output_dir(out) as stage:
        media.write_preprocess(stage, "media_preprocess", workflow_dir, spec, executor, mb,
                               instances["preprocess"], delay_us)
        d = write_step(stage, "media_bottom", {
            "module": "serving.federated_steps", "signature": sig, "multihot": media.multihot,
            "max_list": media.max_list, "width": width, "runtime": runtime,
            "tf_threads": tf_threads, "dp": dp}, step="media_bottom", modules=FEDERATED_MODULES)

        def feed():
            return probe_feed(workflow_dir, spec, sig, probe, PROBE_ROWS,
                              columns=media.raw_inputs)
        diff = _copy_model(side["path"], os.path.join(d, "bottom"), runtime, feed,
                           [MEDIA_EMBEDDING], st.providers)
        emb_out = [_tensor(MEDIA_EMBEDDING, "float32", [width])]
        write_config(stage, "media_bottom", _python_config(
            "media_bottom", mb, media.proc_tensors(), emb_out, instances["predict"], delay_us,
            st.kind))
        os.makedirs(os.path.join(stage, MEDIA_ENSEMBLE, "1"))
        proc_map = {c: f"proc_{c}" for c in media.processed}
        write_config(stage, MEDIA_ENSEMBLE, ensemble_config(
            MEDIA_ENSEMBLE, mb, media.raw_tensors(), emb_out, [
                ("media_preprocess", {n: n for n in media.raw_names()}, proc_map),
                ("media_bottom", proc_map, {MEDIA_EMBEDDING: MEDIA_EMBEDDING})]))
        info = {"format": FORMAT_MEDIA, "format_version": 1, "model": MEDIA_ENSEMBLE,
                "source": {"run": os.path.basename(os.path.normpath(run_dir))},
                "max_batch_size": mb, "max_queue_delay_us": delay_us,
                "instances": {k: instances[k] for k in ("preprocess", "predict")},
                "instance_kind": st.kind, "executor": executor, "runtime": runtime,
                "width": width, "dp": dp, "nullable": media.nullable,
                "max_list": media.max_list, "onnx_max_abs_diff": diff,
                "inputs": media.input_types(), "outputs": {MEDIA_EMBEDDING: ["float32", width]}}
        with open(os.path.join(stage, "export.json"), "w") as fh:
            json.dump(info, fh, indent=2)
    return info


def export_advertiser(run_dir: str, fallback: str, workflow_dir: str, out: str,
                      calibrator: Optional[str] = None, max_batch_size: int = 1024,
                      instances: Optional[Dict] = None, delay_us: int = 100, nullable="auto",
                      max_list: Optional[int] = None, executor: str = "lean",
                      tf_threads: int = 1, runtime: str = "onnx", probe: Optional[str] = None,
                      instance_kind: Optional[str] = None, spec_dir: Optional[str] = None,
                      side: Optional[Dict] = None) -> Dict:
    """Write the advertiser's repository ``out`` (``extcvr_federated``; see the module
    docstring); returns its ``export.json``. Arguments as :func:`export_federated`; ``side``:
    :func:`read_advertiser_side`'s result when already read."""
    import numpy as np
    st = _Settings(workflow_dir, out, FORMAT_ADVERTISER, max_batch_size, instances, runtime,
                   nullable, instance_kind, spec_dir)
    spec, instances, mb = st.spec, st.instances, max_batch_size
    side = side or read_advertiser_side(run_dir, fallback)
    sig, width = side["signatures"], side["width"]
    top_proc, top_mh = processed_columns(sig["top"]["inputs"], spec.features)
    fb_proc, fb_mh = processed_columns(sig["fallback"]["inputs"], spec.features)
    union = {**top_proc, **fb_proc}  # what either network takes, in the spec's order
    processed = {c: union[c] for c in spec.features if c in union}
    _check_party(top_proc, False, f"the top network {side['paths']['top']}")
    _check_party(fb_proc, False, f"the fallback {fallback}")
    adv = _Party(processed, [c for c in processed if c in top_mh or c in fb_mh], spec,
                 workflow_dir, nullable, max_list)
    fields, cal_method = calibrator_fields(calibrator, adv.processed)
    cache: Dict[str, Dict] = {}

    def feed_of(names):
        """The probe feed of one network (built once: the union of both signatures, and
        random embeddings of about the trained scale)."""
        def feed():
            if "all" not in cache:
                inputs = {**sig["top"]["inputs"], **sig["fallback"]["inputs"]}
                inputs.pop(MEDIA_EMBEDDING)
                probe_rows = probe_feed(workflow_dir, spec, inputs, probe, PROBE_ROWS,
                                        columns=adv.raw_inputs)
                rows = next(len(v) for k, v in probe_rows.items()
                            if not k.endswith(("__values", "__offsets")))
                probe_rows[MEDIA_EMBEDDING] = np.random.default_rng(0).normal(
                    0.0, 1.0, (rows, width)).astype(np.float32)
                cache["all"] = probe_rows
            return {k: v for k, v in cache["all"].items() if k in names}
        return feed

    with atomic_output_dir(out) as stage:
        adv.write_preprocess(stage, "advertiser_preprocess", workflow_dir, spec, executor, mb,
                             instances["preprocess"], delay_us)
        d = write_step(stage, "federated_predict", {
            "module": "serving.federated_steps", "width": width, "multihot": adv.multihot,
            "max_list": adv.max_list, "runtime": runtime, "tf_threads": tf_threads,
            "top": {"signature": sig["top"]["inputs"]},
            "fallback": {"signature": sig["fallback"]["inputs"]}},
            step="federated_predict", modules=FEDERATED_MODULES)
        diffs = {name: _copy_model(side["paths"][name], os.path.join(d, name), runtime,
                                   feed_of(sig[name]["inputs"]), ("pctr", "pcvr"),
                                   st.providers)
                 for name in ("top", "fallback")}
        embedding = _tensor(MEDIA_EMBEDDING, "float32", [width], optional=True)
        raw_out = [_tensor("pctr", "float32", [1]), _tensor("pcvr", "float32", [1]),
                   _tensor(USED, "bool", [1])]
        write_config(stage, "federated_predict", _python_config(
            "federated_predict", mb, adv.proc_tensors() + [embedding], raw_out,
            instances["predict"], delay_us, st.kind))
        d = write_step(stage, "advertiser_calibrate", {"fields": fields}, step="calibrate")
        if calibrator:
            shutil.copytree(calibrator, os.path.join(d, "calibrator"))
        cal_in = [_tensor("pctr", "float32", [1]), _tensor("pcvr", "float32", [1])] + \
            [_tensor(f, "int64", [1]) for f in fields]
        cal_out = [_tensor(o, "float32", [1]) for o in OUTPUTS]
        write_config(stage, "advertiser_calibrate", _python_config(
            "advertiser_calibrate", mb, cal_in, cal_out, instances["calibrate"], delay_us))
        os.makedirs(os.path.join(stage, ADVERTISER_ENSEMBLE, "1"))
        proc_map = {c: f"proc_{c}" for c in adv.processed}
        write_config(stage, ADVERTISER_ENSEMBLE, ensemble_config(
            ADVERTISER_ENSEMBLE, mb, adv.raw_tensors() + [embedding],
            cal_out + [_tensor(USED, "bool", [1])], [
                ("advertiser_preprocess", {n: n for n in adv.raw_names()}, proc_map),
                ("federated_predict", {**proc_map, MEDIA_EMBEDDING: MEDIA_EMBEDDING},
                 {"pctr": "raw_pctr", "pcvr": "raw_pcvr", USED: USED}),
                ("advertiser_calibrate", {"pctr": "raw_pctr", "pcvr": "raw_pcvr",
                                          **{f: f"proc_{f}" for f in fields}},
                 {o: o for o in OUTPUTS})]))
        info = {"format": FORMAT_ADVERTISER, "format_version": 1, "model": ADVERTISER_ENSEMBLE,
                "source": {"run": os.path.basename(os.path.normpath(run_dir)),
                           "fallback": os.path.basename(os.path.normpath(fallback))},
                "max_batch_size": mb, "max_queue_delay_us": delay_us, "instances": instances,
                "instance_kind": st.kind, "executor": executor, "runtime": runtime,
                "width": width, "calibrator": cal_method, "fields": fields,
                "nullable": adv.nullable, "max_list": adv.max_list,
                "onnx_max_abs_diff": diffs if runtime == "onnx" else None,
                "inputs": {**adv.input_types(), MEDIA_EMBEDDING: "float32 (optional)"},
                "outputs": {**{o: ["float32", 1] for o in OUTPUTS}, USED: ["bool", 1]}}
        with open(os.path.join(stage, "export.json"), "w") as fh:
            json.dump(info, fh, indent=2)
    return info


def export_federated(run_dir: str, fallback: str, workflow_dir: str, out_media: str,
                     out_advertiser: str, calibrator: Optional[str] = None,
                     max_batch_size: int = 1024, instances: Optional[Dict] = None,
                     delay_us: int = 100, nullable="auto", max_list: Optional[int] = None,
                     executor: str = "lean", tf_threads: int = 1, runtime: str = "onnx",
                     probe: Optional[str] = None, instance_kind: Optional[str] = None,
                     spec_dir: Optional[str] = None) -> Dict[str, Dict]:
    """Write the media and the advertiser repositories (:func:`export_media`,
    :func:`export_advertiser`); returns ``{"media": ..., "advertiser": ...}``, the content of
    each one's ``export.json``.

    Args:
        run_dir: the federated run (``media/`` and ``advertiser/``).
        fallback: the advertiser-only SavedModel directory.
        workflow_dir: ``PROC_DIR/workflow`` (with ``dataset_spec.json`` and
            ``request_facts.json``).
        out_media, out_advertiser: the repositories (new, empty, or earlier exports of this
            command).
        calibrator: a ``models.calibrate`` directory (its fields must be advertiser columns).
        instances: counts of ``preprocess``, ``predict`` (``media_bottom`` and
            ``federated_predict``) and ``calibrate`` instances.
        runtime: ``onnx`` (default) or ``tf``: what runs the networks in the model steps.
        instance_kind: the model steps' instances (``serving.export.resolve_instance_kind``).
        Others: as ``serving.export.export``.

    Raises:
        FileExistsError: an output holds something this command did not write, or both are
            the same directory.
        FileNotFoundError: a missing artifact.
        ValueError / RuntimeError: inconsistent models or settings (e.g. the bottom's and the
            top's widths differ); an ONNX model disagrees with TensorFlow.
    """
    if os.path.abspath(out_media) == os.path.abspath(out_advertiser):
        raise FileExistsError("--out-media and --out-advertiser must be different directories")
    common = dict(max_batch_size=max_batch_size, instances=instances, delay_us=delay_us,
                  nullable=nullable, max_list=max_list, executor=executor,
                  tf_threads=tf_threads, runtime=runtime, probe=probe,
                  instance_kind=instance_kind, spec_dir=spec_dir)
    # refuse a foreign directory, and inconsistent widths, before writing either repository
    for out, fmt in ((out_media, FORMAT_MEDIA), (out_advertiser, FORMAT_ADVERTISER)):
        atomic.check_replaceable(out, "export.json", fmt, "serving.federated_export")
    media_side = read_media_side(run_dir)
    advertiser_side = read_advertiser_side(run_dir, fallback)
    if media_side["width"] != advertiser_side["width"]:
        raise ValueError(f"the bottom network gives {media_side['width']} values per row, the "
                         f"top network takes {advertiser_side['width']}")
    media = export_media(run_dir, workflow_dir, out_media, side=media_side, **common)
    advertiser = export_advertiser(run_dir, fallback, workflow_dir, out_advertiser, calibrator,
                                   side=advertiser_side, **common)
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
        info = export_federated(
            args.run, args.fallback, args.workflow, args.out_media, args.out_advertiser,
            args.calibrator, args.max_batch_size, parse_instances(args.instances),
            args.queue_delay_us, args.nullable, args.max_list, args.executor,
            tf_threads=args.tf_threads, runtime=args.runtime, probe=args.probe,
            instance_kind=args.instance_kind)
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
        ("instances", f"{resolve_instance_kind(args.instance_kind, 'cpu')} "
                      f"{a['instances']}"),
        ("max_batch_size", a["max_batch_size"]),
        ("nullable", ", ".join(m["nullable"] + a["nullable"]) or "-")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
