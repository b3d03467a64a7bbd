"""Configuration of the external-media funnel simulator: frozen dataclasses with validated fields.

Everything but ``--rows``, ``--seed`` and ``--out`` comes from here; ``load_config`` reads a YAML
or JSON file whose keys mirror these dataclasses (see ``preprocessing/configs/default.yaml``).
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Dict, Tuple

import yaml

from common.params import check_param

MAX_USERS = 10_000_000
MAX_ITEMS = 1_000_000


@dataclass(frozen=True)
class MediaApp:
    """One external media app (a short-video app that shows our ads).

    Args:
        name: display name.
        share: share of all impressions (shares are renormalised).
        ctr_offset: additive CTR logit offset (audience clickiness, ad load).
        cvr_offset: additive logit offset of cart and purchase given click: the app's base
            conversion level, the field-level miscalibration that AdaCalib must fix.
        cvr_trend: change of that conversion logit offset per day, in [-1, 1]. On real external
            media an app's conversion rate drifts from day to day (its traffic mix and the
            e-commerce campaigns change), so a CVR model trained on earlier days is
            miscalibrated per app on later days, which field-level calibration on the most
            recent day (AdaCalib) is meant to fix. On day ``d`` of ``days`` the offset is
            ``cvr_offset + cvr_trend * (d - (days - 1) / 2)``: centred, so ``cvr_offset`` is
            its mean over the days. 0 keeps the app stationary.
        cvr_sharpness_trend: change per day, in [-0.5, 0.5], of the app's conversion
            **sharpness**: on day ``d`` the user/item part of the cart-given-click and
            purchase-given-cart logits (everything but the app's offset) is scaled by
            ``max(0.1, 1 + cvr_sharpness_trend * (d - (days - 1) / 2))`` around its mean over
            the app's impressions (of the block), at the same mean ``exp(logit)``, so that the
            app's conversion level stays about the same. Unlike
            ``cvr_trend`` (a level shift), this changes the *shape* of the app's conversion
            curve over the days (how strongly intent and affinity separate buyers from
            browsers), differently per app: a model trained on earlier days is then
            miscalibrated per app in shape, not only in level (the setting in which AdaCalib's
            per-value functions can beat a per-value offset). 0 (the default) leaves the
            simulator exactly as without it.
        need_click: effect, in [0, 5], of the impression's hidden purchase **need** (a
            per-impression factor that also raises conversion by ``Effects.need_cart`` and
            ``Effects.need_buy``, see ``simulator/funnel.py``) on this app's click logit: how
            selective this app's clicks are. Apps that differ in it make
            ``E[conversion | x, click] - E[conversion | x]`` differ by app, so that a CVR model
            fitted on clicks mis-ranks the entire space (sample-selection bias that costs
            ranking; ``preprocessing/configs/strong_bias.yaml``). 0 (the default) leaves the
            simulator exactly as without it.
        clickbait_mix: probability that a creative shown on this app is of a clickbait type.
        targeting: probability that the ad's category is one of the user's preferred ones.
        max_slot: number of ad slots per feed page on this app (slot ids 0..max_slot-1).
    """

    name: str
    share: float
    ctr_offset: float = 0.0
    cvr_offset: float = 0.0
    cvr_trend: float = 0.0
    cvr_sharpness_trend: float = 0.0
    need_click: float = 0.0
    clickbait_mix: float = 0.2
    targeting: float = 0.3
    max_slot: int = 10

    def __post_init__(self):
        check_param(self.share > 0, "share", "> 0", self.share)
        check_param(math.isfinite(self.cvr_trend) and abs(self.cvr_trend) <= 1, "cvr_trend",
                    "finite and in [-1, 1]", self.cvr_trend)
        check_param(math.isfinite(self.cvr_sharpness_trend)
                    and abs(self.cvr_sharpness_trend) <= 0.5, "cvr_sharpness_trend",
                    "finite and in [-0.5, 0.5]", self.cvr_sharpness_trend)
        check_param(math.isfinite(self.need_click) and 0 <= self.need_click <= 5, "need_click",
                    "finite and in [0, 5]", self.need_click)
        check_param(0 <= self.clickbait_mix <= 1, "clickbait_mix", "in [0, 1]", self.clickbait_mix)
        check_param(0 <= self.targeting <= 1, "targeting", "in [0, 1]", self.targeting)
        check_param(1 <= self.max_slot <= 50, "max_slot", "in [1, 50]", self.max_slot)


def _default_apps() -> Tuple[MediaApp, ...]:
    return (
        MediaApp("shortvideo_a", 0.35, ctr_offset=0.10, cvr_offset=0.0, cvr_trend=0.0,
                 clickbait_mix=0.20, targeting=0.35, max_slot=10),
        MediaApp("shortvideo_b", 0.25, ctr_offset=0.30, cvr_offset=-0.70, cvr_trend=0.10,
                 clickbait_mix=0.45, targeting=0.20, max_slot=12),
        MediaApp("livestream_c", 0.15, ctr_offset=-0.20, cvr_offset=0.80, cvr_trend=-0.08,
                 clickbait_mix=0.10, targeting=0.50, max_slot=6),
        MediaApp("news_feed_d", 0.15, ctr_offset=-0.40, cvr_offset=-0.30, cvr_trend=0.05,
                 clickbait_mix=0.30, targeting=0.25, max_slot=8),
        MediaApp("game_e", 0.10, ctr_offset=0.0, cvr_offset=-1.10, cvr_trend=-0.12,
                 clickbait_mix=0.35, targeting=0.15, max_slot=5),
    )


@dataclass(frozen=True)
class FunnelRates:
    """Target marginal rates. Intercepts are solved on a pilot sample so that they hold.

    Args:
        ctr: mean click probability over impressions.
        cart_given_click: mean p(cart | click) over clicked impressions.
        purchase_given_click: mean p(purchase | click) over clicked impressions (purchase implies
            cart). Ali-CCP has about 0.5-2%; e-commerce ads on external media 1-5%. The
            default is the upper end, so that the default data holds enough conversions for
            seed-stable comparisons (docs/simulator.md, "Sizing the default data");
            ``preprocessing/configs/realistic.yaml`` has Ali-CCP-like rates.
    """

    ctr: float = 0.04
    cart_given_click: float = 0.12
    purchase_given_click: float = 0.05

    def __post_init__(self):
        check_param(0 < self.ctr < 0.5, "ctr", "in (0, 0.5)", self.ctr)
        check_param(0 < self.cart_given_click < 0.9, "cart_given_click", "in (0, 0.9)",
               self.cart_given_click)
        check_param(0 < self.purchase_given_click < self.cart_given_click, "purchase_given_click",
               f"in (0, cart_given_click={self.cart_given_click})", self.purchase_given_click)


@dataclass(frozen=True)
class Effects:
    """Coefficients of the latent-factor model (logit scale). See ``simulator/funnel.py``.

    The ``*_click`` coefficients act on the click logit, ``*_cart`` on p(cart|click) and
    ``*_buy`` on p(purchase|cart). Intent raises all stages; clickiness, clickbait, creative
    appeal and position raise clicks only (clickbait lowers conversion): the selection bias.
    ``need_cart`` and ``need_buy`` are the effects of the impression's hidden purchase need
    (drawn per impression, seen by no feature) on p(cart|click) and p(purchase|cart); its effect
    on clicks is per media app (``MediaApp.need_click``). Both 0 by default.
    ``appeal_quality_corr`` is the correlation of an item's creative appeal (a click factor)
    with its quality (a conversion factor): good products tend to have good creatives, so what
    the abundant clicks teach about an item carries over to its sparse conversions.
    """

    intent_click: float = 0.6
    intent_cart: float = 0.7
    intent_buy: float = 0.5
    clickiness_click: float = 0.6
    affinity_click: float = 0.5
    affinity_cart: float = 0.8
    affinity_buy: float = 0.3
    quality_cart: float = 0.6
    quality_buy: float = 0.8
    price_cart: float = 0.35
    price_buy: float = 0.45
    appeal_click: float = 0.4
    clickbait_click: float = 0.9
    clickbait_conv: float = -0.5
    position_click: float = -0.08
    evening_click: float = 0.15
    evening_conv: float = 0.10
    category_conv_sd: float = 0.5
    appeal_quality_corr: float = 0.7
    need_cart: float = 0.0
    need_buy: float = 0.0

    def __post_init__(self):
        for name in ("need_cart", "need_buy"):
            v = getattr(self, name)
            check_param(math.isfinite(v) and 0 <= v <= 5, name, "finite and in [0, 5]", v)
        check_param(self.category_conv_sd >= 0, "category_conv_sd", ">= 0", self.category_conv_sd)
        check_param(-1.0 < self.appeal_quality_corr < 1.0, "appeal_quality_corr", "in (-1, 1)",
                    self.appeal_quality_corr)


@dataclass(frozen=True)
class MediaSignal:
    """Noise of the media-private features (smaller = more informative).

    Args:
        shopping_noise: noise sd of ``media_shopping_minutes`` around the user's intent.
        ad_click_noise: noise sd of ``media_ad_click_rate`` around the user's clickiness.
        interest_accuracy: probability that ``media_interest_cat`` is the user's top category.
    """

    shopping_noise: float = 0.6
    ad_click_noise: float = 0.5
    interest_accuracy: float = 0.6

    def __post_init__(self):
        check_param(self.shopping_noise >= 0, "shopping_noise", ">= 0", self.shopping_noise)
        check_param(self.ad_click_noise >= 0, "ad_click_noise", ">= 0", self.ad_click_noise)
        check_param(0 <= self.interest_accuracy <= 1, "interest_accuracy", "in [0, 1]",
               self.interest_accuracy)


@dataclass(frozen=True)
class Interaction:
    """A hidden, nonlinear user x item match ``g`` in the funnel logits (world ``deep_funnel``,
    docs/worlds.md; ``simulator/mechanisms.py``). 0 everywhere (the default) leaves the
    simulator exactly as without it.

    Args:
        click, cart, buy: weight of the standardised ``g`` on the click, cart-given-click and
            purchase-given-cart logits, each in [0, 5].
        hidden: hidden units of the random two-layer network that defines ``g``.
    """

    click: float = 0.0
    cart: float = 0.0
    buy: float = 0.0
    hidden: int = 16

    def __post_init__(self):
        for name in ("click", "cart", "buy"):
            v = getattr(self, name)
            check_param(math.isfinite(v) and 0 <= v <= 5, name, "finite and in [0, 5]", v)
        check_param(1 <= self.hidden <= 256, "hidden", "in [1, 256]", self.hidden)

    @property
    def on(self) -> bool:
        """Whether ``g`` enters any logit."""
        return self.click != 0.0 or self.cart != 0.0 or self.buy != 0.0


@dataclass(frozen=True)
class Segments:
    """Click-only segment offsets and segment-cell conversion effects (world
    ``covariate_shift``, docs/worlds.md; ``simulator/mechanisms.py``). 0 (the default) leaves
    the simulator exactly as without them.

    Args:
        click_spread: sd of the click logit offset of each user segment (purchase power x city
            tier) and of each category (summed, each with sd ``click_spread / sqrt(2)``): the
            clicks concentrate on some segments.
        buy_spread: sd of the purchase-given-cart logit offset of each cell (user segment x
            category), drawn independently of the click offsets: what is learned on densely
            clicked cells does not carry over to the thin ones.
    """

    click_spread: float = 0.0
    buy_spread: float = 0.0

    def __post_init__(self):
        for name in ("click_spread", "buy_spread"):
            v = getattr(self, name)
            check_param(math.isfinite(v) and 0 <= v <= 5, name, "finite and in [0, 5]", v)

    @property
    def on(self) -> bool:
        """Whether any segment effect is drawn."""
        return self.click_spread != 0.0 or self.buy_spread != 0.0


@dataclass(frozen=True)
class Placements:
    """A long-tail placement field written as ``slot_id`` (world ``long_tail_slots``,
    docs/worlds.md; ``simulator/mechanisms.py``). ``count`` 0 (the default) leaves the
    simulator exactly as without it.

    Args:
        count: number of placements (``slot_id`` values ``0..count-1``); each app draws its
            impressions' placement from a Zipf law over its own ranking of them. The position
            on the page (the click effect of the default ``slot_id``) stays hidden.
        zipf: Zipf exponent of the placement traffic (> 0, != 1).
        level_spread: sd of each placement's conversion logit offset (stationary; the
            cart logit gets half of it, as it gets half of the app's offset).
        sharpness_spread: sd of the log of each placement's conversion sharpness: the cart
            and purchase logits are scaled by ``exp(sharpness_spread * N(0, 1))`` around their
            mean over the intercept pilot sample.
        drift_share: share of the placements whose level also drifts over the days.
        drift_sd: sd of the drifting placements' level change per day.
    """

    count: int = 0
    zipf: float = 1.1
    level_spread: float = 0.0
    sharpness_spread: float = 0.0
    drift_share: float = 0.0
    drift_sd: float = 0.0

    def __post_init__(self):
        check_param(self.count == 0 or 2 <= self.count <= 100_000, "count",
                    "0 (off) or in [2, 100000]", self.count)
        check_param(self.zipf > 0 and abs(self.zipf - 1.0) > 1e-6, "zipf", "> 0 and != 1",
                    self.zipf)
        for name in ("level_spread", "sharpness_spread", "drift_sd"):
            v = getattr(self, name)
            check_param(math.isfinite(v) and 0 <= v <= 3, name, "finite and in [0, 3]", v)
        check_param(0 <= self.drift_share <= 1, "drift_share", "in [0, 1]", self.drift_share)

    @property
    def on(self) -> bool:
        """Whether ``slot_id`` is the placement field."""
        return self.count > 0


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that shapes the simulated external-media ad logs.

    Args:
        n_users: user id space (Zipf-distributed impressions), at most 10M.
        n_items: item/ad id space, at most 1M.
        n_categories, n_shops, n_brands: catalogue sizes.
        user_zipf, item_zipf: Zipf exponents (> 0, != 1) of the id popularity.
        days: number of days; one output file per day.
        rows_per_block: rows per RNG block and Parquet row group; bounds peak memory.
        pilot_rows: rows of the pilot sample used to solve the funnel intercepts.
        apps: the media apps (at least 4).
        rates: target funnel rates.
        effects: latent-factor coefficients.
        media: informativeness of the media-private features.
        interaction: the hidden user x item match of world ``deep_funnel`` (off by default).
        segments: the segment effects of world ``covariate_shift`` (off by default).
        placements: the placement field of world ``long_tail_slots`` (off by default).
    """

    n_users: int = 1_000_000
    n_items: int = 100_000
    n_categories: int = 60
    n_shops: int = 5_000
    n_brands: int = 2_000
    user_zipf: float = 1.05
    item_zipf: float = 1.10
    days: int = 7
    rows_per_block: int = 131_072
    pilot_rows: int = 200_000
    apps: Tuple[MediaApp, ...] = field(default_factory=_default_apps)
    rates: FunnelRates = field(default_factory=FunnelRates)
    effects: Effects = field(default_factory=Effects)
    media: MediaSignal = field(default_factory=MediaSignal)
    interaction: Interaction = field(default_factory=Interaction)
    segments: Segments = field(default_factory=Segments)
    placements: Placements = field(default_factory=Placements)

    def __post_init__(self):
        check_param(1 <= self.n_users <= MAX_USERS, "n_users", f"in [1, {MAX_USERS}]", self.n_users)
        check_param(1 <= self.n_items <= MAX_ITEMS, "n_items", f"in [1, {MAX_ITEMS}]", self.n_items)
        check_param(2 <= self.n_categories <= 10_000, "n_categories", "in [2, 10000]",
               self.n_categories)
        check_param(self.n_categories <= self.n_items, "n_categories", f"<= n_items={self.n_items}",
               self.n_categories)
        check_param(self.n_shops >= 1, "n_shops", ">= 1", self.n_shops)
        check_param(self.n_brands >= 1, "n_brands", ">= 1", self.n_brands)
        for name in ("user_zipf", "item_zipf"):
            v = getattr(self, name)
            check_param(v > 0 and abs(v - 1.0) > 1e-6, name, "> 0 and != 1", v)
        check_param(1 <= self.days <= 366, "days", "in [1, 366]", self.days)
        check_param(1024 <= self.rows_per_block <= 4_194_304, "rows_per_block",
               "in [1024, 4194304]", self.rows_per_block)
        check_param(self.pilot_rows >= 10_000, "pilot_rows", ">= 10000", self.pilot_rows)
        check_param(len(self.apps) >= 4, "apps", "a list of at least 4 media apps", len(self.apps))
        names = [a.name for a in self.apps]
        check_param(len(set(names)) == len(names), "apps", "uniquely named", names)

    def to_dict(self) -> Dict[str, Any]:
        """The resolved configuration as plain data (written next to the output)."""
        return asdict(self)


#: The nested sections of a generator config file and their dataclasses.
SECTIONS = {"rates": FunnelRates, "effects": Effects, "media": MediaSignal,
            "interaction": Interaction, "segments": Segments, "placements": Placements}


def _build(cls, raw: Dict[str, Any], where: str):
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    extra = sorted(set(raw) - set(known))
    if extra:
        raise ValueError(f"{where}: unknown keys {extra}; known keys are {sorted(known)}")
    missing = sorted(k for k, f in known.items() if k not in raw
                     and f.default is MISSING and f.default_factory is MISSING)
    if missing:
        raise ValueError(f"{where}: missing required keys {missing}")
    kwargs = {}
    for key, value in raw.items():
        if key == "apps":
            if not isinstance(value, list):
                raise ValueError(f"{where}.apps: expected a list of apps")
            kwargs[key] = tuple(_build(MediaApp, a, f"{where}.apps[{i}]")
                                for i, a in enumerate(value))
        elif key in SECTIONS:
            kwargs[key] = _build(SECTIONS[key], value, f"{where}.{key}")
        else:
            if (known[key].type in ("int", "float")
                    and (isinstance(value, bool) or not isinstance(value, (int, float)))):
                raise ValueError(f"The '{key}' parameter ({where}) must be a number. "
                                 f"Got {value!r} instead.")
            kwargs[key] = value
    return cls(**kwargs)


def config_from_dict(raw: Dict[str, Any], where: str = "config") -> GeneratorConfig:
    """Build a validated ``GeneratorConfig`` from plain data (unknown keys are errors)."""
    return _build(GeneratorConfig, raw or {}, where)


def load_config(path: str | None) -> GeneratorConfig:
    """Read a YAML or JSON config file; ``None`` gives the defaults."""
    if path is None:
        return GeneratorConfig()
    with open(path) as fh:
        text = fh.read()
    try:
        raw = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot parse config ({e})") from e
    return config_from_dict(raw or {}, where=path)

