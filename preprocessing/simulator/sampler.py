"""Impressions: who sees which ad, where and when, with labels drawn from the funnel.

``ImpressionSampler.block(i)`` returns block ``i`` of the stream as a pyarrow Table. Each block
has its own RNG, ``np.random.default_rng([seed, i])``, so the output depends only on the seed, the
row count and the config, and any block can be regenerated alone.

Traffic per impression:
- media app by share; slot uniform over the app's slots; hour from a diurnal curve;
- user: a Zipf-popular user; half of the traffic ranks users by a permutation shared by all
  apps, half by the app's own permutation (each app has its own heavy users);
- ad category: with probability ``app.targeting`` one of the user's preferred categories,
  otherwise drawn from the app's own category mix; then a Zipf-popular item in that category;
- creative type 0-7, where types 5-7 are clickbait, chosen with ``app.clickbait_mix``;
- day: the block's day (``block_day``); it enters the funnel only through the app's conversion
  offset on that day, ``cvr_offset + cvr_trend * (day - (days - 1) / 2)`` (``funnel.py``);
- a hidden purchase need ``n ~ N(0, 1)``, only when a need effect is non-zero (``funnel.py``);
- the mechanism worlds' terms (``mechanisms.py``), only when their options are on; the placement
  field draws its uniforms after the features (before the label uniforms).

Labels: three uniforms per impression give the counterfactual chain
``cart_cf = u1 < p_cart|click`` and ``purchase_cf = cart_cf and u2 < p_buy|cart``: what would
have happened had the impression been clicked. The observed labels are
``cart = click * cart_cf`` and ``purchase = click * purchase_cf``, so the counterfactual equals
the observed label wherever click = 1, and purchase implies cart implies click.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from preprocessing import columns as C
from preprocessing.simulator.config import GeneratorConfig
from preprocessing.simulator.entities import ItemCatalog, UserPopulation
from preprocessing.simulator.funnel import (FunnelLogits, Intercepts, app_cvr_offset,
                                            app_cvr_sharpness, has_need_selection,
                                            has_sharpness_trend, probabilities,
                                            solve_intercepts)
from preprocessing.simulator.hashing import AffinePermutation, zipf_rank
from preprocessing.simulator.mechanisms import InteractionNet, PlacementField, segment_offsets

N_CREATIVE_TYPES = 8
CLICKBAIT_TYPES = (5, 6, 7)
#: Click appeal of each creative type; the clickbait types pull hardest.
CREATIVE_PULL = np.array([0.0, 0.1, -0.1, 0.2, 0.0, 1.0, 0.8, 1.2])
#: Relative impression volume by hour of day (evening peak).
DIURNAL = np.array([2, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 6, 7, 6, 5, 5, 6, 7, 8, 10, 11, 10, 7, 4],
                   dtype=np.float64)
EVENING = (19, 20, 21, 22, 23)
PILOT_BLOCK = -1


class ImpressionSampler:
    """Streams blocks of simulated impressions; see the module docstring for the model."""

    def __init__(self, config: GeneratorConfig, seed: int, n_rows: int):
        if n_rows < 1:
            raise ValueError(f"The 'rows' parameter must be >= 1. Got {n_rows} instead.")
        self.config = config
        self.seed = int(seed)
        self.n_rows = int(n_rows)
        self.users = UserPopulation(config, self.seed)
        self.items = ItemCatalog(config, self.seed)
        shares = np.array([a.share for a in config.apps], dtype=np.float64)
        self.app_share = shares / shares.sum()
        self.shared_user_perm = AffinePermutation(config.n_users, self.seed, "users.shared")
        self.app_user_perm = [AffinePermutation(config.n_users, self.seed, f"users.app{i}")
                              for i in range(len(config.apps))]
        self.app_category_perm = [
            np.random.default_rng([self.seed, 7919, i]).permutation(config.n_categories)
            for i in range(len(config.apps))]
        self.hour_p = DIURNAL / DIURNAL.sum()
        self._plan: Optional[List[Tuple[int, int]]] = None
        # The mechanism worlds' phenomena (simulator/mechanisms.py), built only when on.
        self.interaction = (InteractionNet(config, self.seed, self.users, self.items)
                            if config.interaction.on else None)
        self.placements = (PlacementField(config.placements, self.seed, len(config.apps),
                                          config.days) if config.placements.on else None)
        #: Cart and buy logit means over the pilot sample: the placements' sharpness centre.
        self.placement_centre: Optional[Tuple[float, float]] = None
        self.intercepts = self._solve_intercepts()

    @property
    def n_blocks(self) -> int:
        """Number of blocks in the stream."""
        return len(self.plan)

    @property
    def plan(self) -> List[Tuple[int, int]]:
        """(day, rows) of every block: days split the rows evenly, blocks never span days."""
        if self._plan is None:
            days, size = self.config.days, self.config.rows_per_block
            bounds = [d * self.n_rows // days for d in range(days + 1)]
            self._plan = []
            for d in range(days):
                left = bounds[d + 1] - bounds[d]
                while left > 0:
                    take = min(size, left)
                    self._plan.append((d, take))
                    left -= take
        return self._plan

    def block_day(self, block: int) -> int:
        """The day that block ``block`` belongs to."""
        return self.plan[block][0]

    def _solve_intercepts(self) -> Intercepts:
        rng = np.random.default_rng([self.seed, 2**31 - 1])
        n = self.config.pilot_rows
        # The pilot rows are i.i.d., so row i is given day i % days: the pilot spans the days
        # (almost exactly) uniformly, as the output does (its rows are split evenly over the
        # days), and the intercepts hit the target rates over all days, trends included.
        # Using the centred offset (cvr_offset alone) for every pilot row instead would be
        # right only to first order in the trend: the mean of sigmoid(x + t) over centred t
        # differs from sigmoid(x) by a term in t^2 (Jensen). The day takes no draw from the
        # RNG, so with every trend 0 the pilot sample and the intercepts are exactly those of
        # the stationary simulator.
        draw = self._draw(rng, n, np.arange(n) % self.config.days)
        return solve_intercepts(draw["logits"], self.config)

    def _draw(self, rng: np.random.Generator, n: int, day) -> Dict:
        """Traffic, features and intercept-free logits of ``n`` impressions on ``day``.

        ``day`` is the day of every impression (a block's day) or an array of one day per
        impression (the pilot sample); it sets the apps' conversion offsets of that day.
        """
        cfg, eff = self.config, self.config.effects
        n_apps = len(cfg.apps)
        app = rng.choice(n_apps, size=n, p=self.app_share)
        max_slot = np.array([a.max_slot for a in cfg.apps])[app]
        slot = (rng.random(n) * max_slot).astype(np.int64)
        hour = rng.choice(24, size=n, p=self.hour_p)

        user_rank = zipf_rank(rng.random(n), cfg.n_users, cfg.user_zipf)
        own = rng.random(n) < 0.5
        user_id = self.shared_user_perm(user_rank)
        for i in range(n_apps):
            mask = own & (app == i)
            user_id[mask] = self.app_user_perm[i](user_rank[mask])
        user = self.users.lookup(user_id)

        targeting = np.array([a.targeting for a in cfg.apps])[app]
        targeted = rng.random(n) < targeting
        pick = rng.integers(0, user.preferred.shape[1], size=n)
        cat_rank = zipf_rank(rng.random(n), cfg.n_categories, 0.9)
        untargeted_cat = np.empty(n, dtype=np.int64)
        for i in range(n_apps):
            mask = app == i
            untargeted_cat[mask] = self.app_category_perm[i][cat_rank[mask]]
        category = np.where(targeted, user.preferred[np.arange(n), pick], untargeted_cat)
        item_id = self.items.draw_items(category, rng.random(n))
        item = self.items.lookup(item_id)

        bait_mix = np.array([a.clickbait_mix for a in cfg.apps])[app]
        is_bait = rng.random(n) < bait_mix
        creative = np.where(is_bait, rng.choice(CLICKBAIT_TYPES, size=n),
                            rng.integers(0, CLICKBAIT_TYPES[0], size=n))
        evening = np.isin(hour, EVENING).astype(np.float64)

        aff = ((user.preferred == item.category[:, None]).any(1).astype(np.float64)
               + 0.125 * (user.taste * item.taste).sum(1))
        price_pen = item.relative_price * (1.0 + 0.5 * user.price_sensitivity)
        ctr_off = np.array([a.ctr_offset for a in cfg.apps])[app]
        cvr_off = app_cvr_offset(cfg, app, day)
        cat_conv = self.items.category_conv[item.category]
        bait = is_bait.astype(np.float64)

        click = (eff.intent_click * user.intent + eff.clickiness_click * user.clickiness
                 + eff.affinity_click * aff + eff.appeal_click * item.appeal
                 + eff.clickbait_click * CREATIVE_PULL[creative] + eff.position_click * slot
                 + ctr_off + eff.evening_click * evening)
        cart = (eff.intent_cart * user.intent + eff.affinity_cart * aff
                + eff.quality_cart * item.quality - eff.price_cart * price_pen
                + eff.clickbait_conv * bait + 0.5 * (cvr_off + cat_conv))
        buy = (eff.intent_buy * user.intent + eff.affinity_buy * aff
               + eff.quality_buy * item.quality - eff.price_buy * price_pen
               + eff.clickbait_conv * bait + cvr_off + cat_conv + eff.evening_conv * evening)
        if has_sharpness_trend(cfg):
            # A branch, not a multiplication by 1.0 always: the default (no sharpness trend)
            # keeps the exact floating-point expression above, so its output is unchanged.
            sharp = app_cvr_sharpness(cfg, app, day)
            cart_core = (eff.intent_cart * user.intent + eff.affinity_cart * aff
                         + eff.quality_cart * item.quality - eff.price_cart * price_pen
                         + eff.clickbait_conv * bait + 0.5 * cat_conv)
            buy_core = (eff.intent_buy * user.intent + eff.affinity_buy * aff
                        + eff.quality_buy * item.quality - eff.price_buy * price_pen
                        + eff.clickbait_conv * bait + cat_conv + eff.evening_conv * evening)
            counts = np.maximum(np.bincount(app, minlength=n_apps), 1)

            def log_mean_exp(x):
                return np.log(np.bincount(app, weights=np.exp(x), minlength=n_apps)
                              / counts)[app]

            def around_app_mean(core):
                # scaled around the app's mean (over these rows), then shifted so that the
                # app's mean exp(logit) is unchanged: rare conversions keep their level
                mean = (np.bincount(app, weights=core, minlength=n_apps) / counts)[app]
                scaled = sharp * (core - mean) + mean
                return scaled + log_mean_exp(core) - log_mean_exp(scaled)

            cart = around_app_mean(cart_core) + 0.5 * cvr_off
            buy = around_app_mean(buy_core) + cvr_off
        if has_need_selection(cfg):
            # Drawn last and only when used: without it the RNG stream, and so the output, is
            # exactly that of the simulator without the option.
            need = rng.standard_normal(n)
            # k * n - k^2 / 2: E[exp(k n)] = exp(k^2 / 2), so each rate keeps its level for
            # rare events (at larger k, saturation lowers it; funnel.py): the need changes who
            # clicks and converts more than how many.
            k = np.array([a.need_click for a in cfg.apps])[app]
            click = click + k * need - 0.5 * k * k
            cart = cart + eff.need_cart * need - 0.5 * eff.need_cart ** 2
            buy = buy + eff.need_buy * need - 0.5 * eff.need_buy ** 2

        click, cart, buy, slot = self._mechanisms(rng, n, day, user, item, app, slot,
                                                  (click, cart, buy))

        feats = {C.USER_ID: user_id, **user.features, C.ITEM_ID: item_id, **item.features,
                 C.APP_ID: app.astype(np.int64), "slot_id": slot,
                 "creative_type": creative.astype(np.int64), "hour": hour.astype(np.int64)}
        return {"features": feats, "recent": user.recent_cats,
                "logits": FunnelLogits(click, cart, buy)}

    def _mechanisms(self, rng, n, day, user, item, app, slot, logits):
        """The mechanism worlds' terms (``simulator/mechanisms.py``), after every default draw.

        Returns the click, cart and buy logits and the ``slot_id`` column (the placement when
        the placement field is on). With every option off the inputs come back untouched.
        """
        cfg = self.config
        click, cart, buy = logits
        if self.interaction is not None:
            ia = cfg.interaction
            g = self.interaction(user, item)
            click, cart, buy = click + ia.click * g, cart + ia.cart * g, buy + ia.buy * g
        if cfg.segments.on:
            click_off, buy_off = segment_offsets(
                cfg.segments, self.seed, cfg.n_categories, user.features["user_purchase_power"],
                user.features["user_city_tier"], item.category)
            click, buy = click + click_off, buy + buy_off
        if self.placements is not None:
            # after every feature draw (the label uniforms follow): the default stream is
            # untouched
            placement = self.placements.draw(rng.random(n), app)
            if self.placement_centre is None:         # the pilot sample, drawn first
                self.placement_centre = (float(cart.mean()), float(buy.mean()))
            c_cart, c_buy = self.placement_centre
            cart = self.placements.distort(cart, c_cart, placement, day, 0.5)
            buy = self.placements.distort(buy, c_buy, placement, day, 1.0)
            slot = placement
        return click, cart, buy, slot

    def block(self, index: int, rows: Optional[int] = None) -> pa.Table:
        """Block ``index`` of the stream as a Table in the canonical column order."""
        if rows is None:
            rows = self.plan[index][1]
        rng = np.random.default_rng([self.seed, index])
        day = self.block_day(index)
        draw = self._draw(rng, rows, day)
        p = probabilities(draw["logits"], self.intercepts)
        u = rng.random((rows, 3))
        click = (u[:, 0] < p.click).astype(np.int32)
        cart_cf = (u[:, 1] < p.cart_given_click)
        purchase_cf = cart_cf & (u[:, 2] < p.purchase_given_click / p.cart_given_click)
        cart_cf = cart_cf.astype(np.int32)
        purchase_cf = purchase_cf.astype(np.int32)

        spec = C.synthetic_spec()
        feats = draw["features"]
        arrays = {}
        for col in spec.categorical:
            arrays[col] = pa.array(feats[col].astype(np.int64))
        arrays["user_recent_cats"] = _list_column(draw["recent"])
        for col in spec.continuous:
            arrays[col] = pa.array(feats[col].astype(np.float32), from_pandas=True)
        arrays[C.CLICK] = pa.array(click)
        arrays[C.CART] = pa.array(click * cart_cf)
        arrays[C.PURCHASE] = pa.array(click * purchase_cf)
        arrays[C.P_CLICK] = pa.array(p.click)
        arrays[C.P_CART_GIVEN_CLICK] = pa.array(p.cart_given_click)
        arrays[C.P_PURCHASE_GIVEN_CLICK] = pa.array(p.purchase_given_click)
        arrays[C.CART_COUNTERFACTUAL] = pa.array(cart_cf)
        arrays[C.PURCHASE_COUNTERFACTUAL] = pa.array(purchase_cf)
        arrays[C.DAY] = pa.array(np.full(rows, day, dtype=np.int64))
        return pa.table({c: arrays[c] for c in spec.all_columns})


def _list_column(slots: np.ndarray) -> pa.ListArray:
    """A list<int64> column from a (n, k) array whose negative entries are empty slots."""
    valid = slots >= 0
    offsets = np.concatenate([[0], np.cumsum(valid.sum(1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(slots[valid]))
