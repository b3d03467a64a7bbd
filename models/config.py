"""Model and training configuration: frozen dataclasses with validated fields.

``python -m models.train --config FILE`` reads a YAML file with two optional sections,
``model:`` and ``train:``. ``model:`` holds the fields every model uses (:class:`ModelConfig`)
and one sub-section per model family, named by the family config's ``KEY`` (``mmoe``,
``escm2``, ``autoheri``, ``ukd``), whose keys are that dataclass's fields::

    model:
      embedding_dim: 16
      autoheri: {search_fraction: 0.5, edge_lr: 0.01}

The flat keys of earlier releases (``autoheri_edge_lr``, ``ukd_alpha``, ``mmoe_experts``,
``ips_clip``, ``ctcart_weight``, ...) keep working: each family config lists them in ``LEGACY``
and they map to its fields. The resolved configuration is written to ``RUN_DIR/config.json`` in
that flat form (:func:`configs_to_dict`), so runs recorded before the family configs are the
same runs for ``--resume`` and ``models.compare``.

The defaults are the settings selected on the validation day for the ESMM-vs-naive comparison
on the 4M-row default data (``models/configs/selected_4m.yaml`` records that choice; a test keeps
the two equal): one epoch, LazyAdam at 2e-3 with the cosine decay on the dense weights only, and
the CTCVR loss weighted 3 in the entire-space models (docs/models.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Dict, Optional, Tuple, Type, TypeVar

import yaml

from common.params import check_param, dataclass_from_dict
from models import registry

OPTIMIZER_NAMES = ("adam", "lazy_adam")
LR_SCHEDULE_NAMES = ("constant", "cosine", "cosine_dense")

F = TypeVar("F", bound="FamilyConfig")


class FamilyConfig:
    """Base of a model family's own config dataclass (frozen, validated in ``__post_init__``).

    Class attributes:
        KEY: the family's sub-section under ``model:`` in a YAML config.
        LEGACY: flat ``ModelConfig`` keys of earlier releases -> this dataclass's fields; a
            field without one has the flat name ``KEY_field``.

    The flat names are also the form ``RUN_DIR/config.json`` records (:func:`configs_to_dict`),
    so a run recorded before the family configs existed stays the same run.
    """

    KEY: ClassVar[str] = ""
    LEGACY: ClassVar[Dict[str, str]] = {}

    @classmethod
    def flat_names(cls) -> Dict[str, str]:
        """Every field's flat name -> the field (``LEGACY``, else ``KEY_field``)."""
        by_field = {f: legacy for legacy, f in cls.LEGACY.items()}
        return {by_field.get(f.name, f"{cls.KEY}_{f.name}"): f.name for f in fields(cls)}

    def flat(self) -> Dict[str, Any]:
        """This config under its flat names (the ``RUN_DIR/config.json`` form)."""
        values = json.loads(json.dumps(asdict(self)))
        return {flat: values[name] for flat, name in self.flat_names().items()}


@dataclass(frozen=True)
class ModelConfig:
    """What every model uses: the shared input layer, the task towers and the entire-space
    loss weight; each family's own options ride along in ``families`` (one config object per
    family, :meth:`family` returns it or its defaults).

    Args:
        embedding_dim: width of every categorical embedding (ESMM paper: 18).
        max_embedding_rows: cap on an embedding table's rows; larger vocabularies are folded by
            modulo (0 = no cap).
        tower_units: hidden units of each task tower (ESMM paper: 360x200x80).
        dropout: dropout rate after each hidden layer.
        l2: L2 penalty on embedding outputs.
        ctcvr_weight: weight of the CTCVR loss in entire-space models (ESMM, ESCM2-IPS,
            AutoHERI's chain; ESMM paper: 1; default 3, chosen on the validation day of the 4M
            default data, docs/models.md).
        prior_bias_init: start each task's output bias at the logit of its training base rate
            (our choice; the same for every model).
        families: the family configs set away from their defaults (:class:`FamilyConfig`
            instances, at most one per class).
    """

    embedding_dim: int = 16
    max_embedding_rows: int = 200_000
    tower_units: Tuple[int, ...] = (128, 64, 32)
    dropout: float = 0.0
    l2: float = 0.0
    ctcvr_weight: float = 3.0
    prior_bias_init: bool = True
    families: Tuple[FamilyConfig, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "tower_units", tuple(self.tower_units))
        families = tuple(self.families.values()) if isinstance(self.families, dict) \
            else tuple(self.families)
        # canonical: sorted by key, defaults dropped, so equal settings compare equal
        families = tuple(sorted((f for f in families if f != type(f)()),
                                key=lambda f: f.KEY))
        object.__setattr__(self, "families", families)
        check_param(len({type(f) for f in families}) == len(families), "families",
                    "at most one config per family", families)
        check_param(1 <= self.embedding_dim <= 1024, "embedding_dim", "in [1, 1024]",
                    self.embedding_dim)
        check_param(self.max_embedding_rows >= 0, "max_embedding_rows", ">= 0",
                    self.max_embedding_rows)
        check_param(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)
        check_param(self.l2 >= 0, "l2", ">= 0", self.l2)
        check_param(self.ctcvr_weight > 0, "ctcvr_weight", "> 0", self.ctcvr_weight)
        check_param(len(self.tower_units) >= 1 and all(u >= 1 for u in self.tower_units),
                    "tower_units", "a non-empty list of positive ints", self.tower_units)

    def family(self, cls: Type[F]) -> F:
        """The config of family ``cls``: the one set in ``families``, else ``cls()``."""
        for f in self.families:
            if type(f) is cls:
                return f
        return cls()

    def flat(self) -> Dict[str, Any]:
        """Every field of this config and of every registered family's config, under the flat
        names of earlier releases (what ``RUN_DIR/config.json`` records)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "families"}
        out = json.loads(json.dumps(out))
        for cls in registry.family_configs():
            out.update(self.family(cls).flat())
        return out


def common_keys() -> Tuple[str, ...]:
    """The keys of ``model:`` that :class:`ModelConfig` itself holds."""
    return tuple(f.name for f in fields(ModelConfig) if f.name != "families")


def legacy_keys() -> Dict[str, Tuple[type, str]]:
    """Every family field's flat name (``autoheri_edge_lr``, ``ukd_lambda``) -> (its family
    config class, the field)."""
    return {flat: (cls, name) for cls in registry.family_configs()
            for flat, name in cls.flat_names().items()}


def model_config_from_dict(raw: Optional[Dict[str, Any]], where: str = "model") -> ModelConfig:
    """A :class:`ModelConfig` from a ``model:`` mapping: common keys, family sub-sections
    (``autoheri: {...}``) and the flat keys of earlier releases (``autoheri_edge_lr``), which
    map to the same family fields. Unknown keys fail naming the known ones."""
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    raw = dict(raw or {})
    by_key = {cls.KEY: cls for cls in registry.family_configs()}
    legacy = legacy_keys()
    common = set(common_keys())
    family_raw: Dict[type, Dict[str, Any]] = {}
    given: Dict[Tuple[type, str], str] = {}  # (family, field) -> the key that set it
    unknown = []

    def put(cls, name, value, key):
        if (cls, name) in given:
            raise ValueError(f"{where}: {cls.KEY}.{name} is set twice, as {given[cls, name]!r} "
                             f"and as {key!r}; keep one")
        given[cls, name] = key
        family_raw.setdefault(cls, {})[name] = value

    for key in list(raw):
        if key in common:
            continue
        value = raw.pop(key)
        if key in by_key:
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {key}: expected a mapping of "
                                 f"{by_key[key].__name__} fields, got {value!r}")
            known = {f.name for f in fields(by_key[key])}
            bad = sorted(set(value) - known)
            if bad:
                raise ValueError(f"{where}: {key}: unknown keys {bad}; known keys are "
                                 f"{sorted(known)}")
            for name, v in value.items():
                put(by_key[key], name, v, f"{key}: {name}")
        elif key in legacy:
            put(*legacy[key], value, key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known keys are "
                         f"{sorted(common)}, the family sections {sorted(by_key)} and their "
                         f"earlier flat names {sorted(legacy)}")
    try:
        families = tuple(cls(**values) for cls, values in family_raw.items())
        return ModelConfig(**raw, families=families)
    except (TypeError, ValueError) as e:  # say which file and section it came from
        raise ValueError(f"{where}: {e}") from None


def model_config_from_flat(flat: Dict[str, Any]) -> ModelConfig:
    """The inverse of :meth:`ModelConfig.flat` (a recorded ``config.json``'s
    ``model_config``; keys of families no longer registered fail)."""
    return model_config_from_dict(flat, "model_config")


def with_model_options(config: ModelConfig, **options) -> ModelConfig:
    """``config`` with some options changed, by flat name (``autoheri_sparsity=0.1``) or common
    field name (``dropout=0.1``): what a sweep or a test sets."""
    return model_config_from_flat({**config.flat(), **options})


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


def train_config_from_dict(raw: Optional[Dict[str, Any]], where: str = "train") -> TrainConfig:
    """A :class:`TrainConfig` from a ``train:`` mapping (unknown keys fail naming the known)."""
    return dataclass_from_dict(TrainConfig, raw, where)


def load_configs(path: Optional[str]) -> Tuple[ModelConfig, TrainConfig]:
    """Read ``model:`` and ``train:`` sections from a YAML file (defaults when ``None``)."""
    if path is None:
        return ModelConfig(), TrainConfig()
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    unknown = sorted(set(raw) - {"model", "train"})
    if unknown:
        raise ValueError(f"{path}: unknown sections {unknown}; expected 'model' and 'train'")
    return (model_config_from_dict(raw.get("model"), f"{path}: model"),
            train_config_from_dict(raw.get("train"), f"{path}: train"))


def configs_to_dict(model: ModelConfig, train: TrainConfig) -> Dict[str, Any]:
    """Plain-data form of both configs."""
    return {"model_config": model.flat(), "train_config": asdict(train)}


def with_added_defaults(recorded: Dict[str, Any]) -> Dict[str, Any]:
    """A run's recorded ``configs_to_dict`` form with every field added to the dataclasses
    since then set to its default: a field that did not exist when the run was trained had its
    default's behaviour (new fields default to the old behaviour), so the run stays the same
    run for ``--resume`` and ``models.compare``."""
    out = dict(recorded)
    for key, default in (("model_config", ModelConfig().flat()),
                         ("train_config", asdict(TrainConfig()))):
        if isinstance(recorded.get(key), dict):
            defaults = json.loads(json.dumps(default))
            out[key] = {**{k: v for k, v in defaults.items() if k not in recorded[key]},
                        **recorded[key]}
    return out
