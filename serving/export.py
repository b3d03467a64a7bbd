"""Export a trained run as a Triton model repository: the ``extcvr`` ensemble.

Usage::

    python -m serving.export --run RUN_DIR --workflow WF_DIR [--calibrator CAL_DIR]
        --out triton_repo/cpu [--target {cpu,ngc}] [--max-batch-size 1024]
        [--instances preprocess=1,predict=1,calibrate=1] [--queue-delay-us 100]
        [--nullable auto|none|COL,COL] [--max-list N] [--executor {lean,merlin}]
        [--tf-threads 1] [--probe RAW.parquet] [--instance-kind {auto,KIND_CPU,KIND_GPU}]

From Python: ``export(run_dir, workflow_dir, out, calibrator, settings)``, the options after
``--out`` being one ``serving.settings.ExportSettings`` (the same object as
``serving.federated_export``'s).

The repository is self-contained and relocatable: every artifact a step needs (the saved
workflow, the SavedModel / ONNX model, the calibrator JSON) and the project code the step imports
(``<step>/1/code/``, ``serving/code_bundle.py``) are copied under it and found relative to the
step's directory at load; no path of the exporting machine is read. Copy it to the serving host
or mount it into an NGC ``tritonserver`` container. It is written to a staging directory and
renamed into place; an existing non-empty ``--out`` is replaced only when an earlier export wrote
it (its ``export.json``), never another directory. It holds:

- ``extcvr``: ``platform: "ensemble"``: preprocess -> predict -> calibrate. Inputs are the raw
  request features (ids ``[B, 1]`` int64, continuous ``[B, 1]`` float32, a multi-hot feature as
  ``[B, W]`` int64 plus ``name__lengths`` ``[B, 1]``); outputs ``pctr``, ``pcvr`` (calibrated)
  and ``pctcvr`` ``[B, 1]`` float32.
- ``preprocess`` (Python backend): the NVTabular workflow of ``WF_DIR`` (copied), per request.
- ``predict``: ``--target cpu``: Python backend running the run's model with ONNX Runtime
  (``--runtime onnx``, the default: tf2onnx's conversion of the SavedModel, refused unless it
  matches TensorFlow within 1e-5 on the probe batch below; ``serving/onnx_export.py``) or
  the SavedModel itself (``--runtime tf``);
  ``--target ngc``: ``platform: "tensorflow_savedmodel"`` on a batched wrapper of the
  SavedModel (``model.savedmodel``), instances on the GPU, for the NGC tritonserver (written,
  not run here: this machine has no TF backend and no GPU).
  Its instances are ``--instance-kind``: ``auto`` (default for ``--target cpu``) asks
  ``preprocessing.device`` (``KIND_GPU`` with a GPU and a GPU build of tritonserver, e.g. in the
  NGC container; ``KIND_CPU`` otherwise); ``--target ngc`` defaults to ``KIND_GPU``. On a
  ``KIND_GPU`` instance the ONNX runtime uses ONNX Runtime's CUDA provider when installed
  (``serving.steps.PredictStep``); the probe check below runs with the same providers.
- ``calibrate`` (Python backend): ``CAL_DIR`` copied into ``calibrate/1/calibrator``; without
  ``--calibrator`` the identity.

``preprocess`` and ``calibrate`` are ``KIND_CPU`` whatever the decision: per-request numpy /
pandas work on a few hundred rows, where a GPU would add transfers and gain nothing.

Every compute step has dynamic batching and a configurable instance count. ``--nullable auto``
(default) allows NaN = missing in the continuous columns that had missing values in the training
input, and ``--max-list`` defaults to the longest training list: both recorded beside the workflow
by ``preprocessing.run`` (``WF_DIR/request_facts.json``); NaN anywhere else is a request error.
The ONNX model is checked against TensorFlow on a probe batch: raw rows synthesised from the
workflow's fitted vocabularies (``RequestTransformer.probe_frame``), or the rows of ``--probe``,
passed through the workflow.

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

from preprocessing import columns as C
from common import atomic
from common.atomic import atomic_output_dir
from preprocessing.device import KIND_CPU, KIND_GPU, detect
from common.tables import print_table
from preprocessing.request_facts import load_request_facts
from serving.code_bundle import copy_code
# STEPS and parse_instances stay importable from here (the settings' home: serving.settings)
from serving.settings import (INSTANCE_KINDS, RUNTIMES, STEPS, TARGETS,  # noqa: F401
                              ExportSettings, add_repository_options, parse_instances)

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_models", "model.py")
#: What ``model.py`` imports; ``code_bundle`` copies their import closure into each step.
STEP_MODULES = ("serving.steps", "serving.preprocess")
#: ``export.json``'s marker: a directory holding it was written by this command.
FORMAT = "extcvr.triton_repository"
ENSEMBLE = "extcvr"
OUTPUTS = ("pctr", "pcvr", "pctcvr")
TYPES = {"int64": "TYPE_INT64", "float32": "TYPE_FP32", "bool": "TYPE_BOOL"}


def _tensor(name: str, dtype: str, dims: Sequence[int], optional: bool = False) -> str:
    """One tensor of a ``config.pbtxt`` input / output list (``optional``: an input that a
    request may leave out)."""
    return (f'  {{ name: "{name}" data_type: {TYPES[dtype]} '
            f'dims: [ {", ".join(str(d) for d in dims)} ]'
            f'{" optional: true" if optional else ""} }}')


def _io(kind: str, tensors: List[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]\n"


def _python_config(name: str, max_batch: int, inputs: List[str], outputs: List[str],
                   instances: int, delay_us: int, kind: str = KIND_CPU) -> str:
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
            + _io("input", inputs) + _io("output", outputs)
            + f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n"
            + f"instance_group [ {{ count: {instances} kind: {kind} }} ]\n")


def resolve_instance_kind(instance_kind: Optional[str], target: str) -> str:
    """The ``predict`` step's ``instance_group`` kind: ``KIND_CPU`` / ``KIND_GPU`` as given;
    ``None`` / ``"auto"``: ``KIND_GPU`` for ``--target ngc`` (the NGC container's GPU
    server), else ``preprocessing.device``'s decision for this machine."""
    if instance_kind in (None, "auto"):
        return KIND_GPU if target == "ngc" else detect().triton_kind
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"--instance-kind must be auto or one of {INSTANCE_KINDS}; "
                         f"got {instance_kind!r}")
    return instance_kind


def _map(pairs: Dict[str, str], kind: str) -> str:
    return "".join(f'      {kind} {{ key: "{k}" value: "{v}" }}\n' for k, v in pairs.items())


def check_replaceable(out: str) -> None:
    """Refuse to replace ``out`` unless it is absent, empty, or an earlier export.

    Raises:
        FileExistsError: ``out`` holds files that this command did not write.
    """
    atomic.check_replaceable(out, "export.json", FORMAT, "serving.export",
                             f"Choose a new or empty directory, e.g. {os.path.join(out, 'cpu')}")


def load_spec(workflow_dir: str, spec_dir: Optional[str] = None) -> C.DatasetSpec:
    """The dataset spec beside the workflow (or in ``spec_dir``).

    Raises:
        FileNotFoundError: no ``dataset_spec.json`` (a workflow of an older
            ``preprocessing.run``).
    """
    if spec_dir is None and not os.path.isfile(os.path.join(workflow_dir, C.SPEC_FILENAME)):
        raise FileNotFoundError(
            f"{os.path.join(workflow_dir, C.SPEC_FILENAME)}: not found. The workflow was saved "
            "by an older `python -m preprocessing.run`; rerun it (or give spec_dir)")
    return C.DatasetSpec.load(spec_dir or workflow_dir)


def request_settings(workflow_dir: str, multihot: Sequence[str], continuous: Sequence[str],
                     nullable="auto", max_list: Optional[int] = None) -> Tuple[List[str], int]:
    """``(nullable columns, max_list)`` of the request inputs: ``--nullable auto`` = the
    continuous columns (of ``continuous``) with missing values in the training input,
    ``max_list`` default = the longest training list of ``multihot`` (both from
    ``request_facts.json`` beside the workflow); ``none`` or a comma-separated list otherwise.

    Raises:
        ValueError: a nullable column that is not one of ``continuous``.
    """
    if (max_list is None and multihot) or nullable == "auto":
        facts = load_request_facts(workflow_dir)
    if max_list is None:
        max_list = max([int(facts["max_list"].get(c, 0)) for c in multihot] + [1]) \
            if multihot else 1
    if nullable == "auto":
        nullable = [c for c in facts["nullable"] if c in continuous]
    elif nullable in (None, "none", ""):
        nullable = []
    elif isinstance(nullable, str):
        nullable = [c for c in nullable.split(",") if c]
    unknown = sorted(set(nullable) - set(continuous))
    if unknown:
        raise ValueError(f"--nullable: {unknown} are not continuous features {list(continuous)}")
    return list(nullable), max_list


def calibrator_fields(calibrator: Optional[str], processed: Mapping[str, str]
                      ) -> Tuple[List[str], Optional[str]]:
    """``(fields, method)`` of the calibrator directory (``([], None)`` without one).

    Raises:
        FileNotFoundError: no ``calibrator.json`` in it.
        ValueError: a field that is not a processed feature of ``processed``.
    """
    if not calibrator:
        return [], None
    cal_json = os.path.join(calibrator, "calibrator.json")
    if not os.path.isfile(cal_json):
        raise FileNotFoundError(f"{cal_json}: --calibrator must hold calibrator.json")
    cal_spec = json.load(open(cal_json))
    fields, method = list(cal_spec.get("fields", [])), cal_spec.get("method")
    missing = [f for f in fields if f not in processed]
    if missing:
        raise ValueError(f"calibrator fields {missing} are not processed features")
    return fields, method


def raw_tensor_configs(raw_inputs: Sequence[str], raw_types: Mapping[str, str],
                       multihot: Sequence[str]) -> List[str]:
    """The request inputs of a ``config.pbtxt`` (the wire format of the README): an id or a
    continuous value ``[1]``, a multi-hot column ``[-1]`` with its ``__lengths`` ``[1]``."""
    out = []
    for c in raw_inputs:
        if c in multihot:
            out += [_tensor(c, "int64", [-1]), _tensor(c + "__lengths", "int64", [1])]
        else:
            out.append(_tensor(c, raw_types[c], [1]))
    return out


def processed_tensor_configs(processed: Mapping[str, str], multihot: Sequence[str],
                             max_list: int) -> List[str]:
    """The processed columns inside an ensemble: ``[1]``, a multi-hot one ``[max_list]``."""
    return [_tensor(c, d, [max_list] if c in multihot else [1]) for c, d in processed.items()]


def write_step(stage: str, model: str, settings: Dict, step: Optional[str] = None,
               modules: Sequence[str] = STEP_MODULES) -> str:
    """A Python-backend model's version directory ``stage/model/1``: ``model.py`` (the
    template), ``code/`` (the import closure of ``modules``) and ``serving.json`` (``step``,
    default ``model``, and ``settings``); returns the directory."""
    d = os.path.join(stage, model, "1")
    os.makedirs(d)
    shutil.copy2(TEMPLATE, os.path.join(d, "model.py"))
    copy_code(modules, os.path.join(d, "code"))
    with open(os.path.join(d, "serving.json"), "w") as fh:
        json.dump({"step": step or model, **settings}, fh, indent=2)
    return d


def write_config(stage: str, model: str, text: str) -> None:
    """``stage/model/config.pbtxt``."""
    with open(os.path.join(stage, model, "config.pbtxt"), "w") as fh:
        fh.write(text)


def ensemble_config(name: str, max_batch: int, inputs: List[str], outputs: List[str],
                    steps: Sequence[Tuple[str, Dict[str, str], Dict[str, str]]]) -> str:
    """``config.pbtxt`` of an ensemble: ``steps`` are ``(model, input_map, output_map)``."""
    text = (f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n'
            + _io("input", inputs) + _io("output", outputs)
            + "ensemble_scheduling {\n  step [\n")
    text += ",\n".join(
        f'    {{\n      model_name: "{model}"\n      model_version: -1\n'
        + _map(inp, "input_map") + _map(outp, "output_map") + "    }"
        for model, inp, outp in steps)
    return text + "\n  ]\n}\n"


def probe_feed(workflow_dir: str, spec: C.DatasetSpec, signature: Dict,
               settings: ExportSettings = ExportSettings(),
               columns: Optional[Sequence[str]] = None) -> Dict:
    """Signature inputs of a probe batch passed through the workflow: the first
    ``settings.probe_rows`` rows of the raw Parquet file ``settings.probe``, or raw rows
    synthesised from the workflow's fitted state (vocabulary and unseen values, missing values,
    lists of every length). ``columns``: only these raw inputs' part of the workflow
    (``RequestTransformer``)."""
    import pandas as pd

    from serving.preprocess import RequestTransformer, signature_inputs
    transformer = RequestTransformer(workflow_dir, spec, columns=columns)
    probe, rows = settings.probe, settings.probe_rows
    if probe:
        raw = pd.read_parquet(probe)
        missing = [c for c in transformer.inputs if c not in raw.columns]
        if missing:
            raise ValueError(f"--probe {probe}: {len(raw)} rows without the request columns "
                             f"{missing}")
        raw = raw.head(rows)
    else:
        raw = transformer.probe_frame(rows=rows)
    return signature_inputs(transformer.transform_frame(raw), signature)


class RequestColumns:
    """One ensemble's request columns: the processed columns (name -> ``int64`` /
    ``float32``) and the multi-hot ones, the raw request inputs (the spec's features among the
    processed columns, in the spec's order), and the nullable columns and ``max_list`` that
    ``settings`` resolve to (:func:`request_settings`).

    Raises:
        FileNotFoundError: ``request_facts.json`` is needed and missing.
        ValueError: a nullable column that is not a continuous one of ``processed``.
    """

    def __init__(self, processed: Dict[str, str], multihot: List[str], spec: C.DatasetSpec,
                 workflow_dir: str, settings: ExportSettings):
        self.processed, self.multihot, self.spec = processed, multihot, spec
        continuous = [c for c, d in processed.items() if d == "float32"]
        self.nullable, self.max_list = request_settings(
            workflow_dir, multihot, continuous, self._nullable(settings.nullable, continuous),
            settings.max_list)
        self.raw_inputs = [c for c in spec.features if c in processed]
        self.raw_types = {c: ("float32" if c in spec.continuous else "int64")
                          for c in self.raw_inputs}

    def _nullable(self, nullable, continuous: Sequence[str]):
        """The ``nullable`` setting as these columns take it: as given (a subclass may
        restrict it to its own columns)."""
        return nullable

    def raw_tensors(self) -> List[str]:
        return raw_tensor_configs(self.raw_inputs, self.raw_types, self.multihot)

    def proc_tensors(self) -> List[str]:
        return processed_tensor_configs(self.processed, self.multihot, self.max_list)

    def raw_names(self) -> List[str]:
        return [t.split('"')[1] for t in self.raw_tensors()]

    def input_types(self) -> Dict[str, str]:
        """The request inputs of ``export.json``: name -> dtype (``__lengths`` included)."""
        return {n: ("int64" if n.endswith("__lengths") else self.raw_types[n])
                for n in self.raw_names()}


def write_calibrate_step(stage: str, model: str, calibrator: Optional[str],
                         fields: List[str], settings: ExportSettings) -> List[str]:
    """The calibrate step ``model``: ``serving.steps.CalibrateStep`` on ``calibrator`` (copied
    into the step; ``None``: the identity), its inputs ``pctr``, ``pcvr`` and the calibrator's
    ``fields``; returns its output tensors (``OUTPUTS``), the ensemble's outputs."""
    d = write_step(stage, model, {"fields": fields}, step="calibrate")
    if calibrator:
        shutil.copytree(calibrator, os.path.join(d, "calibrator"))
    cal_in = [_tensor("pctr", "float32", [1]), _tensor("pcvr", "float32", [1])] + \
        [_tensor(f, "int64", [1]) for f in fields]
    cal_out = [_tensor(o, "float32", [1]) for o in OUTPUTS]
    write_config(stage, model, _python_config(
        model, settings.max_batch_size, cal_in, cal_out, settings.instances["calibrate"],
        settings.queue_delay_us))
    return cal_out


def write_export_json(stage: str, info: Dict) -> None:
    """``stage/export.json``: the repository's marker and description."""
    with open(os.path.join(stage, "export.json"), "w") as fh:
        json.dump(info, fh, indent=2)


def export(run_dir: str, workflow_dir: str, out: str, calibrator: Optional[str] = None,
           settings: ExportSettings = ExportSettings()) -> Dict:
    """Write the model repository ``out``; returns the content of its ``export.json``.

    Args:
        run_dir: a run of ``models.train`` (``saved_model/``, ``signature.json``,
            ``config.json``).
        workflow_dir: ``PROC_DIR/workflow`` of ``preprocessing.run`` (the saved workflow with
            ``dataset_spec.json`` and ``request_facts.json``).
        out: the repository; see :func:`check_replaceable`.
        calibrator: a calibrator directory of ``calibration.calibrate`` (``calibrator.json``).
        settings: how the repository is written (``serving.settings.ExportSettings``: target,
            runtime, instances, batching, nullable columns, probe...; see also the module
            docstring and ``--help``).

    Raises:
        FileExistsError: ``out`` holds something this command did not write.
        FileNotFoundError: a missing artifact (the message names it).
        ValueError / RuntimeError: inconsistent settings; the ONNX model disagrees with TF.
    """
    kind = resolve_instance_kind(settings.instance_kind, settings.target)
    check_replaceable(out)
    src = _Sources(run_dir, workflow_dir, calibrator, settings)
    with atomic_output_dir(out) as stage:
        _write_preprocess(stage, src, settings)
        onnx_max_diff = None
        if settings.target == "cpu":
            onnx_max_diff = _write_python_predict(stage, src, settings, kind)
        else:
            _write_savedmodel_predict(stage, src, settings, kind)
        cal_out = write_calibrate_step(stage, "calibrate", calibrator, src.fields, settings)
        _write_ensemble(stage, src, cal_out, settings)
        write_export_json(stage, _export_info(src, settings, onnx_max_diff))
    return json.load(open(os.path.join(out, "export.json")))


class _Sources:
    """What :func:`export` reads, and checks, before it writes anything: the run (its
    signature and config), the dataset spec, the request columns and the calibrator's fields.

    Raises:
        FileNotFoundError: a missing artifact.
        ValueError: a nullable column or a calibrator field that the model does not take.
    """

    def __init__(self, run_dir: str, workflow_dir: str, calibrator: Optional[str],
                 settings: ExportSettings):
        for path, what in ((os.path.join(run_dir, "saved_model"), "SavedModel"),
                           (os.path.join(run_dir, "signature.json"), "run signature"),
                           (os.path.join(workflow_dir, "workflow.pkl"), "saved workflow")):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path}: no {what}")
        self.run_dir, self.workflow_dir = run_dir, workflow_dir
        self.saved_model = os.path.join(run_dir, "saved_model")
        self.spec = load_spec(workflow_dir, settings.spec_dir)
        self.signature = json.load(open(os.path.join(run_dir, "signature.json")))
        self.config = json.load(open(os.path.join(run_dir, "config.json")))
        features = self.config["features"]
        processed = {f["name"]: ("float32" if f["kind"] == "continuous" else "int64")
                     for f in features}
        multihot = [f["name"] for f in features if f["kind"] == "multihot"]
        self.columns = RequestColumns(processed, multihot, self.spec, workflow_dir, settings)
        self.fields, self.cal_method = calibrator_fields(calibrator, processed)


def _predict_outputs() -> List[str]:
    return [_tensor("pctr", "float32", [1]), _tensor("pcvr", "float32", [1])]


def _write_preprocess(stage: str, src: _Sources, settings: ExportSettings) -> None:
    """``preprocess``: the workflow (copied whole) and the dataset spec."""
    cols = src.columns
    d = write_step(stage, "preprocess", {
        "executor": settings.executor, "nullable": list(cols.nullable),
        "max_list": cols.max_list, "outputs": cols.processed})
    shutil.copytree(src.workflow_dir, os.path.join(d, "workflow"))
    src.spec.save(d)
    write_config(stage, "preprocess", _python_config(
        "preprocess", settings.max_batch_size, cols.raw_tensors(), cols.proc_tensors(),
        settings.instances["preprocess"], settings.queue_delay_us))


def _write_python_predict(stage: str, src: _Sources, settings: ExportSettings,
                          kind: str) -> Optional[float]:
    """``predict`` of ``--target cpu``: a Python-backend step on the SavedModel, and with
    ``--runtime onnx`` its ONNX conversion checked against TensorFlow on the probe batch;
    returns the max abs difference (None without ONNX)."""
    cols = src.columns
    d = write_step(stage, "predict", {
        "signature": src.signature, "multihot": cols.multihot, "max_list": cols.max_list,
        "tf_threads": settings.tf_threads, "runtime": settings.runtime})
    shutil.copytree(src.saved_model, os.path.join(d, "saved_model"))
    onnx_max_diff = None
    if settings.runtime == "onnx":
        from serving.onnx_export import check_against_tensorflow, convert_saved_model
        onnx_path = os.path.join(d, "model.onnx")
        convert_saved_model(src.saved_model, onnx_path)
        onnx_max_diff = check_against_tensorflow(
            src.saved_model, onnx_path,
            probe_feed(src.workflow_dir, src.spec, src.signature["inputs"], settings),
            providers=detect().onnx_providers(0 if kind == KIND_GPU else None))
    write_config(stage, "predict", _python_config(
        "predict", settings.max_batch_size, cols.proc_tensors(), _predict_outputs(),
        settings.instances["predict"], settings.queue_delay_us, kind))
    return onnx_max_diff


def _write_savedmodel_predict(stage: str, src: _Sources, settings: ExportSettings,
                              kind: str) -> None:
    """``predict`` of ``--target ngc``: Triton's TensorFlow backend on a batched wrapper of
    the SavedModel (:func:`batched_saved_model`)."""
    cols = src.columns
    d = os.path.join(stage, "predict", "1")
    os.makedirs(d)
    batched_saved_model(src.saved_model, src.signature, cols.multihot, cols.max_list,
                        os.path.join(d, "model.savedmodel"))
    write_config(stage, "predict",
                 f'name: "predict"\nplatform: "tensorflow_savedmodel"\n'
                 f"max_batch_size: {settings.max_batch_size}\n"
                 + _io("input", cols.proc_tensors()) + _io("output", _predict_outputs())
                 + f"dynamic_batching {{ max_queue_delay_microseconds: "
                   f"{settings.queue_delay_us} }}\n"
                 + f"instance_group [ {{ count: {settings.instances['predict']} "
                   f"kind: {kind} }} ]\n")


def _write_ensemble(stage: str, src: _Sources, outputs: List[str],
                    settings: ExportSettings) -> None:
    """``extcvr``: preprocess -> predict -> calibrate, from the raw request to ``outputs``."""
    cols = src.columns
    os.makedirs(os.path.join(stage, ENSEMBLE, "1"))
    proc_map = {c: f"proc_{c}" for c in cols.processed}
    steps = [
        ("preprocess", {n: n for n in cols.raw_names()}, proc_map),
        ("predict", proc_map, {"pctr": "raw_pctr", "pcvr": "raw_pcvr"}),
        ("calibrate", {"pctr": "raw_pctr", "pcvr": "raw_pcvr",
                       **{f: f"proc_{f}" for f in src.fields}}, {o: o for o in OUTPUTS}),
    ]
    write_config(stage, ENSEMBLE, ensemble_config(ENSEMBLE, settings.max_batch_size,
                                                  cols.raw_tensors(), outputs, steps))


def _export_info(src: _Sources, settings: ExportSettings,
                 onnx_max_diff: Optional[float]) -> Dict:
    """The content of ``export.json``."""
    cols = src.columns
    return {"format": FORMAT, "format_version": 2,
            "source": {"run": os.path.basename(os.path.normpath(src.run_dir)),
                       "model": src.config.get("model"), "seed": src.config.get("seed")},
            "calibrator": src.cal_method, "target": settings.target,
            "max_batch_size": settings.max_batch_size, "instances": dict(settings.instances),
            "max_queue_delay_us": settings.queue_delay_us, "nullable": list(cols.nullable),
            "max_list": cols.max_list, "executor": settings.executor, "fields": src.fields,
            "runtime": (settings.runtime if settings.target == "cpu"
                        else "tensorflow_savedmodel"),
            "onnx_max_abs_diff": onnx_max_diff, "inputs": cols.input_types(),
            "multihot": cols.multihot}


def batched_saved_model(src: str, signature: Dict, multihot: Sequence[str], max_list: int,
                        dst: str) -> None:
    """A SavedModel for Triton's TensorFlow backend: batched ``[B, 1]`` / ``[B, W]`` inputs
    (multi-hot padded with 0) -> ``pctr``, ``pcvr`` ``[B, 1]``, calling the run's
    ``serving_default`` inside."""
    import tensorflow as tf
    loaded = tf.saved_model.load(src)
    serve = loaded.signatures["serving_default"]
    specs = {}
    for name, s in signature["inputs"].items():
        if name.endswith("__values") or name.endswith("__offsets"):
            continue
        specs[name] = tf.TensorSpec([None, 1], s["dtype"], name=name)
    for c in multihot:
        specs[c] = tf.TensorSpec([None, max_list], tf.int64, name=c)

    @tf.function(input_signature=[specs])
    def batched(inputs):
        feed = {k: tf.reshape(v, [-1]) for k, v in inputs.items() if k not in multihot}
        for c in multihot:
            ragged = tf.RaggedTensor.from_tensor(inputs[c], padding=tf.constant(0, tf.int64))
            feed[f"{c}__values"] = ragged.flat_values
            feed[f"{c}__offsets"] = ragged.row_splits
        out = serve(**feed)
        return {k: tf.reshape(out[k], [-1, 1]) for k in ("pctr", "pcvr")}

    module = tf.Module()
    module.model = loaded
    tf.saved_model.save(module, dst, signatures={"serving_default": batched})


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m serving.export``."""
    parser = argparse.ArgumentParser(prog="python -m serving.export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="RUN_DIR of models.train")
    parser.add_argument("--workflow", required=True, help="PROC_DIR/workflow")
    parser.add_argument("--calibrator", default=None, help="CAL_DIR with calibrator.json")
    parser.add_argument("--out", required=True,
                        help="the model repository (new, empty, or an earlier export)")
    parser.add_argument("--target", default="cpu", choices=TARGETS)
    add_repository_options(parser)
    parser.add_argument("--tf-threads", type=int, default=1,
                        help="intra/inter-op threads per predict instance (0 = the runtime's)")
    parser.add_argument("--runtime", default="onnx", choices=RUNTIMES,
                        help="what runs the model in the CPU target's predict step")
    parser.add_argument("--probe", default=None,
                        help="raw Parquet rows that check the ONNX model (default: rows "
                             "synthesised from the workflow's fitted vocabularies)")
    parser.add_argument("--instance-kind", default="auto", choices=("auto", *INSTANCE_KINDS),
                        help="the predict step's Triton instances (auto: KIND_GPU for --target "
                             "ngc, else preprocessing.device's decision)")
    args = parser.parse_args(argv)
    try:
        settings = ExportSettings.from_args(args)
        info = export(args.run, args.workflow, args.out, args.calibrator, settings)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table("serving.export", [
        ("repository", os.path.abspath(args.out)), ("target", info["target"]),
        ("predict instances", resolve_instance_kind(settings.instance_kind, settings.target)),
        ("ensemble", f"{ENSEMBLE}: preprocess -> predict -> calibrate"),
        ("calibrator", info["calibrator"] or "identity"),
        ("predict runtime", info["runtime"] + (
            f" (max |ONNX - TF| {info['onnx_max_abs_diff']:.2g} on probe rows)"
            if info.get("onnx_max_abs_diff") is not None else "")),
        ("max_batch_size", info["max_batch_size"]), ("instances", info["instances"]),
        ("nullable", ", ".join(info["nullable"]) or "-"), ("max_list", info["max_list"]),
        ("inputs", len(info["inputs"]))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
