"""``HugeCTRESMMConfig``: the architecture and training settings of the HugeCTR ESMM model.

``python -m models.hugectr --config FILE`` reads a flat YAML mapping of these fields; unknown
keys and invalid values are errors that name the file and the field. The defaults follow the
TensorFlow models' defaults (``models/config.py``: embedding width 16, towers 128x64x32, batch
4096, learning rate 2e-3, one epoch, CTCVR loss weight 3) so that the two paths train the same
shape of model; what HugeCTR cannot express the same way is listed in ``models/hugectr/README.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional, Tuple

import yaml

from common.params import check_param

#: HugeCTR 23.08 ``hugectr.Update_t`` members (``LazyGlobal`` is Adam only; python_interface.md).
UPDATE_TYPES = ("Local", "Global", "LazyGlobal")


@dataclass(frozen=True)
class HugeCTRESMMConfig:
    """Settings of the generated HugeCTR ESMM model and of its training run.

    Args:
        embedding_vec_size: width of the shared sparse embedding (one vector per slot).
        tower_units: hidden ReLU units of the CTR tower and of the CVR tower.
        dropout: dropout rate after each hidden layer (0 = no Dropout layers).
        ctcvr_weight: weight of the CTCVR loss in ``model.compile(loss_weights=...)``; the
            click loss has weight 1.
        batch_size: training batch (``CreateSolver(batchsize=...)``, global across GPUs).
        batch_size_eval: evaluation batch (``CreateSolver(batchsize_eval=...)``).
        learning_rate: Adam learning rate (``CreateSolver(lr=...)``, fixed policy).
        adam_epsilon: Adam epsilon (``CreateOptimizer(epsilon=...)``; TensorFlow path: 1e-8).
        update_type: embedding update of the optimizer: ``LazyGlobal`` (the rows of the batch
            only, HugeCTR's lazy Adam, the counterpart of the TF path's LazyAdam), ``Local`` or
            ``Global``.
        epochs: passes over the training split (epoch mode: ``repeat_dataset=False``).
        max_iter: iterations instead of epochs (non-epoch mode: ``repeat_dataset=True``);
            exactly one of ``epochs`` and ``max_iter`` is positive.
        display: iterations between loss lines in the log (at most the run's iterations).
        eval_interval: iterations between evaluations on the validation split (at most the
            run's iterations, so that a short run evaluates at its end).
        seed: ``CreateSolver(seed=...)``.
        gpus: GPU ids of the single node (``vvgpu=[list(gpus)]``).
        model_name: ``CreateSolver(model_name=...)``: written into the graph JSON and used by
            HugeCTR's inference API and as the prefix of the saved weights.
    """

    embedding_vec_size: int = 16
    tower_units: Tuple[int, ...] = (128, 64, 32)
    dropout: float = 0.0
    ctcvr_weight: float = 3.0
    batch_size: int = 4096
    batch_size_eval: int = 16384
    learning_rate: float = 2e-3
    adam_epsilon: float = 1e-8
    update_type: str = "LazyGlobal"
    epochs: int = 1
    max_iter: int = 0
    display: int = 200
    eval_interval: int = 1000
    seed: int = 0
    gpus: Tuple[int, ...] = (0,)
    model_name: str = "esmm"

    def __post_init__(self):
        object.__setattr__(self, "tower_units", tuple(self.tower_units))
        object.__setattr__(self, "gpus", tuple(self.gpus))
        check_param(1 <= self.embedding_vec_size <= 1024, "embedding_vec_size", "in [1, 1024]",
                    self.embedding_vec_size)
        check_param(len(self.tower_units) >= 1
                    and all(isinstance(u, int) and u >= 1 for u in self.tower_units),
                    "tower_units", "a non-empty list of positive ints", self.tower_units)
        check_param(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)
        check_param(self.ctcvr_weight > 0, "ctcvr_weight", "> 0", self.ctcvr_weight)
        check_param(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        check_param(self.batch_size_eval >= 1, "batch_size_eval", ">= 1", self.batch_size_eval)
        check_param(self.learning_rate > 0, "learning_rate", "> 0", self.learning_rate)
        check_param(self.adam_epsilon > 0, "adam_epsilon", "> 0", self.adam_epsilon)
        check_param(self.update_type in UPDATE_TYPES, "update_type",
                    f"one of {', '.join(UPDATE_TYPES)}", self.update_type)
        check_param(self.epochs >= 0, "epochs", ">= 0", self.epochs)
        check_param(self.max_iter >= 0, "max_iter", ">= 0", self.max_iter)
        check_param((self.epochs > 0) != (self.max_iter > 0), "epochs",
                    "> 0 with max_iter 0 (epoch mode), or 0 with max_iter > 0 (iteration mode)",
                    self.epochs)
        check_param(self.display >= 1, "display", ">= 1", self.display)
        check_param(self.eval_interval >= 1, "eval_interval", ">= 1", self.eval_interval)
        check_param(self.seed >= 0, "seed", ">= 0", self.seed)
        check_param(len(self.gpus) >= 1 and len(set(self.gpus)) == len(self.gpus)
                    and all(isinstance(g, int) and g >= 0 for g in self.gpus),
                    "gpus", "a non-empty list of distinct GPU ids", self.gpus)
        check_param(bool(self.model_name) and self.model_name.replace("_", "").isalnum(),
                    "model_name", "a non-empty name of letters, digits and _", self.model_name)

    @property
    def epoch_mode(self) -> bool:
        """True when training runs ``epochs`` passes (``repeat_dataset=False``)."""
        return self.epochs > 0

    def iterations(self, train_rows: int) -> int:
        """Training iterations: ``max_iter``, or ``epochs`` x batches per epoch."""
        if not self.epoch_mode:
            return self.max_iter
        return self.epochs * max(1, -(-train_rows // self.batch_size))

    def intervals(self, train_rows: int) -> Tuple[int, int]:
        """``(display, eval_interval)`` of ``model.fit``, each at most the run's iterations
        (a larger interval would never log or evaluate in a short run)."""
        total = max(1, self.iterations(train_rows))
        return min(self.display, total), min(self.eval_interval, total)

    def to_dict(self) -> Dict[str, Any]:
        """Plain-data form (written into ``hugectr_data.json``)."""
        return asdict(self)


def load_config(path: Optional[str]) -> HugeCTRESMMConfig:
    """Read a flat YAML mapping of ``HugeCTRESMMConfig`` fields; ``None`` gives the defaults.

    Raises:
        ValueError: unknown keys, a non-mapping file, or an invalid value (the message names the
            file and the field).
    """
    if path is None:
        return HugeCTRESMMConfig()
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of HugeCTRESMMConfig fields, got "
                         f"{type(raw).__name__}")
    known = {f.name for f in fields(HugeCTRESMMConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known keys are {sorted(known)}")
    try:
        return HugeCTRESMMConfig(**raw)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None
