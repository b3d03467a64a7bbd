"""Model and training configuration: frozen dataclasses with validated fields.

``python -m models.train --config FILE`` reads a YAML file with two optional sections,
``model:`` and ``train:``, whose keys are the fields below. The resolved configuration is
written to ``RUN_DIR/config.json``.

The defaults are the settings selected on the validation day for the ESMM-vs-naive comparison
on the 4M-row default data (``models/configs/selected_4m.yaml`` records that choice; a test keeps
the two equal): one epoch, LazyAdam at 2e-3 with the cosine decay on the dense weights only, and
the CTCVR loss weighted 3 in the entire-space models (README "Models").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional, Tuple

import yaml

from preprocessing.params import check_param

MODEL_NAMES = ("naive", "naive_shared", "esmm", "escm2_ips", "mmoe", "autoheri", "autoheri_none",
               "autoheri_all", "autoheri_random", "ukd_teacher", "ukd", "ukd_base")
#: Models that train on the UKD teacher's pseudo-labels (data from ``models.pseudolabel``).
PSEUDO_LABEL_MODELS = ("ukd", "ukd_base")
AUTOHERI_SEARCH_NAMES = ("joint", "bilevel")
AUTOHERI_DERIVE_NAMES = ("threshold", "topk")
UKD_SCHEDULE_NAMES = ("dann", "constant")
OPTIMIZER_NAMES = ("adam", "lazy_adam")
LR_SCHEDULE_NAMES = ("constant", "cosine", "cosine_dense")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the shared input layer and the task towers.

    Args:
        embedding_dim: width of every categorical embedding (ESMM paper: 18).
        max_embedding_rows: cap on an embedding table's rows; larger vocabularies are folded by
            modulo (0 = no cap).
        tower_units: hidden units of each task tower (ESMM paper: 360x200x80).
        dropout: dropout rate after each hidden layer.
        l2: L2 penalty on embedding outputs.
        mmoe_experts: number of MMoE experts.
        mmoe_expert_units: hidden units of each MMoE expert.
        ips_clip: lower clip of pCTR in the ESCM2-IPS weights 1 / pCTR (our choice).
        ips_weight: weight of the ESCM2 counterfactual CVR risk.
        ctcvr_weight: weight of the CTCVR loss in entire-space models (ESMM, ESCM2-IPS; ESMM
            paper: 1; default 3, chosen on the validation day of the 4M default data, README
            "Models").
        prior_bias_init: start each task's output bias at the logit of its training base rate
            (our choice; the same for every model).
        ctcart_weight: weight of the CTCART loss ``CE(click * cart, pCTR * pCART|click)`` of the
            AutoHERI chain (our choice: 1).
        autoheri_search: ``joint`` (edge logits and weights on the training split) or
            ``bilevel`` (weights on train; edge logits on the validation day's first half,
            one edge step every ``autoheri_bilevel_every`` weight steps).
        autoheri_search_fraction: the search stage's length, as a fraction of the training
            run's planned steps (``epochs`` x steps per epoch). The default 0.25 keeps search
            + retrain within 3x one ESMM run (``benchmarks.train_bench``); on the 4M-row
            default data 0.5 searched no better on the validation day (until 2026-12-01 the
            default was 0.5: earlier sweep records ran with it).
        autoheri_edge_lr: Adam learning rate of the edge logits (constant).
        autoheri_edge_init: every edge's starting probability.
        autoheri_temperature: ``p = sigmoid(a / temperature)``.
        autoheri_sparsity: weight of the penalty ``sum_ij p_ij`` (the expected edge count)
            added to the search loss.
        autoheri_bilevel_every: weight steps per edge step in the bi-level search.
        autoheri_derive: ``threshold`` (keep ``p > autoheri_threshold``) or ``topk`` (keep the
            ``autoheri_top_k`` most probable edges).
        autoheri_threshold, autoheri_top_k: see ``autoheri_derive``.
        autoheri_random_edges: edge count of ``autoheri_random`` (0: ``autoheri_top_k`` when
            deriving by top-k; set it to the searched set's size otherwise).
        ukd_representation_units: hidden units of the UKD teacher's representation ``T_f``.
        ukd_head_units: hidden units of the teacher's CVR head and click discriminator.
        ukd_adversarial_weight: the largest weight of the reversed discriminator gradient.
        ukd_adversarial_schedule: ``dann`` (the weight rises as ``2 / (1 + exp(-10 t)) - 1``
            over the run's fraction ``t`` of planned steps) or ``constant``.
        ukd_alpha: weight of the UKD student's distillation on unclicked rows.
        ukd_gamma: weight of the student's CTR loss.
        ukd_lambda: the uncertainty's sharpness in the distillation weight
            ``exp(-ukd_lambda * KL(p || p'))`` (a third-party reimplementation used 100).
        ukd_kl_weight: weight of the KL regulariser on unclicked rows (our choice: 1).
        ukd_head_dropout: dropout rate in front of each of the student's two CVR heads.
    """

    embedding_dim: int = 16
    max_embedding_rows: int = 200_000
    tower_units: Tuple[int, ...] = (128, 64, 32)
    dropout: float = 0.0
    l2: float = 0.0
    mmoe_experts: int = 4
    mmoe_expert_units: Tuple[int, ...] = (128, 64)
    ips_clip: float = 0.05
    ips_weight: float = 1.0
    ctcvr_weight: float = 3.0
    prior_bias_init: bool = True
    ctcart_weight: float = 1.0
    autoheri_search: str = "joint"
    autoheri_search_fraction: float = 0.25
    autoheri_edge_lr: float = 0.01
    autoheri_edge_init: float = 0.5
    autoheri_temperature: float = 1.0
    autoheri_sparsity: float = 0.0
    autoheri_bilevel_every: int = 1
    autoheri_derive: str = "threshold"
    autoheri_threshold: float = 0.5
    autoheri_top_k: int = 0
    autoheri_random_edges: int = 0
    ukd_representation_units: Tuple[int, ...] = (128, 64)
    ukd_head_units: Tuple[int, ...] = (32,)
    ukd_adversarial_weight: float = 1.0
    ukd_adversarial_schedule: str = "dann"
    ukd_alpha: float = 0.5
    ukd_gamma: float = 0.2
    ukd_lambda: float = 100.0
    ukd_kl_weight: float = 1.0
    ukd_head_dropout: float = 0.1

    def __post_init__(self):
        for name in ("tower_units", "mmoe_expert_units", "ukd_representation_units",
                     "ukd_head_units"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        check_param(1 <= self.embedding_dim <= 1024, "embedding_dim", "in [1, 1024]",
               self.embedding_dim)
        check_param(self.max_embedding_rows >= 0, "max_embedding_rows", ">= 0",
               self.max_embedding_rows)
        check_param(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)
        check_param(self.l2 >= 0, "l2", ">= 0", self.l2)
        check_param(self.mmoe_experts >= 1, "mmoe_experts", ">= 1", self.mmoe_experts)
        check_param(0.0 < self.ips_clip <= 1.0, "ips_clip", "in (0, 1]", self.ips_clip)
        check_param(self.ips_weight >= 0, "ips_weight", ">= 0", self.ips_weight)
        check_param(self.ctcvr_weight > 0, "ctcvr_weight", "> 0", self.ctcvr_weight)
        check_param(self.ctcart_weight >= 0, "ctcart_weight", ">= 0", self.ctcart_weight)
        check_param(self.autoheri_search in AUTOHERI_SEARCH_NAMES, "autoheri_search",
                    f"one of {', '.join(AUTOHERI_SEARCH_NAMES)}", self.autoheri_search)
        check_param(0.0 < self.autoheri_search_fraction <= 4.0, "autoheri_search_fraction",
                    "in (0, 4]", self.autoheri_search_fraction)
        check_param(self.autoheri_edge_lr > 0, "autoheri_edge_lr", "> 0", self.autoheri_edge_lr)
        check_param(0.0 < self.autoheri_edge_init < 1.0, "autoheri_edge_init", "in (0, 1)",
                    self.autoheri_edge_init)
        check_param(self.autoheri_temperature > 0, "autoheri_temperature", "> 0",
                    self.autoheri_temperature)
        check_param(self.autoheri_sparsity >= 0, "autoheri_sparsity", ">= 0",
                    self.autoheri_sparsity)
        check_param(self.autoheri_bilevel_every >= 1, "autoheri_bilevel_every", ">= 1",
                    self.autoheri_bilevel_every)
        check_param(self.autoheri_derive in AUTOHERI_DERIVE_NAMES, "autoheri_derive",
                    f"one of {', '.join(AUTOHERI_DERIVE_NAMES)}", self.autoheri_derive)
        check_param(0.0 < self.autoheri_threshold < 1.0, "autoheri_threshold", "in (0, 1)",
                    self.autoheri_threshold)
        check_param(self.autoheri_top_k >= 0, "autoheri_top_k", ">= 0", self.autoheri_top_k)
        check_param(self.autoheri_derive != "topk" or self.autoheri_top_k >= 1, "autoheri_top_k",
                    ">= 1 when autoheri_derive is topk", self.autoheri_top_k)
        check_param(self.autoheri_random_edges >= 0, "autoheri_random_edges", ">= 0",
                    self.autoheri_random_edges)
        for name in ("tower_units", "ukd_representation_units", "ukd_head_units"):
            units = getattr(self, name)
            check_param(len(units) >= 1 and all(u >= 1 for u in units), name,
                        "a non-empty list of positive ints", units)
        check_param(self.ukd_adversarial_weight >= 0, "ukd_adversarial_weight", ">= 0",
                    self.ukd_adversarial_weight)
        check_param(self.ukd_adversarial_schedule in UKD_SCHEDULE_NAMES,
                    "ukd_adversarial_schedule", f"one of {', '.join(UKD_SCHEDULE_NAMES)}",
                    self.ukd_adversarial_schedule)
        for name in ("ukd_alpha", "ukd_gamma", "ukd_lambda", "ukd_kl_weight"):
            check_param(getattr(self, name) >= 0, name, ">= 0", getattr(self, name))
        check_param(0.0 <= self.ukd_head_dropout < 1.0, "ukd_head_dropout", "in [0, 1)",
                    self.ukd_head_dropout)


@dataclass(frozen=True)
class TrainConfig:
    """The training loop.

    Args:
        batch_size: examples per step.
        epochs: maximum passes over the training split (default 1: validation loss rises
            after the first epoch for every model, as the id embeddings memorise).
        learning_rate: Adam learning rate (beta 0.9 / 0.999, epsilon 1e-8, as in ESMM).
        optimizer: ``adam`` (Keras Adam: a sparse gradient decays and moves every embedding
            row) or ``lazy_adam`` (only the rows in the batch; ``models/optimizers.py``).
        lr_schedule: ``constant``, or ``cosine``: the rate decays from ``learning_rate`` to 0
            along a half cosine over the run's planned steps (``epochs`` x steps per epoch, or
            ``max_steps`` when it is smaller; Loshchilov & Hutter, "SGDR", ICLR 2017). The
            schedule reads the optimizer's step counter, so a resumed run continues it.
            ``cosine_dense``: the dense weights follow that cosine while the embedding rows
            (the sparse updates of ``lazy_adam``) keep ``learning_rate``: a row is updated
            only in the steps whose batch holds its id, so a decay by the global step starves
            the rows of ids first seen late in the run. Needs ``optimizer: lazy_adam``.
        patience: epochs without validation-loss improvement before early stopping.
        checkpoint_every: steps between checkpoints (a SIGKILL loses at most this many).
        max_steps: stop after this many steps in total (0 = no limit).
        eval_batch_size: batch size for validation and prediction.
    """

    batch_size: int = 4096
    epochs: int = 1
    learning_rate: float = 2e-3
    optimizer: str = "lazy_adam"
    lr_schedule: str = "cosine_dense"
    patience: int = 1
    checkpoint_every: int = 100
    max_steps: int = 0
    eval_batch_size: int = 16384

    def __post_init__(self):
        check_param(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        check_param(self.epochs >= 1, "epochs", ">= 1", self.epochs)
        check_param(self.learning_rate > 0, "learning_rate", "> 0", self.learning_rate)
        check_param(self.optimizer in OPTIMIZER_NAMES, "optimizer",
                    f"one of {', '.join(OPTIMIZER_NAMES)}", self.optimizer)
        check_param(self.lr_schedule in LR_SCHEDULE_NAMES, "lr_schedule",
                    f"one of {', '.join(LR_SCHEDULE_NAMES)}", self.lr_schedule)
        check_param(self.lr_schedule != "cosine_dense" or self.optimizer == "lazy_adam",
                    "lr_schedule", "other than cosine_dense unless optimizer is lazy_adam "
                    "(Keras Adam updates embedding rows densely)", self.lr_schedule)
        check_param(self.patience >= 0, "patience", ">= 0", self.patience)
        check_param(self.checkpoint_every >= 1, "checkpoint_every", ">= 1", self.checkpoint_every)
        check_param(self.max_steps >= 0, "max_steps", ">= 0", self.max_steps)
        check_param(self.eval_batch_size >= 1, "eval_batch_size", ">= 1", self.eval_batch_size)


def _from_dict(cls, raw: Optional[Dict[str, Any]], where: str):
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
    try:
        return cls(**raw)
    except ValueError as e:  # a field's validation: say which file and section it came from
        raise ValueError(f"{where}: {e}") from None


def load_configs(path: Optional[str]) -> Tuple[ModelConfig, TrainConfig]:
    """Read ``model:`` and ``train:`` sections from a YAML file (defaults when ``None``)."""
    if path is None:
        return ModelConfig(), TrainConfig()
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    unknown = sorted(set(raw) - {"model", "train"})
    if unknown:
        raise ValueError(f"{path}: unknown sections {unknown}; expected 'model' and 'train'")
    return (_from_dict(ModelConfig, raw.get("model"), f"{path}: model"),
            _from_dict(TrainConfig, raw.get("train"), f"{path}: train"))


def configs_to_dict(model: ModelConfig, train: TrainConfig) -> Dict[str, Any]:
    """Plain-data form of both configs."""
    return {"model_config": asdict(model), "train_config": asdict(train)}


def with_added_defaults(recorded: Dict[str, Any]) -> Dict[str, Any]:
    """A run's recorded ``configs_to_dict`` form with every field added to the dataclasses
    since then set to its default: a field that did not exist when the run was trained had its
    default's behaviour (new fields default to the old behaviour), so the run stays the same
    run for ``--resume`` and ``models.compare``."""
    out = dict(recorded)
    for key, cls in (("model_config", ModelConfig), ("train_config", TrainConfig)):
        if isinstance(recorded.get(key), dict):
            defaults = json.loads(json.dumps(asdict(cls())))
            out[key] = {**{k: v for k, v in defaults.items() if k not in recorded[key]},
                        **recorded[key]}
    return out
