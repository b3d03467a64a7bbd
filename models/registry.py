"""The model registry: every model name the harness can train, and what each one needs.

A model family is one module that defines its models and calls :func:`register` once with a
:class:`ModelFamily`: its names, a builder, its own config dataclass (a
``models.config.FamilyConfig``), the extra label columns it trains on, and an optional stage
that runs before training (AutoHERI's search). Adding a family is that module plus one line in
:data:`FAMILY_MODULES`; the trainer (``models.trainer``) and ``models.train`` know no model
name. A test can :func:`register` a family of its own and train it through ``models.train``
(``tests/models/test_registry.py``).

This module imports no model code at import time: :data:`FAMILY_MODULES` are imported the first
time a name is looked up, so that the family modules (which import TensorFlow) load only when a
model is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

#: One line per model family: the module that registers it.
FAMILY_MODULES = (
    "models.baselines",
    "models.autoheri.family",
    "models.ukd.family",
)


@dataclass(frozen=True)
class ModelFamily:
    """What the harness needs to know about a family of models.

    Args:
        names: the model names (``python -m models.train --model NAME``), each with a one-line
            description.
        build: ``build(name, features, model_config, targets, seed) -> model``: a Keras model
            with ``compute_loss`` (``models.baselines.CVRModel``); it reads its own options with
            ``model_config.family(ITS_CONFIG)``.
        configs: the family's config dataclasses (``models.config.FamilyConfig``), each a
            sub-section of ``model:`` in a YAML config.
        label_columns: ``label_columns(name, schema, data_dir) -> [column]``: columns the model
            trains on beyond the features and targets (the UKD students' pseudo-labels); it
            raises a clear error when the data lack them. None: no extra columns.
        prepare: ``prepare(name, data, run_dir, seed, model_config, train_config, resume,
            progress) -> Prepared``: a stage run before training (AutoHERI's search and derive).
            None: the model is built by ``build``.
        pseudo_labelled: names that train on the UKD teacher's pseudo-labels (their data comes
            from ``models.pseudolabel``; ``models.compare`` leaves them out by default).
        stale_files: files and directories this family leaves in a run directory; a fresh run
            of any model removes every family's from an older run there.
    """

    names: Dict[str, str]
    build: Callable[..., Any]
    configs: Tuple[type, ...] = ()
    label_columns: Optional[Callable[..., List[str]]] = None
    prepare: Optional[Callable[..., "Prepared"]] = None
    pseudo_labelled: Tuple[str, ...] = ()
    stale_files: Tuple[str, ...] = ()


@dataclass
class Prepared:
    """What a family's ``prepare`` stage hands the trainer.

    Args:
        factory: ``factory(features, model_config, targets) -> model`` replacing ``build`` (the
            derived network), or None to build as usual.
        record: extra keys for ``metrics.json`` (AutoHERI's ``search``).
        resume_training: whether the training stage itself may resume from a checkpoint (False
            when the stage before it was what got interrupted).
        after_build: ``after_build(model, run_dir)`` called once the trainer has built the
            model (an ablation records its fixed architecture), or None.
    """

    factory: Optional[Callable[..., Any]] = None
    record: Optional[Dict[str, Any]] = None
    resume_training: bool = True
    after_build: Optional[Callable[..., Any]] = None


_FAMILIES: List[ModelFamily] = []
_loaded = False


def register(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to the registry and return it. A model name, a config section (``KEY``)
    or a flat config name that another family (or ``ModelConfig`` itself) holds already is an
    error."""
    from dataclasses import fields
    taken = set(model_names(load=False))
    clash = sorted(taken & set(family.names))
    if clash:
        raise ValueError(f"model names {clash} are registered already")
    configs = [c for f in _FAMILIES for c in f.configs]
    keys = {c.KEY for c in configs}
    flat = {name for c in configs for name in c.flat_names()}
    for cls in family.configs:
        if not cls.KEY or cls.KEY in keys:
            raise ValueError(f"{cls.__name__}: config section {cls.KEY!r} is empty or taken")
        common = {f.name for f in fields(_model_config_class())}
        clash = sorted((flat | common) & set(cls.flat_names()))
        if clash:
            raise ValueError(f"{cls.__name__}: flat config names {clash} are taken")
        keys.add(cls.KEY)
        flat |= set(cls.flat_names())
    _FAMILIES.append(family)
    return family


def _model_config_class():
    """``models.config.ModelConfig`` (imported when a family registers, not with this module:
    ``models.config`` imports this one)."""
    return importlib.import_module("models.config").ModelConfig


def unregister(family: ModelFamily) -> None:
    """Remove ``family`` (tests that register a toy family clean up with it)."""
    _FAMILIES.remove(family)


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True  # before the imports: a family module may look names up while loading
        try:
            for module in FAMILY_MODULES:
                importlib.import_module(module)
        except BaseException:  # a family that fails to import fails every lookup, loudly
            _loaded = False
            raise


def families() -> Tuple[ModelFamily, ...]:
    """Every registered family (the modules of :data:`FAMILY_MODULES` imported first)."""
    _load()
    return tuple(_FAMILIES)


def model_names(load: bool = True) -> Tuple[str, ...]:
    """Every registered model name, in registration order."""
    if load:
        _load()
    return tuple(name for f in _FAMILIES for name in f.names)


def pseudo_labelled_names() -> Tuple[str, ...]:
    """The names that train on the UKD teacher's pseudo-labels."""
    return tuple(name for f in families() for name in f.pseudo_labelled)


def family_configs() -> Tuple[type, ...]:
    """Every registered family's config dataclasses."""
    return tuple(cls for f in families() for cls in f.configs)


def family_of(name: str) -> ModelFamily:
    """The family that registered ``name`` (a ``ValueError`` listing the names otherwise)."""
    for f in families():
        if name in f.names:
            return f
    raise ValueError(f"The 'model' parameter must be one of {sorted(model_names())}. "
                     f"Got {name!r} instead.")


def stale_files() -> Tuple[str, ...]:
    """What a fresh run removes from an older run's directory besides the harness's own:
    every family's ``stale_files`` (a reused ``--out`` may hold another family's run)."""
    return tuple(dict.fromkeys(name for f in families() for name in f.stale_files))


def build_model(name: str, features: Sequence[Any], config: Any, targets: Sequence[str],
                seed: int = 0) -> Any:
    """Instantiate the model ``name`` with its family's builder (``seed`` draws what a model
    draws at random, e.g. ``autoheri_random``'s edges)."""
    return family_of(name).build(name, features, config, targets, seed)


def label_columns(name: str, schema: Any, data_dir: str) -> List[str]:
    """The extra training columns of model ``name`` (none for most models)."""
    family = family_of(name)
    return list(family.label_columns(name, schema, data_dir)) if family.label_columns else []
