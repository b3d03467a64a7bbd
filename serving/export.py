"""Export a trained run as a Triton model repository: the ``extcvr`` ensemble.

Usage::

    python -m serving.export --run RUN_DIR --workflow WF_DIR [--calibrator CAL_DIR]
        --out triton_repo/ [--target {cpu,ngc}] [--max-batch-size 1024]
        [--instances preprocess=1,predict=1,calibrate=1] [--queue-delay-us 100]
        [--nullable auto|none|COL,COL] [--max-list N] [--executor {lean,merlin}]
        [--tf-threads 1]

The repository (written to a staging directory and renamed into place) holds:

- ``extcvr``: ``platform: "ensemble"``: preprocess -> predict -> calibrate. Inputs are the raw
  request features (ids ``[B, 1]`` int64, continuous ``[B, 1]`` float32, a multi-hot feature as
  ``[B, W]`` int64 plus ``name__lengths`` ``[B, 1]``); outputs ``pctr``, ``pcvr`` (calibrated)
  and ``pctcvr`` ``[B, 1]`` float32.
- ``preprocess`` (Python backend): the NVTabular workflow of ``WF_DIR`` (copied), per request.
- ``predict``: ``--target cpu``: Python backend running the run's model with ONNX Runtime
  (``--runtime onnx``, the default: tf2onnx's conversion of the SavedModel, refused unless it
  matches TensorFlow within 1e-5 on processed test rows; see ``serving/onnx_export.py``) or
  the SavedModel itself (``--runtime tf``);
  ``--target ngc``: ``platform: "tensorflow_savedmodel"`` on a batched wrapper of the
  SavedModel (``model.savedmodel``), for the NGC tritonserver (written, not run here: this
  machine has no TF backend).
- ``calibrate`` (Python backend): ``CAL_DIR`` copied into ``calibrate/1/calibrator``; without
  ``--calibrator`` the identity.

Every compute step has dynamic batching and a configurable instance count. ``--nullable auto``
(default) allows NaN = missing in the continuous columns that had missing values in the training
input (found through ``PROC_DIR/manifest.json``); NaN anywhere else is a request error.

Security: the workflow is a cloudpickle file; export and serve only artifacts this project
produced.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import sysconfig
from typing import Dict, List, Optional, Sequence

from preprocessing import columns as C
from preprocessing.atomic import atomic_output_dir
from preprocessing.report import print_table

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_models", "model.py")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENSEMBLE = "extcvr"
RUNTIMES = ("onnx", "tf")
STEPS = ("preprocess", "predict", "calibrate")
OUTPUTS = ("pctr", "pcvr", "pctcvr")
TYPES = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}


def _tensor(name: str, dtype: str, dims: Sequence[int]) -> str:
    return (f'  {{ name: "{name}" data_type: {TYPES[dtype]} '
            f'dims: [ {", ".join(str(d) for d in dims)} ] }}')


def _io(kind: str, tensors: List[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]\n"


def _python_config(name: str, max_batch: int, inputs: List[str], outputs: List[str],
                   instances: int, delay_us: int) -> str:
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
            + _io("input", inputs) + _io("output", outputs)
            + f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n"
            + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n")


def _map(pairs: Dict[str, str], kind: str) -> str:
    return "".join(f'      {kind} {{ key: "{k}" value: "{v}" }}\n' for k, v in pairs.items())


def parse_instances(text: str) -> Dict[str, int]:
    """``"preprocess=2,predict=1"`` -> counts per step (unnamed steps get 1)."""
    out = {s: 1 for s in STEPS}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, n = part.partition("=")
        if name not in STEPS or not n.isdigit() or int(n) < 1:
            raise ValueError(f"--instances: expected STEP=N with STEP in {STEPS} and N >= 1; "
                             f"got '{part}'")
        out[name] = int(n)
    return out


def training_nulls(proc_dir: str, spec: C.DatasetSpec) -> List[str]:
    """Continuous columns with missing values in the training input of ``proc_dir`` (read
    through its ``manifest.json``); [] when that input is no longer there."""
    try:
        manifest = json.load(open(os.path.join(proc_dir, "manifest.json")))
        files = [os.path.join(manifest["input"], f) for f in manifest["files"]["train"]]
    except (OSError, KeyError, ValueError):
        return []
    if not files or not all(os.path.isfile(f) for f in files):
        return []
    import pyarrow.parquet as pq
    nulls = set()
    for f in files:
        meta = pq.ParquetFile(f).metadata
        names = meta.schema.names
        for rg in range(meta.num_row_groups):
            for c in spec.continuous:
                if c in names:
                    st = meta.row_group(rg).column(names.index(c)).statistics
                    if st is None or st.null_count is None or st.null_count > 0:
                        nulls.add(c)
    return [c for c in spec.continuous if c in nulls]


def training_max_list(proc_dir: str, column: str) -> Optional[int]:
    """Longest list of ``column`` in the processed training split, if it is there."""
    parts = sorted(glob.glob(os.path.join(proc_dir, "train", "*.parquet")))
    if not parts:
        return None
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    best = 0
    for p in parts:
        col = pq.read_table(p, columns=[column]).column(column)
        best = max(best, int(pc.max(pc.list_value_length(col)).as_py() or 0))
    return best


def export(run_dir: str, workflow_dir: str, out: str, calibrator: Optional[str] = None,
           target: str = "cpu", max_batch_size: int = 1024, instances: Optional[Dict] = None,
           delay_us: int = 100, nullable="auto", max_list: Optional[int] = None,
           executor: str = "lean", spec_dir: Optional[str] = None,
           tf_threads: int = 1, runtime: str = "onnx") -> Dict:
    """Write the model repository; returns a summary dict (see the module docstring)."""
    if target not in ("cpu", "ngc"):
        raise ValueError(f"--target must be 'cpu' or 'ngc'; got {target!r}")
    if max_batch_size < 1:
        raise ValueError(f"--max-batch-size must be >= 1; got {max_batch_size}")
    if runtime not in RUNTIMES:
        raise ValueError(f"--runtime must be one of {RUNTIMES}; got {runtime!r}")
    instances = instances or {s: 1 for s in STEPS}
    proc_dir = os.path.dirname(os.path.abspath(workflow_dir))
    spec = C.DatasetSpec.load(spec_dir or proc_dir)
    for path, what in ((os.path.join(run_dir, "saved_model"), "SavedModel"),
                       (os.path.join(workflow_dir, "workflow.pkl"), "saved workflow")):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no {what}")
    signature = json.load(open(os.path.join(run_dir, "signature.json")))
    config = json.load(open(os.path.join(run_dir, "config.json")))
    features = config["features"]
    multihot = [f["name"] for f in features if f["kind"] == "multihot"]
    continuous = [f["name"] for f in features if f["kind"] == "continuous"]
    processed = {f["name"]: ("float32" if f["kind"] == "continuous" else "int64")
                 for f in features}
    if max_list is None:
        lengths = [training_max_list(proc_dir, c) for c in multihot]
        max_list = max([x for x in lengths if x] + [1]) if multihot else 1
    if nullable == "auto":
        nullable = training_nulls(proc_dir, spec)
    elif nullable in (None, "none", ""):
        nullable = []
    elif isinstance(nullable, str):
        nullable = [c for c in nullable.split(",") if c]
    unknown = sorted(set(nullable) - set(continuous))
    if unknown:
        raise ValueError(f"--nullable: {unknown} are not continuous features {continuous}")
    fields: List[str] = []
    if calibrator:
        cal_json = os.path.join(calibrator, "calibrator.json")
        if not os.path.isfile(cal_json):
            raise FileNotFoundError(f"{cal_json}: --calibrator must hold calibrator.json")
        fields = list(json.load(open(cal_json)).get("fields", []))
        missing = [f for f in fields if f not in processed]
        if missing:
            raise ValueError(f"calibrator fields {missing} are not processed features")
    # Raw request inputs: the workflow's inputs = the spec's features the model uses.
    raw_inputs = [c for c in spec.features if c in processed]
    raw_types = {c: ("float32" if c in spec.continuous else "int64") for c in raw_inputs}
    paths = {"repo_root": REPO_ROOT, "site_packages": sysconfig.get_paths()["purelib"]}

    def raw_tensors() -> List[str]:
        out = []
        for c in raw_inputs:
            if c in multihot:
                out += [_tensor(c, "int64", [-1]), _tensor(c + "__lengths", "int64", [1])]
            else:
                out.append(_tensor(c, raw_types[c], [1]))
        return out

    def proc_tensors() -> List[str]:
        return [_tensor(c, d, [max_list] if c in multihot else [1])
                for c, d in processed.items()]

    mb = max_batch_size
    onnx_max_diff = None
    with atomic_output_dir(out) as stage:
        def version_dir(step: str, settings: Dict) -> str:
            d = os.path.join(stage, step, "1")
            os.makedirs(d)
            shutil.copy2(TEMPLATE, os.path.join(d, "model.py"))
            with open(os.path.join(d, "serving.json"), "w") as fh:
                json.dump({"step": step, **paths, **settings}, fh, indent=2)
            return d

        # preprocess
        d = version_dir("preprocess", {"executor": executor, "nullable": list(nullable),
                                       "max_list": max_list, "outputs": processed})
        shutil.copytree(workflow_dir, os.path.join(d, "workflow"))
        spec.save(d)
        with open(os.path.join(stage, "preprocess", "config.pbtxt"), "w") as fh:
            fh.write(_python_config("preprocess", mb, raw_tensors(), proc_tensors(),
                                    instances["preprocess"], delay_us))
        # predict
        pred_out = [_tensor("pctr", "float32", [1]), _tensor("pcvr", "float32", [1])]
        if target == "cpu":
            d = version_dir("predict", {"signature": signature, "multihot": multihot,
                                        "max_list": max_list, "tf_threads": tf_threads,
                                        "runtime": runtime})
            saved_model = os.path.join(run_dir, "saved_model")
            shutil.copytree(saved_model, os.path.join(d, "saved_model"))
            if runtime == "onnx":
                from serving.onnx_export import (check_against_tensorflow, convert_saved_model,
                                                 processed_feed)
                onnx_path = os.path.join(d, "model.onnx")
                convert_saved_model(saved_model, onnx_path)
                onnx_max_diff = check_against_tensorflow(
                    saved_model, onnx_path,
                    processed_feed(proc_dir, signature["inputs"], multihot))
            with open(os.path.join(stage, "predict", "config.pbtxt"), "w") as fh:
                fh.write(_python_config("predict", mb, proc_tensors(), pred_out,
                                        instances["predict"], delay_us))
        else:
            d = os.path.join(stage, "predict", "1")
            os.makedirs(d)
            batched_saved_model(os.path.join(run_dir, "saved_model"), signature, multihot,
                                max_list, os.path.join(d, "model.savedmodel"))
            with open(os.path.join(stage, "predict", "config.pbtxt"), "w") as fh:
                fh.write(f'name: "predict"\nplatform: "tensorflow_savedmodel"\n'
                         f"max_batch_size: {mb}\n" + _io("input", proc_tensors())
                         + _io("output", pred_out)
                         + f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n"
                         + f"instance_group [ {{ count: {instances['predict']} "
                           f"kind: KIND_CPU }} ]\n")
        # calibrate
        d = version_dir("calibrate", {"fields": fields})
        if calibrator:
            shutil.copytree(calibrator, os.path.join(d, "calibrator"))
        cal_in = [_tensor("pctr", "float32", [1]), _tensor("pcvr", "float32", [1])] + \
            [_tensor(f, "int64", [1]) for f in fields]
        cal_out = [_tensor(o, "float32", [1]) for o in OUTPUTS]
        with open(os.path.join(stage, "calibrate", "config.pbtxt"), "w") as fh:
            fh.write(_python_config("calibrate", mb, cal_in, cal_out, instances["calibrate"],
                                    delay_us))
        # ensemble
        os.makedirs(os.path.join(stage, ENSEMBLE, "1"))
        raw_names = [t.split('"')[1] for t in raw_tensors()]
        steps = [
            ("preprocess", {n: n for n in raw_names}, {c: f"proc_{c}" for c in processed}),
            ("predict", {c: f"proc_{c}" for c in processed},
             {"pctr": "raw_pctr", "pcvr": "raw_pcvr"}),
            ("calibrate", {"pctr": "raw_pctr", "pcvr": "raw_pcvr",
                           **{f: f"proc_{f}" for f in fields}}, {o: o for o in OUTPUTS}),
        ]
        text = (f'name: "{ENSEMBLE}"\nplatform: "ensemble"\nmax_batch_size: {mb}\n'
                + _io("input", raw_tensors()) + _io("output", cal_out)
                + "ensemble_scheduling {\n  step [\n")
        text += ",\n".join(
            f'    {{\n      model_name: "{name}"\n      model_version: -1\n'
            + _map(inp, "input_map") + _map(outp, "output_map") + "    }"
            for name, inp, outp in steps)
        text += "\n  ]\n}\n"
        with open(os.path.join(stage, ENSEMBLE, "config.pbtxt"), "w") as fh:
            fh.write(text)
        with open(os.path.join(stage, "export.json"), "w") as fh:
            json.dump({"run": os.path.abspath(run_dir), "workflow": os.path.abspath(workflow_dir),
                       "calibrator": os.path.abspath(calibrator) if calibrator else None,
                       "target": target, "max_batch_size": mb, "instances": instances,
                       "max_queue_delay_us": delay_us, "nullable": list(nullable),
                       "max_list": max_list, "executor": executor, "fields": fields,
                       "runtime": runtime if target == "cpu" else "tensorflow_savedmodel",
                       "onnx_max_abs_diff": onnx_max_diff,
                       "inputs": {n: ("int64" if n.endswith("__lengths") else raw_types[n])
                                  for n in raw_names},
                       "multihot": multihot}, fh, indent=2)
    return json.load(open(os.path.join(out, "export.json")))


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
    parser.add_argument("--out", required=True)
    parser.add_argument("--target", default="cpu", choices=("cpu", "ngc"))
    parser.add_argument("--max-batch-size", type=int, default=1024)
    parser.add_argument("--instances", default="", help="e.g. preprocess=2,predict=1")
    parser.add_argument("--queue-delay-us", type=int, default=100)
    parser.add_argument("--nullable", default="auto")
    parser.add_argument("--max-list", type=int, default=None)
    parser.add_argument("--executor", default="lean", choices=("lean", "merlin"))
    parser.add_argument("--tf-threads", type=int, default=1,
                        help="intra/inter-op threads per predict instance (0 = the runtime's)")
    parser.add_argument("--runtime", default="onnx", choices=RUNTIMES,
                        help="what runs the model in the CPU target's predict step")
    args = parser.parse_args(argv)
    try:
        info = export(args.run, args.workflow, args.out, args.calibrator, args.target,
                      args.max_batch_size, parse_instances(args.instances), args.queue_delay_us,
                      args.nullable, args.max_list, args.executor, tf_threads=args.tf_threads,
                      runtime=args.runtime)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table("serving.export", [
        ("repository", os.path.abspath(args.out)), ("target", info["target"]),
        ("ensemble", f"{ENSEMBLE}: preprocess -> predict -> calibrate"),
        ("calibrator", info["calibrator"] or "identity"),
        ("predict runtime", info["runtime"] + (
            f" (max |ONNX - TF| {info['onnx_max_abs_diff']:.2g} on test rows)"
            if info.get("onnx_max_abs_diff") is not None else "")),
        ("max_batch_size", info["max_batch_size"]), ("instances", info["instances"]),
        ("nullable", ", ".join(info["nullable"]) or "-"), ("max_list", info["max_list"]),
        ("inputs", len(info["inputs"]))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
