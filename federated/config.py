"""Configuration of a federated run: one YAML file per party, read into frozen dataclasses.

A party's file::

    party: media                 # or advertiser
    data: DIR/media              # its own files (python -m federated.split)
    out: DIR/runs/media          # its checkpoints, exports and report
    certs: DIR/certs/media       # this party's own directory: ca.pem, <party>.pem, <party>.key
                                 # (python -m federated.certs writes one per party)
    address: 127.0.0.1:5701      # the advertiser listens here, the media connects to it; the
                                 # default, a fixed port, finds a restarted advertiser again
                                 # (port 0: any free port, written to OUT/port; not after a
                                 # restart)
    seed: 0                      # this party's weight initialisation
    split:                       # what both parties must agree on (SplitConfig)
      width: 8
      wire_dtype: float32
    model: {...}                 # models.config.ModelConfig (the top model: advertiser)
    train: {...}                 # models.config.TrainConfig (both: batch size, rate, epochs)
    peer_timeout_s: 300          # how long a party waits for a gone peer before it gives up
    call_timeout_s: 120
    psi_max_peer_rows: 50000000  # advertiser: the most ids the media may announce for a PSI
                                 # (null: no limit)

The ``split`` section and the train section's batch size, epochs and checkpoint interval are
compared at the handshake: a party whose settings differ is refused with the differing keys.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Optional, Tuple

import yaml

from common.params import dataclass_from_dict as _from_dict
from federated.privacy import DPConfig, GradientDefenceConfig
from models.config import (ModelConfig, TrainConfig, model_config_from_dict,
                           train_config_from_dict)

ROLES = ("media", "advertiser")
WIRE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class SplitConfig:
    """What both parties of a split training must agree on.

    Args:
        model: the advertiser's harness model (``esmm``; any of ``models.registry.model_names()``
            that trains on the funnel labels).
        width: the media embedding's width per sample (8 or 16 in the issue; any >= 1).
        wire_dtype: the embedding's and gradient's dtype on the wire (``float32``/``float16``).
        bottom_units: hidden units of the media bottom network.
        shuffle_seed: the shared seed of the training order (each party derives the order from
            it and the PSI result; a per-batch digest check catches a difference).
        dp: the forward embeddings' differential privacy (``federated.privacy.DPConfig``).
        gradient_defence: the returned gradients' perturbation
            (``federated.privacy.GradientDefenceConfig``).
    """

    model: str = "esmm"
    width: int = 8
    wire_dtype: str = "float32"
    bottom_units: Tuple[int, ...] = (64,)
    shuffle_seed: int = 0
    dp: DPConfig = field(default_factory=DPConfig)
    gradient_defence: GradientDefenceConfig = field(default_factory=GradientDefenceConfig)

    def __post_init__(self):
        from models.registry import model_names, pseudo_labelled_names
        if self.model not in model_names() or self.model in pseudo_labelled_names():
            raise ValueError(f"split model must be a harness model trained on the funnel "
                             f"labels, got {self.model!r}")
        if self.width < 1:
            raise ValueError(f"split width must be >= 1, got {self.width}")
        if self.wire_dtype not in WIRE_DTYPES:
            raise ValueError(f"split wire_dtype must be one of {WIRE_DTYPES}, "
                             f"got {self.wire_dtype!r}")
        object.__setattr__(self, "bottom_units", tuple(int(u) for u in self.bottom_units))
        if not isinstance(self.dp, DPConfig):
            object.__setattr__(self, "dp", _from_dict(DPConfig, self.dp, "dp"))
        if not isinstance(self.gradient_defence, GradientDefenceConfig):
            object.__setattr__(self, "gradient_defence", _from_dict(
                GradientDefenceConfig, self.gradient_defence, "gradient_defence"))


@dataclass(frozen=True)
class PartyConfig:
    """One party's run (see the module docstring for the file)."""

    party: str
    data: str
    out: str
    certs: str
    address: str = "127.0.0.1:5701"
    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    peer_timeout_s: float = 300.0
    call_timeout_s: float = 120.0
    psi_max_peer_rows: Optional[int] = 50_000_000

    def __post_init__(self):
        if self.party not in ROLES:
            raise ValueError(f"party must be one of {ROLES}, got {self.party!r}")
        if self.peer_timeout_s <= 0 or self.call_timeout_s <= 0:
            raise ValueError("peer_timeout_s and call_timeout_s must be > 0")
        if self.psi_max_peer_rows is not None and self.psi_max_peer_rows < 0:
            raise ValueError(f"psi_max_peer_rows must be >= 0 or null, "
                             f"got {self.psi_max_peer_rows}")
        if ":" not in self.address:
            raise ValueError(f"address must be HOST:PORT, got {self.address!r}")

    @classmethod
    def load(cls, path: str) -> "PartyConfig":
        """Read a party's YAML file; unknown keys and invalid values name the file."""
        with open(path) as fh:
            raw = yaml.safe_load(fh) or {}
        return cls.from_dict(raw, path)

    @classmethod
    def load_for(cls, path: str, party: str) -> "PartyConfig":
        """:meth:`load`, refusing a file written for the other party."""
        config = cls.load(path)
        if config.party != party:
            raise ValueError(f"{path}: party is {config.party!r}, not {party!r}")
        return config

    @classmethod
    def from_dict(cls, raw: Dict[str, Any], where: str = "config") -> "PartyConfig":
        """Build from plain data (what :meth:`to_dict` and the YAML file hold)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
        raw = dict(raw)
        try:  # a wrong type (TypeError) is named with its file too
            raw["split"] = _from_dict(SplitConfig, raw.get("split"), f"{where}: split")
            raw["model"] = model_config_from_dict(raw.get("model"), f"{where}: model")
            raw["train"] = train_config_from_dict(raw.get("train"), f"{where}: train")
            return cls(**raw)
        except TypeError as e:
            raise ValueError(f"{where}: {e}") from None
        except ValueError as e:
            raise e if str(e).startswith(where) else ValueError(f"{where}: {e}") from None

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (JSON/YAML-ready); the model config in its flat form
        (``models.config.ModelConfig.flat``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(split=asdict(self.split), model=self.model.flat(), train=asdict(self.train))
        return json.loads(json.dumps(out))

    def save(self, path: str) -> None:
        """Write the YAML file :meth:`load` reads."""
        from common.atomic import atomic_write_text
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def agreement(config: PartyConfig) -> Dict[str, Any]:
    """The settings both parties must share (compared at the handshake). The shuffle seed is
    left out on purpose: the per-batch digest check is what catches a differing order."""
    split = asdict(config.split)
    split.pop("shuffle_seed")
    return json.loads(json.dumps({
        "split": split, "batch_size": config.train.batch_size, "epochs": config.train.epochs,
        "checkpoint_every": config.train.checkpoint_every,
        "max_steps": config.train.max_steps}))


def differing(mine: Dict[str, Any], theirs: Dict[str, Any], prefix: str = "") -> list:
    """Dotted keys whose values differ between two nested dicts."""
    out = []
    for k in sorted(set(mine) | set(theirs)):
        a, b = mine.get(k), theirs.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differing(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out
