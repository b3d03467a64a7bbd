"""AutoHERI's options (``model: {autoheri: {...}}`` in a YAML config; the flat
``autoheri_*`` keys and ``ctcart_weight`` of earlier releases map here).

Wei et al., "AutoHERI: Automated Hierarchical Representation Integration for Post-Click
Conversion Rate Estimation", CIKM 2021.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.params import check_param
from models.config import FamilyConfig

SEARCH_NAMES = ("joint", "bilevel")
DERIVE_NAMES = ("threshold", "topk")


@dataclass(frozen=True)
class AutoHERIConfig(FamilyConfig):
    """The search, the derivation and the chain's extra loss.

    Args:
        search: ``joint`` (edge logits and weights on the training split) or ``bilevel``
            (weights on train; edge logits on the validation day's first half, one edge step
            every ``bilevel_every`` weight steps).
        search_fraction: the search stage's length, as a fraction of the training run's planned
            steps (``epochs`` x steps per epoch). The default 0.25 keeps search + retrain within
            3x one ESMM run (``benchmarks.train_bench``); on the 4M-row default data 0.5
            searched no better on the validation day (until 2026-12-01 the default was 0.5:
            earlier sweep records ran with it).
        search_epochs: the search stage's length in epochs of the training split (0: use
            ``search_fraction``). Issue 33: at the default fraction the search ran 175 steps on
            the 4M-row data and decided nothing (the gates ended at 0.40-0.53).
        edge_lr: Adam learning rate of the edge logits (constant).
        edge_init: every edge's starting probability.
        temperature: ``p = sigmoid(a / temperature)`` at the start of the search.
        temperature_final: the temperature at the end of the search, reached geometrically
            over the search's planned steps (0, the default, or equal to ``temperature``:
            constant, the earlier behaviour). A falling temperature pushes the gates toward 0 or 1, so that the
            derived network is the searched one (issue 33).
        zero_init_projections: the edges' projections ``P_ij`` start at zero (instead of
            Glorot-random), so that every edge starts as the edge-less chain and adds only
            what its gradient earns (issue 33: random projections under a 0.5 gate fed
            noise into the downstream towers).
        sparsity: weight of the penalty ``sum_ij p_ij`` (the expected edge count) added to the
            search loss.
        bilevel_every: weight steps per edge step in the bi-level search.
        derive: ``threshold`` (keep ``p > threshold``) or ``topk`` (keep the ``top_k`` most
            probable edges).
        threshold, top_k: see ``derive``.
        random_edges: edge count of ``autoheri_random`` (0: ``top_k`` when deriving by top-k;
            set it to the searched set's size otherwise).
        ctcart_weight: weight of the CTCART loss ``CE(click * cart, pCTR * pCART|click)`` of the
            chain (our choice: 1).
    """

    KEY = "autoheri"
    LEGACY = {"ctcart_weight": "ctcart_weight"}  # the other fields: autoheri_<field>
    search: str = "joint"
    search_fraction: float = 0.25
    search_epochs: float = 0.0
    edge_lr: float = 0.01
    edge_init: float = 0.5
    temperature: float = 1.0
    temperature_final: float = 0.0
    zero_init_projections: bool = False
    sparsity: float = 0.0
    bilevel_every: int = 1
    derive: str = "threshold"
    threshold: float = 0.5
    top_k: int = 0
    random_edges: int = 0
    ctcart_weight: float = 1.0

    def __post_init__(self):
        check_param(self.search in SEARCH_NAMES, "autoheri_search",
                    f"one of {', '.join(SEARCH_NAMES)}", self.search)
        check_param(0.0 < self.search_fraction <= 4.0, "autoheri_search_fraction",
                    "in (0, 4]", self.search_fraction)
        check_param(self.edge_lr > 0, "autoheri_edge_lr", "> 0", self.edge_lr)
        check_param(0.0 < self.edge_init < 1.0, "autoheri_edge_init", "in (0, 1)",
                    self.edge_init)
        check_param(self.temperature > 0, "autoheri_temperature", "> 0", self.temperature)
        check_param(self.temperature_final == 0.0
                    or 0 < self.temperature_final <= self.temperature,
                    "autoheri_temperature_final",
                    f"0 (constant) or in (0, temperature={self.temperature}]",
                    self.temperature_final)
        check_param(0.0 <= self.search_epochs <= 50.0, "autoheri_search_epochs",
                    "in [0, 50] (0: use autoheri_search_fraction)", self.search_epochs)
        check_param(isinstance(self.zero_init_projections, bool),
                    "autoheri_zero_init_projections", "true or false",
                    self.zero_init_projections)
        check_param(self.sparsity >= 0, "autoheri_sparsity", ">= 0", self.sparsity)
        check_param(self.bilevel_every >= 1, "autoheri_bilevel_every", ">= 1",
                    self.bilevel_every)
        check_param(self.derive in DERIVE_NAMES, "autoheri_derive",
                    f"one of {', '.join(DERIVE_NAMES)}", self.derive)
        check_param(0.0 < self.threshold < 1.0, "autoheri_threshold", "in (0, 1)",
                    self.threshold)
        check_param(self.top_k >= 0, "autoheri_top_k", ">= 0", self.top_k)
        check_param(self.derive != "topk" or self.top_k >= 1, "autoheri_top_k",
                    ">= 1 when autoheri_derive is topk", self.top_k)
        check_param(self.random_edges >= 0, "autoheri_random_edges", ">= 0", self.random_edges)
        check_param(self.ctcart_weight >= 0, "ctcart_weight", ">= 0", self.ctcart_weight)

    @property
    def end_temperature(self) -> float:
        """The temperature at the end of the search (``temperature`` when constant)."""
        return self.temperature_final or self.temperature

    def settings(self) -> dict:
        """The flat ``autoheri_*`` fields (and the CTCART weight) recorded with an
        architecture, as earlier releases recorded them."""
        return self.flat()
