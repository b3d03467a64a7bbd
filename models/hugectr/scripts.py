"""The two scripts that run in the NGC ``merlin-hugectr:23.08`` container, generated as text.

- ``train_hugectr.py``: the ESMM model of ``models/hugectr/graph.py`` on HugeCTR's Python API
  (``CreateSolver``, ``DataReaderParams`` on the Parquet copy, ``CreateOptimizer``, ``Model``,
  ``Input``, ``SparseEmbedding``, ``DenseLayer``, ``compile`` / ``fit``), then
  ``graph_to_json`` and ``save_params_to_files``.
- ``export_onnx.py``: ``hugectr2onnx.converter.convert`` of the trained model, a check of the
  dumped graph against the generated ``esmm_config.json``, and HugeCTR's own predictions on the
  first test rows (``hugectr.inference.InferenceModel.predict``) for the host-side check of the
  ONNX model (``python -m serving.hugectr_onnx``).

Both are self-contained (no import of this repository) and use only the names in
:data:`DOCUMENTED_API`: HugeCTR 23.08's documented Python interface
(``docs/source/api/python_interface.md``, ``hugectr_layer_book.md``) with the keyword names of
its pybind11 bindings (``include/pybind/*_wrapper.hpp``). VERIFIED ONLY IN THE NGC
merlin-hugectr:23.08 CONTAINER; NOT RUN HERE (HugeCTR is not installed on this machine): the
command is :func:`container_command`.
"""

from __future__ import annotations

import json
import shlex
from typing import Dict, List, Mapping, Sequence

from models.hugectr.config import HugeCTRESMMConfig
from models.hugectr.data import LABELS
from models.hugectr.graph import (DENSE, EMBEDDING, SPARSE, Layer, ModelInputs, esmm_layers,
                                  workspace_size_mb)

IMAGE = "nvcr.io/nvidia/merlin/merlin-hugectr:23.08"
TRAIN_SCRIPT = "train_hugectr.py"
EXPORT_SCRIPT = "export_onnx.py"
CONFIG_FILE = "esmm_config.json"
GRAPH_FILE = "esmm_hugectr_graph.json"
ONNX_FILE = "esmm_hugectr.onnx"
PREDICTIONS_FILE = "hugectr_test_predictions.npy"
TRAINED_FILE = "hugectr_trained.json"
#: Rows of the test split scored by HugeCTR's inference for the ONNX check (at most).
CHECK_ROWS = 4096
VERIFIED_NOTE = ("verified only in the NGC merlin-hugectr:23.08 container; not run here "
                 "(HugeCTR is not installed where this was generated)")

#: Callable -> keyword arguments, and enum -> members, of HugeCTR 23.08's documented Python API
#: (pybind11 argument names); a test checks the generated scripts against it.
DOCUMENTED_API: Dict[str, Sequence[str]] = {
    "hugectr.CreateSolver": (
        "model_name", "seed", "lr_policy", "lr", "warmup_steps", "decay_start", "decay_steps",
        "decay_power", "end_lr", "max_eval_batches", "batchsize_eval", "batchsize", "vvgpu",
        "repeat_dataset", "use_mixed_precision", "enable_tf32_compute", "scaler",
        "metrics_spec", "i64_input_key", "use_algorithm_search", "use_cuda_graph",
        "gen_loss_summary", "train_intra_iteration_overlap", "train_inter_iteration_overlap",
        "eval_intra_iteration_overlap", "eval_inter_iteration_overlap", "device_layout",
        "use_embedding_collection", "all_reduce_algo", "grouped_all_reduce",
        "num_iterations_statistics", "perf_logging", "drop_incomplete_batch"),
    "hugectr.DataReaderParams": (
        "data_reader_type", "source", "keyset", "eval_source", "check_type", "cache_eval_data",
        "num_samples", "eval_num_samples", "float_label_dense", "read_file_sequentially",
        "num_workers", "slot_size_array", "data_source_params", "async_param"),
    "hugectr.CreateOptimizer": (
        "optimizer_type", "update_type", "beta", "lambda1", "lambda2", "beta1", "beta2",
        "epsilon", "initial_accu_value", "momentum_factor", "atomic_update"),
    "hugectr.Model": ("solver", "reader_params", "opt_params", "etc_params"),
    "hugectr.Input": ("label_dim", "label_name", "label_dims", "label_names", "label_weights",
                      "dense_dim", "dense_name", "data_reader_sparse_param_array"),
    "hugectr.DataReaderSparseParam": ("top_name", "nnz_per_slot", "is_fixed_length",
                                      "slot_num"),
    "hugectr.SparseEmbedding": (
        "embedding_type", "workspace_size_per_gpu_in_mb", "embedding_vec_size", "combiner",
        "sparse_embedding_name", "bottom_name", "slot_size_array", "optimizer",
        "hybrid_embedding_param"),
    "hugectr.DenseLayer": (
        "layer_type", "bottom_names", "top_names", "factor", "eps", "gamma_init_type",
        "beta_init_type", "dropout_rate", "elu_alpha", "num_output", "weight_init_type",
        "bias_init_type", "num_layers", "leading_dim", "time_step", "batchsize", "SeqLength",
        "vector_size", "selected", "selected_slots", "ranges", "indices", "weight_dims",
        "projection_dim", "out_dim", "axis", "max_sequence_len_from", "max_sequence_len_to",
        "num_attention_heads", "transpose_b", "target_weight_vec", "use_regularizer",
        "regularizer_type", "lambda", "pos_type", "act_type", "num_outputs", "use_bias",
        "activations", "biases", "compute_config", "shape", "dim", "index"),
    "model.add": (),
    "model.compile": ("loss_names", "loss_weights"),
    "model.summary": (),
    "model.fit": ("num_epochs", "max_iter", "display", "eval_interval", "snapshot",
                  "snapshot_prefix"),
    "model.graph_to_json": ("graph_config_file",),
    "model.save_params_to_files": ("prefix", "iter"),
    "hugectr.inference.InferenceParams": (
        "model_name", "max_batchsize", "hit_rate_threshold", "dense_model_file",
        "sparse_model_files", "device_id", "use_gpu_embedding_cache", "cache_size_percentage",
        "i64_input_key", "use_mixed_precision", "scaler", "use_algorithm_search",
        "use_cuda_graph"),
    "hugectr.inference.InferenceModel": ("model_config_path", "inference_params"),
    "inference_model.predict": ("num_batches", "source", "data_reader_type", "check_type",
                                "slot_size_array"),
    "hugectr2onnx.converter.convert": ("onnx_model_path", "graph_config", "dense_model",
                                       "convert_embedding", "sparse_models", "ntp_file",
                                       "graph_name"),
}
DOCUMENTED_ENUMS: Dict[str, Sequence[str]] = {
    "hugectr.DataReaderType_t": ("Norm", "Raw", "Parquet", "RawAsync"),
    "hugectr.Check_t": ("Sum", "Non"),
    "hugectr.Embedding_t": ("DistributedSlotSparseEmbeddingHash",
                            "LocalizedSlotSparseEmbeddingHash",
                            "LocalizedSlotSparseEmbeddingOneHot", "HybridSparseEmbedding"),
    "hugectr.Optimizer_t": ("Ftrl", "Adam", "RMSProp", "AdaGrad", "MomentumSGD", "Nesterov",
                            "SGD"),
    "hugectr.Update_t": ("Local", "Global", "LazyGlobal"),
    "hugectr.MetricsType": ("AUC", "AverageLoss", "HitRate", "NDCG", "SMAPE"),
    "hugectr.LrPolicy_t": ("fixed",),
    "hugectr.Layer_t": (
        "BatchNorm", "LayerNorm", "BinaryCrossEntropyLoss", "Reshape", "Select", "Concat",
        "CrossEntropyLoss", "Dropout", "ElementwiseMultiply", "ELU", "InnerProduct",
        "FusedInnerProduct", "MLP", "Interaction", "MultiCrossEntropyLoss", "ReLU", "ReLUHalf",
        "Sigmoid", "Slice", "WeightMultiply", "FmOrder2", "Add", "ReduceSum", "Softmax",
        "Gather", "PReLU_Dice", "GRU", "MatrixMultiply", "MultiHeadAttention", "Scale",
        "FusedReshapeConcat", "FusedReshapeConcatGeneral", "Sub", "ReduceMean", "MultiCross",
        "Cast", "SequenceMask"),
}


def container_command(out_dir: str) -> str:
    """The command that trains and exports in the NGC container (``out_dir`` mounted)."""
    return (f"docker run --gpus all --rm --ipc=host -v {shlex.quote(out_dir)}:/workspace/esmm "
            f"-w /workspace/esmm {IMAGE} "
            f"bash -c 'python {TRAIN_SCRIPT} && python {EXPORT_SCRIPT}'")


def host_commands(out_dir: str) -> List[str]:
    """The commands that follow on the host: adapt and check the ONNX model, install it into an
    ONNX-runtime CPU export of ``serving.export`` and serve it."""
    d = shlex.quote(out_dir)
    return [f".venv/bin/python -m serving.hugectr_onnx --dir {d} "
            "--install triton_repo/cpu",
            ".venv/bin/python -m serving.serve --repo triton_repo/cpu"]


def _py(value) -> str:
    return repr(value)


def dense_layer_call(layer: Layer) -> str:
    """``model.add(hugectr.DenseLayer(...))`` for one layer of the graph."""
    args = [f"layer_type=hugectr.Layer_t.{layer.type}",
            f"bottom_names={list(layer.bottom)!r}", f"top_names={list(layer.top)!r}"]
    for key, value in layer.params.items():
        args.append(f"{key}={_py(value)}")
    return "model.add(hugectr.DenseLayer(" + ", ".join(args) + "))"


def train_script(inputs: ModelInputs, config: HugeCTRESMMConfig, sources: Mapping[str, str],
                 max_eval_batches: int, out_dir: str, origin: str, train_rows: int = 0) -> str:
    """The text of ``train_hugectr.py`` (module docstring)."""
    c = config
    ws = workspace_size_mb(inputs.slot_size_array, c)
    display, eval_interval = c.intervals(train_rows)
    length = f"num_epochs={c.epochs}" if c.epoch_mode else f"max_iter={c.max_iter}"
    mode = (f"model.fit({length}, display={display}, eval_interval={eval_interval}, "
            f"snapshot=2000000000, snapshot_prefix={c.model_name!r})")
    dense_layers = "\n".join(dense_layer_call(layer) for layer in esmm_layers(inputs, c))
    trained = {"graph": GRAPH_FILE, "dense_model": f"{c.model_name}_dense_0.model",
               "sparse_models": [f"{c.model_name}0_sparse_0.model"]}
    return f'''#!/usr/bin/env python
"""ESMM on HugeCTR 23.08, generated by `python -m models.hugectr` from {origin}.

{VERIFIED_NOTE.upper()}.
Verify with (the directory mounted as /workspace/esmm):

    {container_command(out_dir)}

Reads the Parquet copy in data/ (file lists relative to this directory). Writes beside this file:
{GRAPH_FILE} (Model.graph_to_json), {trained["dense_model"]} and
{trained["sparse_models"][0]}/ (Model.save_params_to_files), {TRAINED_FILE}.
The graph and why pCTCVR is sigmoid(ctr_logit - gap): models/hugectr/graph.py.
"""

import json
import os

import hugectr
from mpi4py import MPI  # noqa: F401  (HugeCTR's samples initialise MPI this way)

os.chdir(os.path.dirname(os.path.abspath(__file__)))

SLOT_SIZE_ARRAY = {list(inputs.slot_size_array)!r}
EMBEDDING_TYPE = hugectr.Embedding_t.LocalizedSlotSparseEmbeddingHash

solver = hugectr.CreateSolver(model_name={c.model_name!r}, seed={c.seed}, lr={c.learning_rate!r},
                              batchsize={c.batch_size}, batchsize_eval={c.batch_size_eval},
                              max_eval_batches={max_eval_batches}, vvgpu=[{list(c.gpus)!r}],
                              repeat_dataset={not c.epoch_mode}, i64_input_key=True,
                              metrics_spec={{hugectr.MetricsType.AUC: 1.0}})
reader = hugectr.DataReaderParams(data_reader_type=hugectr.DataReaderType_t.Parquet,
                                  source=[{sources["train"]!r}],
                                  eval_source={sources["valid"]!r},
                                  check_type=hugectr.Check_t.Non,
                                  slot_size_array=SLOT_SIZE_ARRAY)
optimizer = hugectr.CreateOptimizer(optimizer_type=hugectr.Optimizer_t.Adam,
                                    update_type=hugectr.Update_t.{c.update_type},
                                    beta1=0.9, beta2=0.999, epsilon={c.adam_epsilon!r})
model = hugectr.Model(solver, reader, optimizer)
model.add(hugectr.Input(label_dims={[1] * len(LABELS)!r}, label_names={list(LABELS)!r},
                        dense_dim={inputs.dense_dim}, dense_name={DENSE!r},
                        data_reader_sparse_param_array=[
                            hugectr.DataReaderSparseParam({SPARSE!r}, 1, True, {inputs.slot_num})]))
model.add(hugectr.SparseEmbedding(embedding_type=EMBEDDING_TYPE,
                                  workspace_size_per_gpu_in_mb={ws},
                                  embedding_vec_size={c.embedding_vec_size}, combiner="sum",
                                  sparse_embedding_name={EMBEDDING!r}, bottom_name={SPARSE!r},
                                  slot_size_array=SLOT_SIZE_ARRAY, optimizer=optimizer))
{dense_layers}
model.compile(loss_names={list(LABELS)!r}, loss_weights=[1.0, {float(c.ctcvr_weight)!r}])
model.summary()
model.graph_to_json(graph_config_file={GRAPH_FILE!r})
{mode}
model.save_params_to_files({c.model_name!r})
with open({TRAINED_FILE!r}, "w") as fh:
    json.dump({json.dumps(trained)}, fh, indent=2)
print("trained: " + json.dumps({json.dumps(trained)}))
'''


def export_script(inputs: ModelInputs, config: HugeCTRESMMConfig, test_source: str,
                  check_rows: int, out_dir: str) -> str:
    """The text of ``export_onnx.py`` (module docstring)."""
    c = config
    dense_model = f"{c.model_name}_dense_0.model"
    sparse_models = [f"{c.model_name}0_sparse_0.model"]
    return f'''#!/usr/bin/env python
"""Convert the trained HugeCTR ESMM model to ONNX (hugectr2onnx) and score the first test rows
with HugeCTR's own inference, for the host-side check of the ONNX model.

{VERIFIED_NOTE.upper()}.
Run after train_hugectr.py, in the same container:

    {container_command(out_dir)}

Writes {ONNX_FILE} (inputs "{DENSE}" [B, {inputs.dense_dim}] float32 and "{SPARSE}"
[B, {inputs.slot_num}, 1] int64 keys with the slot offsets added; outputs "click" and "ctcvr"
[B, 1], the sigmoids of the two loss logits) and {PREDICTIONS_FILE} ([{check_rows}, 2]: HugeCTR's
click and ctcvr predictions of the first test rows). Then, on the host:
    .venv/bin/python -m serving.hugectr_onnx --dir DIR
"""

import json
import os

import numpy as np

import hugectr
import hugectr2onnx
from hugectr.inference import InferenceModel, InferenceParams

os.chdir(os.path.dirname(os.path.abspath(__file__)))

SLOT_SIZE_ARRAY = {list(inputs.slot_size_array)!r}
DENSE_MODEL = {dense_model!r}
SPARSE_MODELS = {sparse_models!r}


def layer_signature(layers):
    return [(layer["type"], layer.get("top")) for layer in layers]


dumped = json.load(open({GRAPH_FILE!r}))
expected = json.load(open({CONFIG_FILE!r}))
got_data, want_data = dumped["layers"][0], expected["layers"][0]
for key in ("label", "dense"):
    if got_data[key]["top"] != want_data[key]["top"]:
        raise SystemExit(f"{{key}} tops differ: dumped {{got_data[key]['top']}}, "
                         f"generated {{want_data[key]['top']}}")
got_sparse = [(s["top"], s["slot_num"]) for s in got_data["sparse"]]
want_sparse = [(s["top"], s["slot_num"]) for s in want_data["sparse"]]
if got_sparse != want_sparse:
    raise SystemExit(f"sparse inputs differ: dumped {{got_sparse}}, generated {{want_sparse}}")
if layer_signature(dumped["layers"][1:]) != layer_signature(expected["layers"][1:]):
    print("WARNING: the dumped graph's layers differ from {CONFIG_FILE}:")
    print("  dumped:   ", layer_signature(dumped["layers"][1:]))
    print("  generated:", layer_signature(expected["layers"][1:]))

hugectr2onnx.converter.convert(onnx_model_path={ONNX_FILE!r}, graph_config={GRAPH_FILE!r},
                               dense_model=DENSE_MODEL, convert_embedding=True,
                               sparse_models=SPARSE_MODELS)

inference_params = InferenceParams(model_name={c.model_name!r}, max_batchsize={check_rows},
                                   hit_rate_threshold=1.0, dense_model_file=DENSE_MODEL,
                                   sparse_model_files=SPARSE_MODELS, device_id=0,
                                   use_gpu_embedding_cache=False, cache_size_percentage=1.0,
                                   i64_input_key=True, use_mixed_precision=False,
                                   use_cuda_graph=True)
inference_model = InferenceModel({GRAPH_FILE!r}, inference_params)
predictions = inference_model.predict(1, {test_source!r}, hugectr.DataReaderType_t.Parquet,
                                      hugectr.Check_t.Non, SLOT_SIZE_ARRAY)
predictions = np.asarray(predictions, dtype=np.float32).reshape({check_rows}, -1)
np.save({PREDICTIONS_FILE!r}, predictions)
print(f"wrote {ONNX_FILE} and {PREDICTIONS_FILE} {{predictions.shape}}; "
      "now run `python -m serving.hugectr_onnx --dir DIR` on the host")
'''
