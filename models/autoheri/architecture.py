"""AutoHERI's search space and its derived architectures: candidate edges, derivation, JSON.

An edge ``click1->purchase0`` feeds hidden layer 1 of the click tower into hidden layer 0 of
the purchase tower. The candidates are every (upstream hidden layer, downstream hidden layer)
pair for every ordered pair of towers along the chain click -> cart -> purchase (Wei et al.,
"AutoHERI: Automated Hierarchical Representation Integration for Post-Click Conversion Rate
Estimation", CIKM 2021, Section 3). A search gives each a probability; the derivation keeps a
subset; ``autoheri_architecture.json`` records both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from preprocessing import columns as C
from common.atomic import atomic_write_text

#: The behaviour chain, upstream first.
CHAIN = (C.CLICK, C.CART, C.PURCHASE)
FORMAT = "extcvr-autoheri-architecture/1"


def chain_tasks(targets: Sequence[str]) -> Tuple[str, ...]:
    """The towers of the chain for a dataset's targets: click -> (cart ->) purchase.

    Raises ValueError when click or purchase is missing (the chain needs both ends).
    """
    tasks = tuple(t for t in CHAIN if t in targets)
    if tasks[:1] != (C.CLICK,) or tasks[-1:] != (C.PURCHASE,):
        raise ValueError(f"AutoHERI needs the targets click and purchase; the data has "
                         f"{list(targets)}")
    return tasks


@dataclass(frozen=True)
class Edge:
    """A candidate connection: hidden layer ``source_layer`` of the ``source`` tower feeds
    hidden layer ``target_layer`` of the downstream ``target`` tower."""

    source: str
    source_layer: int
    target: str
    target_layer: int

    @property
    def name(self) -> str:
        """``click1->purchase0``: the edge's name in JSON, plots and reports."""
        return f"{self.source}{self.source_layer}->{self.target}{self.target_layer}"

    @property
    def layer_name(self) -> str:
        """The name of the edge's projection layer (TensorFlow names take no ``>``)."""
        return f"edge_{self.source}{self.source_layer}_to_{self.target}{self.target_layer}"


def candidate_edges(tasks: Sequence[str], n_layers: int) -> List[Edge]:
    """Every edge from each hidden layer of each upstream tower to each hidden layer of each
    downstream tower, in a fixed order (by target tower, source tower, target layer, source
    layer)."""
    edges = []
    for d, target in enumerate(tasks):
        for source in tasks[:d]:
            for j in range(n_layers):
                for i in range(n_layers):
                    edges.append(Edge(source, i, target, j))
    return edges


def derive_edges(candidates: Sequence[Edge], probabilities: Sequence[float], rule: str,
                 threshold: float = 0.5, top_k: int = 0) -> List[Edge]:
    """The kept edges: ``threshold`` keeps ``p > threshold``; ``topk`` the ``top_k`` most
    probable (ties broken by candidate order). Returned in candidate order."""
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) != len(candidates):
        raise ValueError(f"{len(candidates)} candidate edges but {len(p)} probabilities")
    if rule == "threshold":
        keep = set(np.flatnonzero(p > threshold).tolist())
    elif rule == "topk":
        keep = set(np.argsort(-p, kind="stable")[:top_k].tolist())
    else:
        raise ValueError(f"unknown derivation rule {rule!r}; use threshold or topk")
    return [e for k, e in enumerate(candidates) if k in keep]


def random_edges(candidates: Sequence[Edge], count: int, seed: int) -> List[Edge]:
    """``count`` edges drawn without replacement (seeded), in candidate order: the
    ``autoheri_random`` ablation."""
    if not 0 <= count <= len(candidates):
        raise ValueError(f"autoheri_random_edges must be in [0, {len(candidates)}] "
                         f"(the candidate count); got {count}")
    picked = set(np.random.default_rng(seed).choice(len(candidates), count,
                                                    replace=False).tolist())
    return [e for k, e in enumerate(candidates) if k in picked]


@dataclass
class Architecture:
    """What ``autoheri_architecture.json`` holds.

    Args:
        model: the harness model that built it (``autoheri``, ``autoheri_all``, ...).
        tasks: the chain's towers, upstream first.
        tower_units: hidden units of every tower.
        candidates: every candidate edge.
        kept: the edges of the derived (trained) network.
        probabilities: each candidate's final probability (``None`` without a search).
        logits: each candidate's final edge logit (``None`` without a search).
        settings: the search and derivation settings (``autoheri_*`` of the model config).
        search: facts of the search stage (steps, seconds, final loss).
    """

    model: str
    tasks: Tuple[str, ...]
    tower_units: Tuple[int, ...]
    candidates: List[Edge]
    kept: List[Edge]
    probabilities: Optional[List[float]] = None
    logits: Optional[List[float]] = None
    settings: Dict = field(default_factory=dict)
    search: Dict = field(default_factory=dict)

    def to_dict(self) -> Dict:
        """Plain data, one row per candidate edge with its probability and whether it is kept."""
        kept = {e.name for e in self.kept}
        rows = []
        for k, e in enumerate(self.candidates):
            rows.append({"name": e.name, **asdict(e), "kept": e.name in kept,
                         "probability": None if self.probabilities is None
                         else float(self.probabilities[k]),
                         "logit": None if self.logits is None else float(self.logits[k])})
        return {"format": FORMAT, "model": self.model, "tasks": list(self.tasks),
                "tower_units": list(self.tower_units), "candidates": rows,
                "kept": [e.name for e in self.kept], "settings": dict(self.settings),
                "search": dict(self.search)}

    @classmethod
    def from_dict(cls, raw: Dict, where: str = "architecture") -> "Architecture":
        """Inverse of :meth:`to_dict`; checks the format marker and the kept names."""
        if raw.get("format") != FORMAT:
            raise ValueError(f"{where}: not an AutoHERI architecture (format "
                             f"{raw.get('format')!r}, expected {FORMAT!r})")
        candidates = [Edge(r["source"], int(r["source_layer"]), r["target"],
                           int(r["target_layer"])) for r in raw["candidates"]]
        by_name = {e.name: e for e in candidates}
        unknown = [n for n in raw["kept"] if n not in by_name]
        if unknown:
            raise ValueError(f"{where}: kept edges {unknown} are not candidates")
        probs = [r["probability"] for r in raw["candidates"]]
        logits = [r["logit"] for r in raw["candidates"]]
        return cls(raw["model"], tuple(raw["tasks"]), tuple(raw["tower_units"]), candidates,
                   [by_name[n] for n in raw["kept"]],
                   None if any(p is None for p in probs) else [float(p) for p in probs],
                   None if any(a is None for a in logits) else [float(a) for a in logits],
                   dict(raw.get("settings", {})), dict(raw.get("search", {})))

    def save(self, path: str) -> None:
        """Write the JSON atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str) -> "Architecture":
        """Read a JSON written by :meth:`save`."""
        with open(path) as fh:
            return cls.from_dict(json.load(fh), path)
