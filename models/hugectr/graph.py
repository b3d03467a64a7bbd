"""The ESMM graph for HugeCTR 23.08, described once and rendered twice: as the Python API calls
of the training script (``models/hugectr/scripts.py``) and as the JSON configuration that can be
checked here (:func:`build_config`, :func:`validate_config`).

The graph (names are the HugeCTR tensor names)::

    data1 (slots) -> sparse_embedding1 (LocalizedSlotSparseEmbeddingHash, shared)
      -> Reshape emb_flat -> Concat [emb_flat, dense] features
      -> Slice (two copies) ctr_in, cvr_in
    ctr_in -> InnerProduct/ReLU[/Dropout] ... -> InnerProduct(1) ctr_logit           (a)
    cvr_in -> InnerProduct/ReLU[/Dropout] ... -> InnerProduct(1) cvr_out             (d)
    cvr_gap = ReLU(d) + Sigmoid(d)          > 0
    ctcvr_logit = a - cvr_gap               (Sub)
    BinaryCrossEntropyLoss(ctr_logit, click); BinaryCrossEntropyLoss(ctcvr_logit, ctcvr)

Why not ``pCTCVR = pCTR * pCVR`` through ``ElementwiseMultiply`` as in the TensorFlow ESMM
(``models/baselines.py``): HugeCTR's ``BinaryCrossEntropyLoss`` takes a logit and fuses the
sigmoid into the loss (layer book: "the final sigmoid function is fused with the loss
function"; ``loss.cu``), and 23.08 has no Log layer, so a product of two probabilities cannot
reach a loss. Instead the CTCVR logit is the CTR logit minus a positive gap from the CVR tower:
``pCTCVR = sigmoid(a - g) < sigmoid(a) = pCTR``, so ``pCVR := pCTCVR / pCTR`` lies in (0, 1)
and ``pCTCVR = pCTR * pCVR`` holds exactly. Both losses run over all impressions with one
shared embedding: ESMM's entire-space objective. What differs from the TF model is the
parametrisation of pCVR: ``sigmoid(b)`` there, ``sigmoid(a - g) / sigmoid(a)`` here (about
``exp(-g)`` while pCTR is small). The ONNX adapter computes ``pcvr`` by that division.

Each tensor is consumed by one layer only; copies are explicit ``Slice`` layers with
overlapping ranges, as the layer book shows (the parser's implicit copies would make the dumped
graph differ from this description).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from models.hugectr.config import HugeCTRESMMConfig
from models.hugectr.data import LABELS

DENSE = "dense"
SPARSE = "data1"
EMBEDDING = "sparse_embedding1"
CTR_LOGIT = "ctr_logit"
CTCVR_LOGIT = "ctcvr_logit"
#: Loss layer -> (logit tensor of its loss copy, label).
LOSSES = {"loss_click": ("ctr_logit_loss", "click"), "loss_ctcvr": (CTCVR_LOGIT, "ctcvr")}
#: Adam keeps two states per weight; ``LazyGlobal`` one more (``initialize_max_vocabulary_size_
#: per_gpu`` in HugeCTR 23.08 ``model.cpp``).
ADAM_STATES = {"Local": 2, "Global": 2, "LazyGlobal": 3}
#: Headroom of the embedding workspace over the exact vocabulary.
WORKSPACE_HEADROOM = 1.25

#: Keys that every layer of a given type must carry in the JSON config, beyond type/bottom/top
#: (HugeCTR 23.08 ``save_graph_to_json`` and the ``hugectr2onnx`` loader).
REQUIRED_KEYS = {
    "Data": ("label", "dense", "sparse"),
    "LocalizedSlotSparseEmbeddingHash": ("sparse_embedding_hparam", "optimizer"),
    "InnerProduct": ("fc_param",),
    "Reshape": ("leading_dim",),
    "Concat": ("axis",),
    "Slice": ("ranges",),
    "Dropout": ("rate",),
    "ReLU": (),
    "Sigmoid": (),
    "Add": (),
    "Sub": (),
    "BinaryCrossEntropyLoss": (),
}
LOSS_TYPES = ("BinaryCrossEntropyLoss",)
#: Layer types ``hugectr2onnx`` (23.08) converts; every type of the graph must be one of them.
ONNX_CONVERTIBLE = {"Data", "LocalizedSlotSparseEmbeddingHash",
                    "DistributedSlotSparseEmbeddingHash", "Add", "BatchNorm", "LayerNorm",
                    "Concat", "Dropout", "ElementwiseMultiply",
                    "ELU", "FmOrder2", "InnerProduct", "FusedInnerProduct", "MLP",
                    "FusedReshapeConcat", "Interaction", "MatrixMultiply", "MultiHeadAttention",
                    "MultiCross", "PReLU_Dice", "ReduceMean", "ReduceSum", "ReLU", "Reshape",
                    "Scale", "Sigmoid", "Slice", "Softmax", "Sub", "WeightMultiply",
                    "BinaryCrossEntropyLoss", "CrossEntropyLoss", "MultiCrossEntropyLoss",
                    "SequenceMask"}


@dataclass(frozen=True)
class Layer:
    """One dense layer: HugeCTR type, bottom and top tensors, and its Python API arguments
    (``num_output``, ``ranges``, ``leading_dim``, ``axis``, ``dropout_rate``)."""

    type: str
    bottom: Tuple[str, ...]
    top: Tuple[str, ...]
    params: Dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInputs:
    """What the graph needs to know about the data: slot sizes and dense width."""

    slot_size_array: Tuple[int, ...]
    dense_dim: int

    @property
    def slot_num(self) -> int:
        """Number of one-hot slots."""
        return len(self.slot_size_array)


def workspace_size_mb(slot_size_array: Sequence[int], config: HugeCTRESMMConfig) -> int:
    """``workspace_size_per_gpu_in_mb`` that holds every key of every slot with the optimizer
    states (HugeCTR sizes the table as ``MB * 2**20 / ((1 + states) * 4 * vec_size)`` keys),
    with ``WORKSPACE_HEADROOM``."""
    per_key = (1 + ADAM_STATES[config.update_type]) * 4 * config.embedding_vec_size
    return max(1, math.ceil(sum(slot_size_array) * per_key * WORKSPACE_HEADROOM / 2 ** 20))


def max_vocabulary_size_global(workspace_mb: int, config: HugeCTRESMMConfig) -> int:
    """What HugeCTR 23.08 records as ``max_vocabulary_size_global`` for that workspace (and
    what ``hugectr2onnx`` sizes its key-to-row table with)."""
    per_key = (1 + ADAM_STATES[config.update_type]) * 4 * config.embedding_vec_size
    return (workspace_mb * 2 ** 20 // per_key) * len(config.gpus)


def esmm_layers(inputs: ModelInputs, config: HugeCTRESMMConfig) -> List[Layer]:
    """The dense layers of the ESMM graph, in the order they are added (module docstring)."""
    width = inputs.slot_num * config.embedding_vec_size
    layers = [Layer("Reshape", (EMBEDDING,), ("emb_flat",), {"leading_dim": width})]
    features = "emb_flat"
    if inputs.dense_dim:
        layers.append(Layer("Concat", ("emb_flat", DENSE), ("features",), {"axis": 1}))
        features, width = "features", width + inputs.dense_dim
    layers.append(Layer("Slice", (features,), ("ctr_in", "cvr_in"),
                        {"ranges": [(0, width), (0, width)]}))
    for tower, out in (("ctr", CTR_LOGIT), ("cvr", "cvr_out")):
        x = f"{tower}_in"
        for i, units in enumerate(config.tower_units):
            layers.append(Layer("InnerProduct", (x,), (f"{tower}_fc{i}",), {"num_output": units}))
            layers.append(Layer("ReLU", (f"{tower}_fc{i}",), (f"{tower}_relu{i}",)))
            x = f"{tower}_relu{i}"
            if config.dropout:
                layers.append(Layer("Dropout", (x,), (f"{tower}_drop{i}",),
                                    {"dropout_rate": config.dropout}))
                x = f"{tower}_drop{i}"
        layers.append(Layer("InnerProduct", (x,), (out,), {"num_output": 1}))
    layers += [
        Layer("Slice", (CTR_LOGIT,), ("ctr_logit_loss", "ctr_logit_ctcvr"),
              {"ranges": [(0, 1), (0, 1)]}),
        Layer("Slice", ("cvr_out",), ("cvr_gap_relu_in", "cvr_gap_sigmoid_in"),
              {"ranges": [(0, 1), (0, 1)]}),
        Layer("ReLU", ("cvr_gap_relu_in",), ("cvr_gap_relu",)),
        Layer("Sigmoid", ("cvr_gap_sigmoid_in",), ("cvr_gap_sigmoid",)),
        Layer("Add", ("cvr_gap_relu", "cvr_gap_sigmoid"), ("cvr_gap",)),
        Layer("Sub", ("ctr_logit_ctcvr", "cvr_gap"), (CTCVR_LOGIT,)),
    ]
    for name, (logit, label) in LOSSES.items():
        layers.append(Layer("BinaryCrossEntropyLoss", (logit, label), (name,)))
    return layers


def _names(names: Sequence[str]):
    return names[0] if len(names) == 1 else list(names)


def layer_json(layer: Layer, name: str) -> Dict:
    """One dense layer in HugeCTR's JSON schema (keys of ``save_graph_to_json``), plus
    ``name`` as in the documented JSON configuration files."""
    out = {"name": name, "type": layer.type, "bottom": _names(layer.bottom),
           "top": _names(layer.top)}
    p = layer.params
    if layer.type in ("InnerProduct", "FusedInnerProduct"):
        out["fc_param"] = {"num_output": p["num_output"]}
    elif layer.type == "Reshape":
        out["leading_dim"], out["time_step"] = p["leading_dim"], 0
    elif layer.type == "Concat":
        out["axis"] = p.get("axis", 1)
    elif layer.type == "Slice":
        out["ranges"] = [list(r) for r in p["ranges"]]
    elif layer.type == "Dropout":
        out["rate"] = p["dropout_rate"]
    return out


def optimizer_json(config: HugeCTRESMMConfig) -> Dict:
    """The optimizer section (dense layers; the embedding's is the same)."""
    return {"type": "Adam", "update_type": config.update_type,
            "adam_hparam": {"learning_rate": config.learning_rate, "beta1": 0.9,
                            "beta2": 0.999, "epsilon": config.adam_epsilon}}


def build_config(inputs: ModelInputs, config: HugeCTRESMMConfig,
                 sources: Optional[Mapping[str, str]] = None,
                 max_eval_batches: int = 1, train_rows: int = 0) -> Dict:
    """The whole model as one JSON configuration: ``solver``, ``optimizer`` and ``layers``
    (the ``Data`` layer with ``format``, ``source``, ``eval_source``, ``slot_size_array``,
    ``label`` / ``dense`` / ``sparse``; the embedding with ``sparse_embedding_hparam``; then
    the dense layers), the keys of HugeCTR's documented JSON configuration and of what
    ``Model.graph_to_json`` writes (``nnz_per_slot`` as a list, ``max_vocabulary_size_global``),
    so that ``hugectr2onnx``'s loader reads its ``layers`` as it reads the dumped graph.

    Args:
        inputs: slot sizes and dense width.
        config: model and training settings.
        sources: split -> file list path (``train`` and ``valid`` used).
        max_eval_batches: evaluation batches (the validation split's rows / eval batch).
        train_rows: rows of the training split (caps ``display`` and ``eval_interval``; see
            ``HugeCTRESMMConfig.intervals``).
    """
    sources = sources or {"train": "data/train/_file_list.txt",
                          "valid": "data/valid/_file_list.txt"}
    ws = workspace_size_mb(inputs.slot_size_array, config)
    n = inputs.slot_num
    data = {"name": "data", "type": "Data", "format": "Parquet",
            "source": [sources["train"]], "eval_source": sources["valid"], "check": "None",
            "slot_size_array": list(inputs.slot_size_array),
            "label": {"top": list(LABELS), "label_dim": [1] * len(LABELS)},
            "dense": {"top": DENSE, "dense_dim": inputs.dense_dim},
            "sparse": [{"top": SPARSE, "type": "DistributedSlot", "nnz_per_slot": [1] * n,
                        "is_fixed_length": True, "slot_num": n}]}
    embedding = {"name": EMBEDDING, "type": "LocalizedSlotSparseEmbeddingHash",
                 "bottom": SPARSE, "top": EMBEDDING,
                 "sparse_embedding_hparam": {
                     "workspace_size_per_gpu_in_mb": ws,
                     "max_vocabulary_size_global": max_vocabulary_size_global(ws, config),
                     "embedding_vec_size": config.embedding_vec_size, "combiner": "sum",
                     "slot_size_array": list(inputs.slot_size_array)},
                 "optimizer": optimizer_json(config)}
    dense = [layer_json(layer, f"{layer.type.lower()}_{i}")
             for i, layer in enumerate(esmm_layers(inputs, config))]
    display, eval_interval = config.intervals(train_rows)
    solver = {"model_name": config.model_name, "seed": config.seed, "lr_policy": "fixed",
              "batchsize": config.batch_size, "batchsize_eval": config.batch_size_eval,
              "max_eval_batches": max_eval_batches, "gpu": list(config.gpus),
              "input_key_type": "I64", "repeat_dataset": not config.epoch_mode,
              "display": display, "eval_interval": eval_interval,
              ("num_epochs" if config.epoch_mode else "max_iter"):
                  config.epochs if config.epoch_mode else config.max_iter}
    return {"solver": solver, "optimizer": optimizer_json(config),
            "layers": [data, embedding, *dense],
            "loss_weights": {"click": 1.0, "ctcvr": config.ctcvr_weight},
            "model_name": config.model_name}


def _as_list(value) -> List[str]:
    return [value] if isinstance(value, str) else list(value or [])


def validate_config(cfg: Mapping) -> None:
    """Check a JSON configuration against HugeCTR's schema and the rules of this graph.

    - top level ``solver``, ``optimizer``, ``layers``; the first layer ``Data`` with
      ``source``, ``eval_source``, ``slot_size_array`` and ``label`` / ``dense`` / ``sparse``;
    - every layer has ``type``, ``bottom`` (except Data), ``top`` and its type's keys
      (``REQUIRED_KEYS``), and a type ``hugectr2onnx`` converts;
    - every bottom is a label, the dense or a sparse input, or an earlier layer's top; no tensor
      is produced twice or consumed twice;
    - slot count = ``slot_size_array`` length = ``nnz_per_slot`` length; the embedding table
      (``max_vocabulary_size_global``) holds every offset key;
    - label tops sorted by name (HugeCTR slices the combined label in name order), each label
      consumed by exactly one loss layer, loss layers last.

    Raises:
        ValueError: the first rule broken, naming the layer.
    """
    for key in ("solver", "optimizer", "layers"):
        if key not in cfg:
            raise ValueError(f"config: missing top-level '{key}'")
    layers = cfg["layers"]
    if not layers or layers[0].get("type") != "Data":
        raise ValueError("config: the first layer must be the Data layer")
    data = layers[0]
    for key in ("format", "source", "eval_source", "slot_size_array", *REQUIRED_KEYS["Data"]):
        if key not in data:
            raise ValueError(f"Data layer: missing '{key}'")
    labels = _as_list(data["label"].get("top"))
    dims = data["label"].get("label_dim")
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    if not labels or len(dims) != len(labels) or any(d != 1 for d in dims):
        raise ValueError(f"Data layer: label tops {labels} need one label_dim of 1 each, "
                         f"got {dims}")
    if labels != sorted(labels):
        raise ValueError(f"Data layer: label tops {labels} must be sorted by name: HugeCTR "
                         "slices the combined label in name order")
    if "top" not in data["dense"] or "dense_dim" not in data["dense"]:
        raise ValueError("Data layer: 'dense' needs top and dense_dim")
    slot_sizes = list(data["slot_size_array"])
    slots = 0
    available = set(labels) | {data["dense"]["top"]}
    for sparse in data["sparse"]:
        for key in ("top", "nnz_per_slot", "is_fixed_length", "slot_num"):
            if key not in sparse:
                raise ValueError(f"Data layer: sparse input {sparse.get('top')!r} misses "
                                 f"'{key}'")
        if not isinstance(sparse["nnz_per_slot"], list) or \
                len(sparse["nnz_per_slot"]) != sparse["slot_num"]:
            raise ValueError(f"Data layer: sparse input '{sparse['top']}': nnz_per_slot must "
                             f"be a list of slot_num ({sparse['slot_num']}) entries")
        slots += sparse["slot_num"]
        available.add(sparse["top"])
    if slots != len(slot_sizes):
        raise ValueError(f"Data layer: {slots} slots but slot_size_array has "
                         f"{len(slot_sizes)} entries")
    consumed: Dict[str, str] = {}
    seen_loss = False
    loss_labels: List[str] = []
    for i, layer in enumerate(layers[1:], start=1):
        where = f"layer {i} ({layer.get('name', layer.get('type'))})"
        ltype = layer.get("type")
        if ltype not in REQUIRED_KEYS:
            raise ValueError(f"{where}: type {ltype!r} is not one this graph uses "
                             f"({sorted(REQUIRED_KEYS)})")
        if ltype not in ONNX_CONVERTIBLE:
            raise ValueError(f"{where}: type {ltype} is not converted by hugectr2onnx")
        for key in ("bottom", "top", *REQUIRED_KEYS[ltype]):
            if key not in layer:
                raise ValueError(f"{where}: missing '{key}'")
        bottoms, tops = _as_list(layer["bottom"]), _as_list(layer["top"])
        for b in bottoms:
            if b not in available:
                raise ValueError(f"{where}: bottom '{b}' is not produced by an earlier layer "
                                 "or the Data layer")
            if b in consumed:
                raise ValueError(f"{where}: bottom '{b}' is already consumed by "
                                 f"{consumed[b]}; copy it with a Slice layer")
            consumed[b] = where
        for t in tops:
            if t in available or t in consumed:
                raise ValueError(f"{where}: top '{t}' is produced twice")
            available.add(t)
        if ltype in LOSS_TYPES:
            seen_loss = True
            if len(bottoms) != 2 or bottoms[1] not in labels:
                raise ValueError(f"{where}: a loss takes [logit, label]; got {bottoms}")
            loss_labels.append(bottoms[1])
        elif seen_loss:
            raise ValueError(f"{where}: loss layers must come last")
        if ltype == "LocalizedSlotSparseEmbeddingHash":
            hp = layer["sparse_embedding_hparam"]
            for key in ("workspace_size_per_gpu_in_mb", "max_vocabulary_size_global",
                        "embedding_vec_size", "combiner"):
                if key not in hp:
                    raise ValueError(f"{where}: sparse_embedding_hparam misses '{key}'")
            if hp["max_vocabulary_size_global"] < sum(slot_sizes):
                raise ValueError(f"{where}: max_vocabulary_size_global "
                                 f"{hp['max_vocabulary_size_global']} < {sum(slot_sizes)} "
                                 "offset keys; raise workspace_size_per_gpu_in_mb")
        if ltype == "InnerProduct" and "num_output" not in layer["fc_param"]:
            raise ValueError(f"{where}: fc_param misses num_output")
    if sorted(loss_labels) != sorted(labels):
        raise ValueError(f"config: loss layers use labels {loss_labels}; every label "
                         f"{labels} needs exactly one")


def reference_forward(cfg: Mapping, weights: Mapping[str, np.ndarray], dense: np.ndarray,
                      keys: np.ndarray) -> Dict[str, np.ndarray]:
    """A numpy forward pass of a configuration of this graph: per label, the sigmoid of its
    loss's logit as a ``[B]`` array (what ``hugectr2onnx`` outputs as ``[B, 1]``).

    Args:
        cfg: from :func:`build_config`.
        weights: ``"<top>/weight"`` ``[in, out]`` and ``"<top>/bias"`` ``[out]`` per
            InnerProduct, ``"<embedding top>/table"`` ``[keys, vec]`` (row = offset key).
        dense: ``[B, dense_dim]`` float32.
        keys: ``[B, slot_num]`` int64 keys with the slot offsets added.
    """
    layers = cfg["layers"]
    data = layers[0]
    t: Dict[str, np.ndarray] = {data["dense"]["top"]: dense.astype(np.float32)}
    t[data["sparse"][0]["top"]] = keys
    out: Dict[str, np.ndarray] = {}
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    for layer in layers[1:]:
        ltype, bottoms, tops = layer["type"], _as_list(layer["bottom"]), _as_list(layer["top"])
        x = [t[b] for b in bottoms if b in t]
        if ltype == "LocalizedSlotSparseEmbeddingHash":
            y = weights[f"{tops[0]}/table"][x[0]]
        elif ltype == "Reshape":
            y = x[0].reshape(len(x[0]), -1)
        elif ltype == "Concat":
            y = np.concatenate(x, axis=1)
        elif ltype == "Slice":
            for top, (a, b) in zip(tops, layer["ranges"]):
                t[top] = x[0][:, a:b]
            continue
        elif ltype == "InnerProduct":
            y = x[0] @ weights[f"{tops[0]}/weight"] + weights[f"{tops[0]}/bias"]
        elif ltype == "ReLU":
            y = np.maximum(x[0], 0)
        elif ltype == "Sigmoid":
            y = sig(x[0])
        elif ltype == "Add":
            y = sum(x[1:], x[0])
        elif ltype == "Sub":
            y = x[0] - x[1]
        elif ltype == "Dropout":
            y = x[0]
        elif ltype == "BinaryCrossEntropyLoss":
            out[bottoms[1]] = sig(x[0]).astype(np.float32).reshape(-1)
            continue
        else:
            raise ValueError(f"reference_forward: layer type {ltype} is not in this graph")
        t[tops[0]] = y.astype(np.float32)
    return out


def random_weights(cfg: Mapping, seed: int = 0, scale: float = 1.0) -> Dict[str, np.ndarray]:
    """Random weights for a configuration of this graph in :func:`reference_forward`'s layout
    (normal, ``scale`` standard deviation): a stand-in for a trained model in tests and dry
    runs of the ONNX adapter."""
    rng = np.random.default_rng(seed)
    layers = cfg["layers"]
    data, embedding = layers[0], layers[1]
    vec = embedding["sparse_embedding_hparam"]["embedding_vec_size"]
    slots = sum(s["slot_num"] for s in data["sparse"])
    weights = {f"{embedding['top']}/table":
               rng.normal(scale=scale, size=(sum(data["slot_size_array"]), vec))
               .astype(np.float32)}
    width = {data["dense"]["top"]: data["dense"]["dense_dim"], embedding["top"]: slots * vec}
    for layer in layers[2:]:
        ltype, bottoms, tops = layer["type"], _as_list(layer["bottom"]), _as_list(layer["top"])
        if ltype == "Slice":
            for top, (a, b) in zip(tops, layer["ranges"]):
                width[top] = b - a
        elif ltype == "Concat":
            width[tops[0]] = sum(width[b] for b in bottoms)
        elif ltype == "Reshape":
            width[tops[0]] = layer["leading_dim"]
        elif ltype == "InnerProduct":
            n_in, n_out = width[bottoms[0]], layer["fc_param"]["num_output"]
            weights[f"{tops[0]}/weight"] = (rng.normal(scale=scale, size=(n_in, n_out))
                                            / np.sqrt(n_in)).astype(np.float32)
            weights[f"{tops[0]}/bias"] = rng.normal(scale=scale, size=n_out).astype(np.float32)
            width[tops[0]] = n_out
        elif ltype != "BinaryCrossEntropyLoss":
            width[tops[0]] = width[bottoms[0]]
    return weights
