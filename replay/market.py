"""The market of the replay: competing prices, drawn outcomes and the arrival order of one day.

Market model (ours; documented in ``replay/README.md``): the highest competing bid on
impression ``i`` is lognormal around a blend of the impression's true value to the advertiser
and its media app's mean value,

    price_i = median_ratio * v_i ** k * vbar_app(i) ** (1 - k) * exp(spread_app(i) * z_i),
    v_i = p_click_i * p_purchase_given_click_i * target_cpa,    z_i ~ N(0, 1) i.i.d.,

where ``vbar_app`` is the mean of ``v`` over the app's impressions of the day and ``k``
(``competitor_knowledge``) is how much the other advertisers know about the impression itself:
at 1 they price it the way an oracle would (with an error of size ``spread``, set per media
app), at 0 they only know the app's going rate. The default, 1, is the market the issue
describes (lognormal around the true eCPM); lower values need a higher ``median_ratio`` to keep
the target CPA within reach of the bid multiplier (``replay/README.md``).

Outcomes are drawn once per impression from the simulator's true probabilities
(``click ~ Bernoulli(p_click)``, ``conversion ~ click x Bernoulli(p_purchase_given_click)``)
and impressions arrive in one random order; all three come from ``seed`` and the split's name,
so every bidder replayed with one seed meets the same world.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

import numpy as np

from common.params import check_param


@dataclass(frozen=True)
class MarketConfig:
    """The competing-bid model.

    Args:
        spread: the lognormal sigma of the competing price around the true value, every app
            without its own entry in ``spread_by_app``.
        spread_by_app: sigma per media app (the processed ``app_id`` code).
        median_ratio: the median competing price over its centre ``v**k vbar**(1-k)``.
        competitor_knowledge: ``k`` in [0, 1], the weight of the impression's own true value in
            the competing price (the rest is its app's mean value).
        seed: the world's seed (prices, outcomes, arrival order).
    """

    spread: float = 0.5
    spread_by_app: Mapping[int, float] = field(default_factory=dict)
    median_ratio: float = 1.0
    competitor_knowledge: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name, s in [("spread", self.spread)] + [
                (f"spread_by_app[{k}]", v) for k, v in dict(self.spread_by_app).items()]:
            check_param(isinstance(s, (int, float)) and math.isfinite(s) and 0.0 <= s <= 5.0,
                        name, "a number in [0, 5]", s)
        check_param(math.isfinite(self.median_ratio) and self.median_ratio > 0, "median_ratio",
                    "a finite number > 0", self.median_ratio)
        check_param(0.0 <= self.competitor_knowledge <= 1.0, "competitor_knowledge", "in [0, 1]",
                    self.competitor_knowledge)
        check_param(isinstance(self.seed, int) and self.seed >= 0, "seed", "an integer >= 0",
                    self.seed)

    def spreads(self, app: np.ndarray) -> np.ndarray:
        """The sigma of every impression, from its app."""
        sigma = np.full(len(app), float(self.spread))
        for code, s in dict(self.spread_by_app).items():
            sigma[app == int(code)] = float(s)
        return sigma


@dataclass
class World:
    """One day as every bidder meets it (arrays of one length, in file order)."""

    p_click: np.ndarray
    p_purchase_given_click: np.ndarray
    app: np.ndarray
    price: np.ndarray            # the highest competing bid, per impression, in currency
    click: np.ndarray            # drawn
    conversion: np.ndarray       # drawn
    order: np.ndarray            # arrival order: a permutation of the rows
    target_cpa: float

    @property
    def p_conversion(self) -> np.ndarray:
        """The true probability of a conversion per impression (pCTR x pCVR)."""
        return self.p_click * self.p_purchase_given_click

    @property
    def value(self) -> np.ndarray:
        """The true value of each impression to the advertiser: p_conversion x target CPA."""
        return self.p_conversion * self.target_cpa

    def __len__(self) -> int:
        return len(self.price)


def split_seed(seed: int, split: str) -> np.random.SeedSequence:
    """The seed sequence of one split's world: the same ``(seed, split)``, the same world."""
    return np.random.SeedSequence([int(seed), zlib.crc32(split.encode())])


def make_world(p_click: np.ndarray, p_purchase_given_click: np.ndarray, app: np.ndarray,
               target_cpa: float, market: MarketConfig, split: str = "test") -> World:
    """Draw the competing prices, the outcomes and the arrival order of one day."""
    check_param(math.isfinite(target_cpa) and target_cpa > 0, "target_cpa", "a finite number > 0",
                target_cpa)
    pc = np.asarray(p_click, dtype=np.float64)
    pp = np.asarray(p_purchase_given_click, dtype=np.float64)
    app = np.asarray(app, dtype=np.int64)
    n = len(pc)
    for name, arr in (("p_click", pc), ("p_purchase_given_click", pp)):
        bad = int((~np.isfinite(arr) | (arr < 0) | (arr > 1)).sum())
        if bad:
            raise ValueError(f"{name}: {bad} of {n} rows are not probabilities in [0, 1]")
    if len(pp) != n or len(app) != n:
        raise ValueError(f"p_click, p_purchase_given_click and app_id differ in length: "
                         f"{n}, {len(pp)}, {len(app)}")
    rng = np.random.default_rng(split_seed(market.seed, split))
    z = rng.standard_normal(n)
    u_click = rng.random(n)
    u_conv = rng.random(n)
    order = rng.permutation(n)
    value = pc * pp * target_cpa
    k = market.competitor_knowledge
    centre = value
    if k < 1.0:   # the app's mean value enters the price only then
        _, inverse = np.unique(app, return_inverse=True)
        app_mean = (np.bincount(inverse, weights=value) / np.bincount(inverse))[inverse]
        centre = value ** k * app_mean ** (1.0 - k)
    price = centre * market.median_ratio * np.exp(market.spreads(app) * z)
    click = u_click < pc
    return World(p_click=pc, p_purchase_given_click=pp, app=app, price=price, click=click,
                 conversion=click & (u_conv < pp), order=order, target_cpa=float(target_cpa))


def parse_spread_by_app(text: Optional[str]) -> Dict[int, float]:
    """``"0=0.3,4=0.8"`` -> ``{0: 0.3, 4: 0.8}`` (``ValueError`` naming the bad item)."""
    out: Dict[int, float] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            code, s = item.split("=")
            out[int(code)] = float(s)
        except ValueError as e:
            raise ValueError(f"--spread-by-app: {item!r} is not APP_CODE=SIGMA") from e
    return out
