"""Users, items and categories of the simulator, each a pure function of (seed, id).

Hidden latent factors (never written as features):
- user intent ``z`` (raises click, cart and purchase), clickiness ``c`` (raises clicks only),
  price sensitivity ``s``, engagement ``e``, a 4-d taste vector, three preferred categories;
- item quality ``q`` (raises conversion), creative appeal ``a`` (raises clicks only), a 4-d
  taste vector, and a price relative to its category; appeal correlates with quality by
  ``effects.appeal_quality_corr``.

Observed features are noisy views of them:
- advertiser side (the shop app's CRM): age, gender, city tier, purchase power, recent
  categories (multi-hot);
- media side (only the media app has them, columns ``media_*``): watch minutes, live-shopping
  minutes (a view of intent), active days, ad click rate (a view of clickiness), interest category.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from preprocessing.simulator.config import GeneratorConfig
from preprocessing.simulator.hashing import (AffinePermutation, hash_normal, hash_uniform,
                                             zipf_rank)

TASTE_DIM = 4
N_PREFERRED = 3
MAX_RECENT = 5
CATEGORY_ZIPF = 0.9


def _quantize(x: np.ndarray, n_levels: int) -> np.ndarray:
    """Map a standard-normal-ish score to levels 1..n_levels by equal-probability cut points."""
    from scipy.special import ndtr
    return np.clip((ndtr(x) * n_levels).astype(np.int64) + 1, 1, n_levels)


@dataclass
class UserBlock:
    """Latent factors and features of a batch of users (aligned with the ids passed in)."""

    intent: np.ndarray
    clickiness: np.ndarray
    price_sensitivity: np.ndarray
    taste: np.ndarray          # (n, TASTE_DIM)
    preferred: np.ndarray      # (n, N_PREFERRED) category ids
    features: Dict[str, np.ndarray]
    recent_cats: np.ndarray    # (n, MAX_RECENT) category ids, -1 = empty slot


class UserPopulation:
    """All users: ``n_users`` ids whose attributes are hashed from the seed."""

    def __init__(self, config: GeneratorConfig, seed: int):
        self.config = config
        self.seed = seed

    def lookup(self, ids: np.ndarray) -> UserBlock:
        """Latent factors and features of the users ``ids``."""
        cfg, seed = self.config, self.seed
        z = hash_normal(ids, seed, "user.intent")
        c = hash_normal(ids, seed, "user.clickiness")
        s = hash_normal(ids, seed, "user.price_sensitivity")
        e = 0.5 * z + np.sqrt(0.75) * hash_normal(ids, seed, "user.engagement")
        taste = np.stack([hash_normal(ids, seed, f"user.taste{k}") for k in range(TASTE_DIM)], 1)
        preferred = np.stack(
            [zipf_rank(hash_uniform(ids, seed, f"user.pref{k}"), cfg.n_categories, CATEGORY_ZIPF)
             for k in range(N_PREFERRED)], 1)

        feats: Dict[str, np.ndarray] = {}
        feats["user_age"] = _quantize(0.3 * z + hash_normal(ids, seed, "user.age"), 7)
        feats["user_gender"] = (hash_uniform(ids, seed, "user.gender") * 3).astype(np.int64)
        feats["user_city_tier"] = _quantize(-0.5 * s + hash_normal(ids, seed, "user.city"), 5)
        feats["user_purchase_power"] = _quantize(
            0.35 * z - 0.35 * s + 0.85 * hash_normal(ids, seed, "user.power"), 8)

        media = cfg.media
        noise_shop = hash_normal(ids, seed, "media.shopping")
        feats["media_shopping_minutes"] = np.exp(
            1.0 + 0.8 * (z + media.shopping_noise * noise_shop)).astype(np.float32)
        noise_click = hash_normal(ids, seed, "media.adclick")
        feats["media_ad_click_rate"] = (
            1.0 / (1.0 + np.exp(3.0 - 0.8 * (c + media.ad_click_noise * noise_click)))
        ).astype(np.float32)
        watch = np.exp(3.0 + 0.7 * e + 0.3 * hash_normal(ids, seed, "media.watch"))
        # The media app has no watch history for about 5% of users: a real missing value.
        watch[hash_uniform(ids, seed, "media.watch.missing") < 0.05] = np.nan
        feats["media_watch_minutes"] = watch.astype(np.float32)
        feats["media_active_days"] = np.clip(
            np.round(15 + 6 * e + 3 * hash_normal(ids, seed, "media.days")), 0, 30
        ).astype(np.float32)
        accurate = hash_uniform(ids, seed, "media.interest.acc") < media.interest_accuracy
        random_cat = (hash_uniform(ids, seed, "media.interest.rand")
                      * cfg.n_categories).astype(np.int64)
        feats["media_interest_cat"] = np.where(accurate, preferred[:, 0], random_cat)

        # Recent categories on the shop app: each preferred one with p=0.6, plus up to two
        # random ones; empty slots are -1 and dropped when the list column is built.
        recent = np.full((len(ids), MAX_RECENT), -1, dtype=np.int64)
        for k in range(N_PREFERRED):
            keep = hash_uniform(ids, seed, f"user.recent.keep{k}") < 0.6
            recent[:, k] = np.where(keep, preferred[:, k], -1)
        for k in range(N_PREFERRED, MAX_RECENT):
            keep = hash_uniform(ids, seed, f"user.recent.keep{k}") < 0.5
            rnd = (hash_uniform(ids, seed, f"user.recent.rand{k}") * cfg.n_categories)
            recent[:, k] = np.where(keep, rnd.astype(np.int64), -1)
        # At least one entry: fall back to the top preferred category.
        empty = (recent < 0).all(1)
        recent[empty, 0] = preferred[empty, 0]
        return UserBlock(z, c, s, taste, preferred, feats, recent)


@dataclass
class ItemBlock:
    """Latent factors and features of a batch of items."""

    quality: np.ndarray
    appeal: np.ndarray
    relative_price: np.ndarray
    taste: np.ndarray
    category: np.ndarray
    features: Dict[str, np.ndarray]


class ItemCatalog:
    """Items laid out category-major: category ``k`` owns ids ``[offsets[k], offsets[k+1])``.

    Category sizes follow a Zipf law, so that targeting an impression at a category and then
    drawing a Zipf-popular item inside it needs only the ``n_categories + 1`` offsets in memory.
    """

    def __init__(self, config: GeneratorConfig, seed: int):
        self.config = config
        self.seed = seed
        k = config.n_categories
        weights = (np.arange(k) + 1.0) ** -CATEGORY_ZIPF
        extra = np.floor(weights / weights.sum() * (config.n_items - k)).astype(np.int64)
        sizes = 1 + extra
        sizes[0] += config.n_items - sizes.sum()
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.sizes = sizes
        cats = np.arange(k)
        self.category_price_mu = 3.0 + 0.9 * hash_normal(cats, seed, "cat.price")
        self.category_conv = config.effects.category_conv_sd * hash_normal(cats, seed, "cat.conv")
        self._within = [AffinePermutation(int(n), seed, f"cat{i}.perm") for i, n in
                        enumerate(sizes)]

    def category_of(self, item_ids: np.ndarray) -> np.ndarray:
        """The category of each item id."""
        return np.searchsorted(self.offsets, item_ids, side="right") - 1

    def draw_items(self, categories: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A Zipf-popular item inside each given category (``u``: uniforms)."""
        out = np.empty(len(categories), dtype=np.int64)
        for k in np.unique(categories):
            mask = categories == k
            n = int(self.sizes[k])
            ranks = zipf_rank(u[mask], n, self.config.item_zipf)
            out[mask] = self.offsets[k] + self._within[k](ranks)
        return out

    def lookup(self, ids: np.ndarray) -> ItemBlock:
        """Latent factors and features of the items ``ids``."""
        cfg, seed = self.config, self.seed
        cat = self.category_of(ids)
        q = hash_normal(ids, seed, "item.quality")
        rho = cfg.effects.appeal_quality_corr
        a = rho * q + np.sqrt(1.0 - rho * rho) * hash_normal(ids, seed, "item.appeal")
        rel = hash_normal(ids, seed, "item.price")
        taste = np.stack([hash_normal(ids, seed, f"item.taste{k}") for k in range(TASTE_DIM)], 1)
        feats = {
            "category_id": cat,
            "shop_id": zipf_rank(hash_uniform(ids, seed, "item.shop"), cfg.n_shops, 1.2),
            "brand_id": zipf_rank(hash_uniform(ids, seed, "item.brand"), cfg.n_brands, 1.2),
            "item_price": np.exp(self.category_price_mu[cat] + 0.6 * rel).astype(np.float32),
        }
        return ItemBlock(q, a, rel, taste, cat, feats)
