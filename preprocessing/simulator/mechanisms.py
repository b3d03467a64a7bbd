"""The optional phenomena of the mechanism worlds (issue 33, docs/worlds.md), each off by default.

Each is a pure function of the generator seed and of what an impression already has (its user,
item, category, app, day), except the placement draw, which takes its uniforms from the block's
RNG after every draw of the features (the label uniforms come after it, so with placements on
the labels are other draws of the same probabilities). With an option off nothing is computed
or drawn, and the default world's output is the same bit for bit
(``tests/preprocessing/conftest.py``, ``DEFAULT_DIGEST``).

- ``InteractionNet`` (world ``deep_funnel``): a hidden user x item match ``g``, a random
  two-layer ReLU network over what the advertiser observes of the user and the item (age,
  gender, city tier, purchase power, recent categories; category, price), with its best linear
  readout of those inputs (as the network encodes them, on random users and items) removed and
  scaled to unit variance, so that little of it is linear in the features (a model still
  learns main effects per feature value through its embeddings). It enters the click, cart and buy logits
  (``GeneratorConfig.interaction``).
- ``segment_offsets`` (world ``covariate_shift``): a click offset per user segment (purchase
  power x city tier) and per category, and an independent conversion offset per cell (segment x
  category): clicks concentrate on some cells, and what is learned there does not carry to the
  thinly clicked ones.
- ``PlacementField`` (world ``long_tail_slots``): ``slot_id`` becomes a placement field with
  ``count`` values and Zipf traffic per app, each value with a stationary level offset and
  sharpness factor on the conversion logits, and a drift of the level for a share of them.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from preprocessing.simulator.config import GeneratorConfig, Placements, Segments
from preprocessing.simulator.hashing import AffinePermutation, hash_normal, hash_uniform, zipf_rank

#: Size of the reference sample (random users and items) that fixes ``g``'s linear part and scale.
_REFERENCE_ROWS = 65_536
#: Dimension of the hidden category embedding that ``g`` reads.
_CATEGORY_DIM = 4


class InteractionNet:
    """The hidden user x item match ``g`` of world ``deep_funnel`` (see the module docstring).

    ``g`` reads what the advertiser observes (docs/worlds.md): the user's age, gender, city
    tier and purchase power, whether the item's category is among the user's recent ones, the
    item's category (through a hidden embedding) and its log price. Its linear part in those
    inputs and its scale are fixed on a reference sample of random users and items drawn from
    the seed, so ``g`` is the same function for every block and every row count.
    """

    def __init__(self, config: GeneratorConfig, seed: int, users, items):
        hidden = config.interaction.hidden
        rng = np.random.default_rng([seed, 0x1D7E])
        cats = np.arange(config.n_categories)
        self.category_embedding = np.stack(
            [hash_normal(cats, seed, f"cat.interaction{k}") for k in range(_CATEGORY_DIM)], 1)
        self.n_inputs = 3 + 3 + _CATEGORY_DIM + 1 + 1
        self.w1 = rng.normal(0.0, 1.5 / np.sqrt(self.n_inputs), (self.n_inputs, hidden))
        self.b1 = rng.normal(0.0, 0.5, hidden)
        self.w2 = rng.normal(0.0, 1.0, hidden)
        ref_users = users.lookup(rng.integers(0, config.n_users, _REFERENCE_ROWS))
        ref_items = items.lookup(rng.integers(0, config.n_items, _REFERENCE_ROWS))
        ref = self.inputs(ref_users, ref_items)
        raw = self._raw(ref)
        design = np.column_stack([np.ones(len(ref)), ref])
        self.linear, *_ = np.linalg.lstsq(design, raw, rcond=None)
        resid = raw - design @ self.linear
        self.scale = float(resid.std()) or 1.0

    def _raw(self, inputs: np.ndarray) -> np.ndarray:
        return np.maximum(inputs @ self.w1 + self.b1, 0.0) @ self.w2

    def inputs(self, user, item) -> np.ndarray:
        """The network's inputs (observed features, centred and scaled to about unit
        variance) for aligned user and item blocks (``entities.py``)."""
        f = user.features
        gender = np.eye(3)[np.asarray(f["user_gender"], np.int64)] - 1.0 / 3.0
        recent = (user.recent_cats == item.category[:, None]).any(1).astype(np.float64)
        log_price = np.log(np.asarray(item.features["item_price"], np.float64))
        return np.column_stack([
            (f["user_age"] - 4.0) / 2.0, (f["user_city_tier"] - 3.0) / 1.4,
            (f["user_purchase_power"] - 4.5) / 2.3, gender * 1.5,
            self.category_embedding[item.category], (log_price - 3.0) / 1.1,
            2.0 * recent - 1.0])

    def __call__(self, user, item) -> np.ndarray:
        """Standardised ``g`` of each (user, item) pair: mean 0, sd 1 on the reference
        sample, and no linear part in its inputs there."""
        x = self.inputs(user, item)
        design = np.column_stack([np.ones(len(x)), x])
        return (self._raw(x) - design @ self.linear) / self.scale


def segment_offsets(segments: Segments, seed: int, n_categories: int, purchase_power: np.ndarray,
                    city_tier: np.ndarray, category: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Click and purchase-given-cart logit offsets of world ``covariate_shift``.

    The user segment is ``(purchase_power - 1) * 5 + (city_tier - 1)`` (observed features, so a
    model can see where it is); the cell is the segment x the category.

    Returns:
        ``(click_offset, buy_offset)``, one value per impression.
    """
    seg = (np.asarray(purchase_power, np.int64) - 1) * 5 + (np.asarray(city_tier, np.int64) - 1)
    cat = np.asarray(category, np.int64)
    half = segments.click_spread / np.sqrt(2.0)
    click = half * (hash_normal(seg, seed, "segment.click") + hash_normal(cat, seed,
                                                                          "category.click"))
    cell = seg * n_categories + cat
    buy = segments.buy_spread * hash_normal(cell, seed, "cell.buy")
    return click, buy


class PlacementField:
    """The placement field of world ``long_tail_slots`` (see the module docstring)."""

    def __init__(self, placements: Placements, seed: int, n_apps: int, days: int):
        self.cfg = placements
        self.days = days
        values = np.arange(placements.count)
        self.level = placements.level_spread * hash_normal(values, seed, "placement.level")
        self.sharpness = np.exp(placements.sharpness_spread
                                * hash_normal(values, seed, "placement.sharpness"))
        drifts = hash_uniform(values, seed, "placement.drifts") < placements.drift_share
        self.drift = np.where(drifts, placements.drift_sd
                              * hash_normal(values, seed, "placement.drift"), 0.0)
        self.app_perm = [AffinePermutation(placements.count, seed, f"placement.app{i}")
                         for i in range(n_apps)]

    def draw(self, u: np.ndarray, app: np.ndarray) -> np.ndarray:
        """The placement of each impression from uniforms ``u``: a Zipf rank, mapped through
        the impression's app's own ranking of the placements."""
        rank = zipf_rank(u, self.cfg.count, self.cfg.zipf)
        out = np.empty(len(u), dtype=np.int64)
        for i, perm in enumerate(self.app_perm):
            mask = app == i
            out[mask] = perm(rank[mask])
        return out

    def level_on(self, placement: np.ndarray, day) -> np.ndarray:
        """Each impression's placement level offset on ``day`` (drift centred on the middle day,
        like ``funnel.app_cvr_offset``)."""
        centred = np.asarray(day, dtype=np.float64) - 0.5 * (self.days - 1)
        return self.level[placement] + self.drift[placement] * centred

    def distort(self, logit: np.ndarray, centre: float, placement: np.ndarray, day,
                level_weight: float) -> np.ndarray:
        """``centre + sharpness * (logit - centre) + level_weight * level``."""
        return (centre + self.sharpness[placement] * (logit - centre)
                + level_weight * self.level_on(placement, day))
