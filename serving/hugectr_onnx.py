"""Plug the ``hugectr2onnx`` model into the ensemble's ONNX Runtime predict step.

Usage::

    python -m serving.hugectr_onnx --dir DIR [--rows 2048] [--tolerance 1e-4]
        [--install REPO] [--allow-calibrator]

The names differ, so the exported model cannot go into the predict step as it is:

=====================  ==========================================  =============================
                       ``hugectr2onnx`` output (``DIR/esmm_          predict step
                       hugectr.onnx``)                              (``serving/steps.py``)
=====================  ==========================================  =============================
categorical inputs     ``data1`` ``[B, slots, 1]`` int64, keys     one ``[B]`` int64 input per
                       WITH the per-slot offsets added             column, Categorify codes
continuous inputs      ``dense`` ``[B, dense_dim]`` float32        one ``[B]`` float32 per column
multi-hot inputs       none (left out of the HugeCTR model)        ``name__values`` /
                                                                   ``name__offsets`` ``[N]``,
                                                                   ``[B + 1]`` int64
outputs                ``click``, ``ctcvr`` ``[B, 1]`` (sigmoids   ``pctr``, ``pcvr`` (and
                       of the two loss logits, named after the     ``pctcvr``) ``[B]`` float32
                       labels)
=====================  ==========================================  =============================

:func:`adapt` wraps the converted graph in ONNX nodes (opset of the converter, 10) that take the
predict step's inputs: they stack the codes in slot order, fold each into its slot
(``Mod slot_size``: a no-op for the workflow's own codes, which are always below the size) and
add the slot offsets (``models.hugectr.data.HugeCTRData.slot_offsets``), stack the continuous
columns into ``dense``, and rename the outputs: ``pctr = click``, ``pctcvr = ctcvr``,
``pcvr = min(ctcvr / max(click, 1e-30), 1)`` (``models/hugectr/graph.py``: pCVR is the ratio by
construction). The multi-hot inputs are declared and unused. The result takes exactly the feed
of ``serving.steps.PredictStep`` (``serving.preprocess.signature_inputs``), so it replaces
``predict/1/model.onnx`` of an ONNX-runtime CPU export of ``serving.export`` (:func:`install`);
the preprocess and calibrate steps stay as they are.

``--dir`` also checks, on the first test rows of the Parquet copy: the converted model against
HugeCTR's own predictions (``hugectr_test_predictions.npy``, written in the container by
``export_onnx.py``), and the adapted model run through ``PredictStep`` against the converted
model. The container half is verified only in the NGC merlin-hugectr:23.08 container; not run
here (README).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from models.hugectr.data import load_export, read_export_rows
from models.hugectr.scripts import ONNX_FILE, PREDICTIONS_FILE

ADAPTED_FILE = "model.onnx"
OUTPUTS = ("pctr", "pcvr", "pctcvr")
RAW_OUTPUTS = ("click", "ctcvr")
PREFIX = "extcvr_adapter/"
#: ``serving.export``'s repository marker (``export.json`` ``format``).
REPOSITORY_FORMAT = "extcvr.triton_repository"


def _onnx_type(dtype: str):
    from onnx import TensorProto
    return {"int64": TensorProto.INT64, "float32": TensorProto.FLOAT}[dtype]


def raw_io(model) -> Dict[str, str]:
    """The converted model's dense input, sparse input and label outputs by role.

    Raises:
        ValueError: it lacks a float dense input, an int64 ``[B, slots, nnz]`` sparse input or
            the ``click`` / ``ctcvr`` outputs.
    """
    from onnx import TensorProto
    dense = sparse = None
    for inp in model.graph.input:
        t = inp.type.tensor_type
        rank = len(t.shape.dim)
        if t.elem_type == TensorProto.FLOAT and rank == 2:
            dense = inp.name
        elif t.elem_type == TensorProto.INT64 and rank == 3:
            sparse = inp.name
    outputs = [o.name for o in model.graph.output]
    if dense is None or sparse is None or any(o not in outputs for o in RAW_OUTPUTS):
        raise ValueError(f"not a hugectr2onnx ESMM model: inputs "
                         f"{[i.name for i in model.graph.input]}, outputs {outputs}; expected a "
                         f"float [B, dense] input, an int64 [B, slots, 1] input and outputs "
                         f"{list(RAW_OUTPUTS)}")
    return {"dense": dense, "sparse": sparse}


def _static_dims(model, name: str) -> List[Optional[int]]:
    for inp in model.graph.input:
        if inp.name == name:
            return [d.dim_value if d.HasField("dim_value") else None
                    for d in inp.type.tensor_type.shape.dim]
    return []


def adapt(model, desc: Mapping):
    """The converted model wrapped to take and give the predict step's tensors (module
    docstring); ``model`` is an ``onnx.ModelProto``, ``desc`` the ``hugectr_data.json``.

    Raises:
        ValueError: the model does not match the description (slot count, dense width), or a
            signature input name collides with a tensor of the converted graph.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    io = raw_io(model)
    slots = [s["name"] for s in desc["slots"]]
    sizes = np.array([[s["size"] for s in desc["slots"]]], dtype=np.int64)
    offsets = np.array([[s["offset"] for s in desc["slots"]]], dtype=np.int64)
    dense_cols = list(desc["dense"])
    sparse_dims = _static_dims(model, io["sparse"])
    if sparse_dims[1] not in (None, len(slots)) or sparse_dims[2] not in (None, 1):
        raise ValueError(f"the model's '{io['sparse']}' input is {sparse_dims}; the description "
                         f"has {len(slots)} one-hot slots")
    dense_dims = _static_dims(model, io["dense"])
    if dense_dims[1] not in (None, len(dense_cols)):
        raise ValueError(f"the model's '{io['dense']}' input has width {dense_dims[1]}; the "
                         f"description has {len(dense_cols)} dense columns {dense_cols}")
    signature = desc["signature"]["inputs"]
    missing = [c for c in slots + dense_cols if c not in signature]
    if missing:
        raise ValueError(f"signature lacks the model columns {missing}")
    graph = model.graph
    taken = {t for n in graph.node for t in (*n.input, *n.output)} | \
        {i.name for i in graph.initializer}
    clash = sorted(set(signature) & (taken - {io["dense"], io["sparse"]}))
    if clash:
        raise ValueError(f"signature inputs {clash} collide with tensors of the converted graph")
    consumed = {t for n in graph.node for t in n.input}
    inits = [numpy_helper.from_array(np.array([-1, 1], np.int64), PREFIX + "col_shape"),
             numpy_helper.from_array(np.array([-1, len(slots), 1], np.int64),
                                     PREFIX + "keys_shape"),
             numpy_helper.from_array(np.array([-1], np.int64), PREFIX + "flat_shape"),
             numpy_helper.from_array(sizes, PREFIX + "slot_sizes"),
             numpy_helper.from_array(offsets, PREFIX + "slot_offsets"),
             numpy_helper.from_array(np.array(1e-30, np.float32), PREFIX + "eps"),
             numpy_helper.from_array(np.array(1.0, np.float32), PREFIX + "one")]
    pre: List = []
    cols = []
    for c in slots:
        pre.append(helper.make_node("Reshape", [c, PREFIX + "col_shape"], [PREFIX + c]))
        cols.append(PREFIX + c)
    pre += [helper.make_node("Concat", cols, [PREFIX + "codes"], axis=1),
            helper.make_node("Mod", [PREFIX + "codes", PREFIX + "slot_sizes"],
                             [PREFIX + "folded"], fmod=0),
            helper.make_node("Add", [PREFIX + "folded", PREFIX + "slot_offsets"],
                             [PREFIX + "keys"]),
            helper.make_node("Reshape", [PREFIX + "keys", PREFIX + "keys_shape"],
                             [io["sparse"]])]
    if dense_cols:
        dcols = []
        for c in dense_cols:
            pre.append(helper.make_node("Reshape", [c, PREFIX + "col_shape"], [PREFIX + c]))
            dcols.append(PREFIX + c)
        pre.append(helper.make_node("Concat", dcols, [io["dense"]], axis=1))
    elif io["dense"] in consumed:
        raise ValueError(f"the model reads '{io['dense']}' but the description has no dense "
                         "columns")
    post = [helper.make_node("Reshape", ["click", PREFIX + "flat_shape"], ["pctr"]),
            helper.make_node("Reshape", ["ctcvr", PREFIX + "flat_shape"], ["pctcvr"]),
            helper.make_node("Max", ["pctr", PREFIX + "eps"], [PREFIX + "pctr_safe"]),
            helper.make_node("Div", ["pctcvr", PREFIX + "pctr_safe"], [PREFIX + "ratio"]),
            helper.make_node("Min", [PREFIX + "ratio", PREFIX + "one"], ["pcvr"])]
    inputs = [helper.make_tensor_value_info(name, _onnx_type(spec["dtype"]), ["batch"])
              for name, spec in signature.items()]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch"])
               for name in OUTPUTS]
    new_graph = helper.make_graph(
        pre + list(graph.node) + post, "extcvr_hugectr_esmm", inputs, outputs,
        list(graph.initializer) + inits,
        doc_string="hugectr2onnx ESMM model wrapped for the extcvr predict step "
                   "(serving/hugectr_onnx.py)")
    out = helper.make_model(new_graph, opset_imports=list(model.opset_import),
                            producer_name="extcvr.models.hugectr")
    out.ir_version = model.ir_version
    onnx.checker.check_model(out)
    return out


def raw_feed(rows: Mapping[str, np.ndarray], desc: Mapping, io: Mapping[str, str]
             ) -> Dict[str, np.ndarray]:
    """The converted model's inputs for rows of the Parquet copy: the dense matrix and the
    ``[B, slots, 1]`` keys with the slot offsets added (what HugeCTR's reader feeds)."""
    codes = np.stack([rows[s["name"]].astype(np.int64) + s["offset"] for s in desc["slots"]],
                     axis=1)
    n = len(codes)
    dense = (np.stack([rows[c].astype(np.float32) for c in desc["dense"]], axis=1)
             if desc["dense"] else np.zeros((n, 0), np.float32))
    return {io["dense"]: dense, io["sparse"]: codes[:, :, None]}


def ensemble_tensors(rows: Mapping[str, np.ndarray], desc: Mapping) -> Dict[str, np.ndarray]:
    """The predict step's ensemble tensors for rows of the Parquet copy: ids ``[B, 1]`` int64,
    continuous ``[B, 1]`` float32, each multi-hot column as ``[B, 1]`` zeros (empty lists:
    the copy holds none, and the adapted model ignores them)."""
    n = len(next(iter(rows.values())))
    out = {}
    for name, spec in desc["signature"]["inputs"].items():
        if name.endswith("__values") or name.endswith("__offsets"):
            out[name.rsplit("__", 1)[0]] = np.zeros((n, 1), np.int64)
        else:
            out[name] = rows[name].astype(spec["dtype"]).reshape(-1, 1)
    return out


def predict_step(version_dir: str, adapted_path: str, desc: Mapping):
    """A ``serving.steps.PredictStep`` on the adapted model, in ``version_dir`` (written here:
    ``serving.json`` with the signature, the multi-hot columns and ``runtime: onnx``)."""
    from serving.steps import PredictStep
    os.makedirs(version_dir, exist_ok=True)
    multihot = sorted({n.rsplit("__", 1)[0] for n in desc["signature"]["inputs"]
                       if n.endswith("__values")})
    with open(os.path.join(version_dir, "serving.json"), "w") as fh:
        json.dump({"step": "predict", "signature": desc["signature"], "multihot": multihot,
                   "max_list": 1, "tf_threads": 1, "runtime": "onnx"}, fh, indent=2)
    shutil.copy2(adapted_path, os.path.join(version_dir, "model.onnx"))
    return PredictStep(version_dir)


def check(out_dir: str, rows: int = 2048, desc: Optional[Mapping] = None) -> Dict[str, object]:
    """Score the first test rows of the copy with the converted and the adapted model; returns
    the max abs differences: ``hugectr_vs_onnx`` (None without ``hugectr_test_predictions.npy``)
    and ``adapter_vs_onnx``."""
    import onnxruntime as ort
    desc = desc or load_export(out_dir)
    raw_path, adapted_path = (os.path.join(out_dir, ONNX_FILE),
                              os.path.join(out_dir, ADAPTED_FILE))
    pred_path = os.path.join(out_dir, PREDICTIONS_FILE)
    reference = np.load(pred_path) if os.path.isfile(pred_path) else None
    if reference is not None:
        rows = min(rows, len(reference))
    data = read_export_rows(out_dir, "test", rows, desc)
    rows = len(data["click"])
    import onnx
    io = raw_io(onnx.load(raw_path))
    session = ort.InferenceSession(raw_path, providers=["CPUExecutionProvider"])
    click, ctcvr = [np.asarray(v, np.float32).reshape(-1) for v in
                    session.run(list(RAW_OUTPUTS), raw_feed(data, desc, io))]
    out: Dict[str, object] = {"rows": rows, "hugectr_vs_onnx": None}
    if reference is not None:
        ref = reference[:rows].reshape(rows, -1)
        out["hugectr_vs_onnx"] = float(max(np.max(np.abs(ref[:, 0] - click)),
                                           np.max(np.abs(ref[:, 1] - ctcvr))))
    with tempfile.TemporaryDirectory() as tmp:
        step = predict_step(os.path.join(tmp, "1"), adapted_path, desc)
        got = step.predict(ensemble_tensors(data, desc))
    pcvr = np.minimum(ctcvr / np.maximum(click, 1e-30), 1.0)
    out["adapter_vs_onnx"] = float(max(np.max(np.abs(got["pctr"].reshape(-1) - click)),
                                       np.max(np.abs(got["pcvr"].reshape(-1) - pcvr))))
    out["pcvr_mean"] = float(np.mean(got["pcvr"]))
    out["pctr_mean"] = float(np.mean(got["pctr"]))
    return out


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def install(repo: str, adapted_path: str, desc: Mapping, allow_calibrator: bool = False,
            check_result: Optional[Mapping] = None) -> Dict:
    """Put the adapted model into ``repo``'s predict step: ``predict/1/model.onnx``.

    ``repo`` is a ``serving.export --target cpu --runtime onnx`` repository of a run on the same
    processed data. Its SavedModel copy is removed from ``predict/1`` (the step would otherwise
    hold two different models), ``predict/1/hugectr.json`` records the source and
    ``export.json`` gains ``predict_model``. Returns the new ``export.json``.

    Raises:
        FileNotFoundError / ValueError: not such a repository, another runtime or target, a
            calibrator fitted on another model (unless ``allow_calibrator``), or a predict
            signature that differs from the description's (names and dtypes are listed).
    """
    marker = os.path.join(repo, "export.json")
    if not os.path.isfile(marker):
        raise FileNotFoundError(f"{marker}: not found; export a repository first with "
                                "`python -m serving.export --target cpu --runtime onnx`")
    with open(marker) as fh:
        info = json.load(fh)
    if info.get("format") != REPOSITORY_FORMAT:
        raise ValueError(f"{marker}: not written by serving.export")
    if info.get("target") != "cpu" or info.get("runtime") != "onnx":
        raise ValueError(f"{repo}: target {info.get('target')!r}, runtime "
                         f"{info.get('runtime')!r}; the HugeCTR model needs the ONNX Runtime "
                         "predict step of `serving.export --target cpu --runtime onnx`")
    if info.get("calibrator") and not allow_calibrator:
        raise ValueError(f"{repo}: its calibrate step holds the {info['calibrator']!r} "
                         "calibrator, fitted on another model's pCVR; export without "
                         "--calibrator, or pass --allow-calibrator after fitting one on the "
                         "HugeCTR model")
    version = os.path.join(repo, "predict", "1")
    with open(os.path.join(version, "serving.json")) as fh:
        settings = json.load(fh)
    have = {k: v["dtype"] for k, v in settings["signature"]["inputs"].items()}
    want = {k: v["dtype"] for k, v in desc["signature"]["inputs"].items()}
    if have != want:
        diff = sorted(set(have.items()) ^ set(want.items()))
        raise ValueError(f"{version}/serving.json: the predict signature differs from the "
                         f"HugeCTR model's (name, dtype) {diff}; export a run on the same "
                         "processed data")
    fd, tmp = tempfile.mkstemp(prefix=".model.onnx.", dir=version)
    os.close(fd)
    shutil.copy2(adapted_path, tmp)
    os.replace(tmp, os.path.join(version, "model.onnx"))
    shutil.rmtree(os.path.join(version, "saved_model"), ignore_errors=True)
    record = {"framework": "hugectr", "source": desc.get("source"),
              "onnx_sha256": _sha256(adapted_path), "check": dict(check_result or {})}
    with open(os.path.join(version, "hugectr.json"), "w") as fh:
        json.dump(record, fh, indent=2)
    info["predict_model"] = record
    info["onnx_max_abs_diff"] = (check_result or {}).get("adapter_vs_onnx")
    with open(marker, "w") as fh:
        json.dump(info, fh, indent=2)
    return info


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: ``python -m serving.hugectr_onnx``."""
    from common.tables import print_table
    parser = argparse.ArgumentParser(prog="python -m serving.hugectr_onnx",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True,
                        help="the directory of `python -m models.hugectr`, after the container "
                             f"run ({ONNX_FILE} present)")
    parser.add_argument("--rows", type=int, default=2048, help="test rows to check")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max abs difference allowed in each check")
    parser.add_argument("--install", default=None, metavar="REPO",
                        help="a `serving.export --target cpu --runtime onnx` repository whose "
                             "predict step gets the model")
    parser.add_argument("--allow-calibrator", action="store_true")
    args = parser.parse_args(argv)
    try:
        import onnx
        desc = load_export(args.dir)
        raw_path = os.path.join(args.dir, ONNX_FILE)
        if not os.path.isfile(raw_path):
            raise FileNotFoundError(f"{raw_path}: not found; run train_hugectr.py and "
                                    "export_onnx.py in the container first (README)")
        adapted_path = os.path.join(args.dir, ADAPTED_FILE)
        onnx.save(adapt(onnx.load(raw_path), desc), adapted_path)
        result = check(args.dir, args.rows, desc)
        bad = {k: v for k, v in result.items()
               if k in ("hugectr_vs_onnx", "adapter_vs_onnx") and v is not None
               and not v <= args.tolerance}
        if bad:
            raise ValueError(f"checks over tolerance {args.tolerance}: {bad}")
        info = (install(args.install, adapted_path, desc, args.allow_calibrator, result)
                if args.install else None)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [("adapted model", adapted_path), ("test rows checked", result["rows"]),
            ("max |HugeCTR - ONNX|", "no hugectr_test_predictions.npy"
             if result["hugectr_vs_onnx"] is None else f"{result['hugectr_vs_onnx']:.3g}"),
            ("max |adapted - ONNX|", f"{result['adapter_vs_onnx']:.3g}"),
            ("mean pctr / pcvr", f"{result['pctr_mean']:.4f} / {result['pcvr_mean']:.4f}"),
            ("installed into", os.path.abspath(args.install) if info else "-")]
    print_table("serving.hugectr_onnx", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
