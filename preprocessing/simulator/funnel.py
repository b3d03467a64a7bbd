"""The funnel: impression -> click -> add-to-cart -> purchase, from shared latent factors.

With sigma the logistic function, the factors of ``entities.py`` and ``d`` the impression's day::

    logit p_click        = b_click + e.intent_click * z + e.clickiness_click * c
                           + e.affinity_click * aff + e.appeal_click * a
                           + e.clickbait_click * bait + e.position_click * slot
                           + app.ctr_offset + e.evening_click * evening
    logit p_cart|click   = b_cart + e.intent_cart * z + e.affinity_cart * aff
                           + e.quality_cart * q - e.price_cart * price_pen
                           + e.clickbait_conv * is_bait + 0.5 * (o_app(d) + cat_conv)
    logit p_buy|cart     = b_buy + e.intent_buy * z + e.affinity_buy * aff + e.quality_buy * q
                           - e.price_buy * price_pen + e.clickbait_conv * is_bait
                           + o_app(d) + cat_conv + e.evening_conv * evening
    p_purchase|click     = p_cart|click * p_buy|cart
    o_app(d)             = app.cvr_offset + app.cvr_trend * (d - (days - 1) / 2)

and, when some ``app.cvr_sharpness_trend`` is non-zero, the terms of the cart and buy logits
other than the app's offset (``0.5 o_app(d)``, ``o_app(d)``) are scaled by ``s_app(d) =
max(0.1, 1 + app.cvr_sharpness_trend * (d - (days - 1) / 2))`` around their mean over the
app's impressions in the block, then shifted so that the app's mean ``exp(logit)`` over those
impressions is unchanged (for rare conversions, ``p ~ exp(logit)``: the level stays): the
app's conversion curve gets steeper or flatter over the days at about the same level (a
change of shape, not of level). With every
sharpness trend 0 both logits are computed exactly as written above, bit for bit.

**Selection on a hidden need** (0 by default). When some ``app.need_click`` or
``e.need_cart`` / ``e.need_buy`` is non-zero, every impression draws a purchase need
``n ~ N(0, 1)`` that no feature sees (the user's need of the moment for what the ad shows), and
the three logits above get ``+ k * n - k^2 / 2`` with ``k = app.need_click``, ``e.need_cart``
and ``e.need_buy`` (added after the sharpness scaling). The ``- k^2 / 2`` keeps each rate at
its level for rare events, since ``E[exp(k n)] = exp(k^2 / 2)``: the need changes who clicks and
converts more than how many. At larger ``k`` the probability saturates for high needs and the
rate falls (``strong_bias.yaml``: a selective app's CTR drops to 0.4-0.7x its default), while the
solved intercepts hold the overall rates. Among the impressions of an app,
``n`` given a click is shifted up by about ``app.need_click`` (the click probability tilts the
normal), so the clicked population of a selective app converts far above its impressions while
an app whose clicks ignore the need converts on clicks as on impressions:
``E[conversion | x, click] - E[conversion | x]`` differs by app. A model fitted on clicks then
ranks the selective apps' impressions too high in the entire space (the selection bias costs
ranking, not only level; ``preprocessing/configs/strong_bias.yaml``, docs/simulator.md
"Selection-bias stress data"). With every need effect 0 nothing is drawn and the output is
bit for bit the same.

where ``aff = 1[category in user's preferred] + 0.25 * <taste_u, taste_i> / 2`` and
``price_pen = relative_price * (1 + 0.5 * s)``. Intent raises every stage; clickiness, creative
appeal, clickbait and slot move clicks only (clickbait lowers conversion): the clicked
population differs from the impression population (sample-selection bias). ``app.cvr_offset``
and ``cat_conv`` make the base CVR differ by media app and by category.

``app.cvr_trend`` makes an app's conversion drift over the days, as on real external media
(its traffic mix and the e-commerce campaigns change): a CVR model trained on earlier days is
then miscalibrated per media app on later days, which field-level calibration on the most recent
day (AdaCalib) is meant to fix. The trend is centred on the middle day, so ``app.cvr_offset`` is
the app's mean offset over the days; with every trend 0 the funnel is the same on every day.
The true probabilities (and the counterfactual labels drawn from them) include the day's offset:
they are the truth of that day.

The intercepts ``b_*`` are solved by bisection on a pilot sample so that the mean rates equal
``config.rates``: CTR over impressions, cart and purchase given click over clicked impressions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from preprocessing.simulator.config import GeneratorConfig


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, stable for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class FunnelLogits:
    """Intercept-free logits of the three stages for a batch of impressions."""

    click: np.ndarray
    cart: np.ndarray
    buy: np.ndarray


@dataclass(frozen=True)
class Intercepts:
    """Solved intercepts of the three stage logits."""

    click: float
    cart: float
    buy: float


@dataclass(frozen=True)
class FunnelProbabilities:
    """True probabilities of an impression."""

    click: np.ndarray
    cart_given_click: np.ndarray
    purchase_given_click: np.ndarray


def app_cvr_offset(config: GeneratorConfig, app: np.ndarray, day) -> np.ndarray:
    """The conversion logit offset ``o_app(d)`` of each impression (see the module docstring).

    Args:
        config: the generator config (its apps and ``days``).
        app: app index of each impression (into ``config.apps``).
        day: the day of the impressions, a scalar or one day per impression, in
            ``[0, config.days)``.
    """
    offset = np.array([a.cvr_offset for a in config.apps], dtype=np.float64)
    trend = np.array([a.cvr_trend for a in config.apps], dtype=np.float64)
    centred_day = np.asarray(day, dtype=np.float64) - 0.5 * (config.days - 1)
    # A zero trend adds exactly 0.0: stationary apps get the same logits, bit for bit, as
    # without the trend term.
    return offset[app] + trend[app] * centred_day


def app_cvr_sharpness(config: GeneratorConfig, app: np.ndarray, day) -> np.ndarray:
    """The buy-logit sharpness ``s_app(d)`` of each impression (see the module docstring).

    Args:
        config: the generator config (its apps and ``days``).
        app: app index of each impression (into ``config.apps``).
        day: the day of the impressions, a scalar or one day per impression.
    """
    trend = np.array([a.cvr_sharpness_trend for a in config.apps], dtype=np.float64)
    centred_day = np.asarray(day, dtype=np.float64) - 0.5 * (config.days - 1)
    return np.maximum(0.1, 1.0 + trend[app] * centred_day)


def has_sharpness_trend(config: GeneratorConfig) -> bool:
    """Whether any app's conversion sharpness moves over the days."""
    return any(a.cvr_sharpness_trend != 0.0 for a in config.apps)


def has_need_selection(config: GeneratorConfig) -> bool:
    """Whether the hidden per-impression need enters any logit (see the module docstring)."""
    eff = config.effects
    return (eff.need_cart != 0.0 or eff.need_buy != 0.0
            or any(a.need_click != 0.0 for a in config.apps))


def probabilities(logits: FunnelLogits, b: Intercepts) -> FunnelProbabilities:
    """Apply the intercepts: the true p_click, p_cart|click and p_purchase|click."""
    p_click = sigmoid(logits.click + b.click)
    p_cart = sigmoid(logits.cart + b.cart)
    p_buy = sigmoid(logits.buy + b.buy)
    return FunnelProbabilities(p_click, p_cart, p_cart * p_buy)


def _bisect(mean_at: Callable[[float], float], target: float, lo=-20.0, hi=20.0) -> float:
    """Solve mean_at(b) = target for a mean_at that increases in b."""
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if mean_at(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def solve_intercepts(logits: FunnelLogits, config: GeneratorConfig) -> Intercepts:
    """Intercepts that give the configured mean rates on the pilot ``logits``."""
    rates = config.rates
    b_click = _bisect(lambda b: float(sigmoid(logits.click + b).mean()), rates.ctr)
    w = sigmoid(logits.click + b_click)
    w = w / w.sum()
    b_cart = _bisect(lambda b: float((w * sigmoid(logits.cart + b)).sum()),
                     rates.cart_given_click)
    p_cart = sigmoid(logits.cart + b_cart)
    b_buy = _bisect(lambda b: float((w * p_cart * sigmoid(logits.buy + b)).sum()),
                    rates.purchase_given_click)
    return Intercepts(b_click, b_cart, b_buy)
