"""Tests of the mechanism worlds' generator options (``preprocessing/simulator/mechanisms.py``)
and their presets (``preprocessing/configs/worlds/``): each option off is the default world, bit
for bit, and each on makes the phenomenon its world is for (docs/worlds.md)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from preprocessing import columns as C
from preprocessing.simulator.config import (GeneratorConfig, Interaction, Placements, Segments,
                                            config_from_dict, load_config)
from preprocessing.simulator.entities import ItemCatalog, UserPopulation
from preprocessing.simulator.mechanisms import InteractionNet
from preprocessing.simulator.sampler import ImpressionSampler

WORLDS = Path(__file__).resolve().parents[3] / "preprocessing" / "configs" / "worlds"
SMALL = dict(pilot_rows=20_000)


def frame(cfg: GeneratorConfig, seed: int = 3, rows: int = 40_000) -> pd.DataFrame:
    sampler = ImpressionSampler(cfg, seed, rows)
    return pd.concat([sampler.block(b).to_pandas() for b in range(sampler.n_blocks)],
                     ignore_index=True)


def logit(p):
    p = np.asarray(p, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


def buy_logit(df: pd.DataFrame) -> np.ndarray:
    return logit(df[C.P_PURCHASE_GIVEN_CLICK] / df[C.P_CART_GIVEN_CLICK])


# ------------------------------------------------------------------------------ configuration

@pytest.mark.parametrize("section, raw, param", [
    ("interaction", {"buy": -1.0}, "buy"),
    ("interaction", {"hidden": 0}, "hidden"),
    ("segments", {"click_spread": float("nan")}, "click_spread"),
    ("placements", {"count": 1}, "count"),
    ("placements", {"count": 10, "zipf": 1.0}, "zipf"),
    ("placements", {"count": 10, "drift_share": 2.0}, "drift_share"),
])
def test_a_bad_mechanism_option_is_refused_naming_the_parameter(section, raw, param):
    with pytest.raises(ValueError, match=re.escape(f"'{param}'")):
        config_from_dict({section: raw})


def test_an_unknown_key_in_a_mechanism_section_is_refused_naming_the_section():
    with pytest.raises(ValueError, match=r"config\.placements: unknown keys \['size'\]"):
        config_from_dict({"placements": {"size": 3}})


@pytest.mark.parametrize("name, section", [
    ("deep_funnel", "interaction"), ("covariate_shift", "segments"),
    ("long_tail_slots", "placements"), ("long_tail_slots_drift", "placements")])
def test_each_world_preset_is_the_default_world_plus_its_own_section(name, section):
    cfg = load_config(str(WORLDS / f"{name}.yaml"))
    assert getattr(cfg, section).on
    default = GeneratorConfig()
    off = dataclasses.replace(cfg, **{section: getattr(default, section)})
    if name == "deep_funnel":          # purchases sparser: the one other change
        assert cfg.rates.purchase_given_click < default.rates.purchase_given_click
        off = dataclasses.replace(off, rates=default.rates)
    if name.startswith("long_tail_slots"):   # more conversions per placement: the other one
        assert cfg.rates.ctr > default.rates.ctr
        off = dataclasses.replace(off, rates=default.rates)
    assert off == default


def test_every_option_at_zero_leaves_the_default_world_unchanged_bit_for_bit(table_digest,
                                                                             default_digest):
    cfg = GeneratorConfig(pilot_rows=20_000, interaction=Interaction(hidden=8),
                          segments=Segments(), placements=Placements(count=0, level_spread=1.0))
    assert table_digest(ImpressionSampler(cfg, 11, 30_000)) == default_digest


# ------------------------------------------------------------------------------ deep_funnel

def test_the_interaction_is_standardised_and_has_no_linear_part_in_its_inputs():
    cfg = GeneratorConfig(n_users=50_000, n_items=5_000, interaction=Interaction(buy=1.0))
    population, catalog = UserPopulation(cfg, 5), ItemCatalog(cfg, 5)
    net = InteractionNet(cfg, 5, population, catalog)
    rng = np.random.default_rng(9)
    users = population.lookup(rng.integers(0, cfg.n_users, 20_000))
    items = catalog.lookup(rng.integers(0, cfg.n_items, 20_000))
    g = net(users, items)
    # standardised on a reference sample of random users and items
    assert abs(g.mean()) < 0.05 and 0.9 < g.std() < 1.1
    x = np.column_stack([np.ones(len(g)), net.inputs(users, items)])
    coef, *_ = np.linalg.lstsq(x, g, rcond=None)
    r2_linear = 1 - np.var(g - x @ coef) / np.var(g)
    assert r2_linear < 0.01
    # ... but it is a function of them: a two-layer net of the same size recovers most of it
    feats = net.inputs(users, items)
    h = np.maximum(feats @ net.w1 + net.b1, 0.0)
    hx = np.column_stack([x, h])
    coef, *_ = np.linalg.lstsq(hx, g, rcond=None)
    assert 1 - np.var(g - hx @ coef) / np.var(g) > 0.99


def test_the_interaction_enters_each_logit_with_its_weight():
    base = GeneratorConfig(**SMALL)
    on = dataclasses.replace(base, interaction=Interaction(click=0.5, cart=1.0, buy=1.5))
    a, b = frame(base), frame(on)
    sampler = ImpressionSampler(on, 3, 40_000)
    users = sampler.users.lookup(b[C.USER_ID].to_numpy())
    items = sampler.items.lookup(b[C.ITEM_ID].to_numpy())
    g = sampler.interaction(users, items)
    ia, ib = ImpressionSampler(base, 3, 10).intercepts, sampler.intercepts
    np.testing.assert_allclose((logit(b[C.P_CLICK]) - ib.click) - (logit(a[C.P_CLICK]) - ia.click),
                               0.5 * g, atol=1e-6)
    np.testing.assert_allclose((buy_logit(b) - ib.buy) - (buy_logit(a) - ia.buy), 1.5 * g,
                               atol=1e-6)
    # the default draws are the same: only the logits move
    assert a[C.USER_ID].equals(b[C.USER_ID]) and a[C.ITEM_ID].equals(b[C.ITEM_ID])


# ------------------------------------------------------------------------------ covariate_shift

def test_segment_click_offsets_concentrate_the_clicks_on_some_cells():
    cfg = GeneratorConfig(**SMALL, segments=Segments(click_spread=1.5, buy_spread=1.0))
    df = frame(cfg, rows=80_000)
    cell = ((df.user_purchase_power - 1) * 5 + df.user_city_tier - 1) * cfg.n_categories \
        + df[C.CATEGORY_ID]
    by = df.groupby(cell).agg(n=(C.CLICK, "size"), p=(C.P_CLICK, "mean"))
    low = by.p <= by.p.median()
    clicks = df.groupby(cell)[C.P_CLICK].sum()
    # the cells with the lower half of click rates hold a large share of the impressions but
    # a small share of the (expected) clicks
    assert by.n[low].sum() / by.n.sum() > 0.3
    assert clicks[low].sum() / clicks.sum() < 0.15


def test_the_cell_conversion_offset_is_independent_of_the_click_offset():
    from preprocessing.simulator.mechanisms import segment_offsets
    power, tier = np.repeat(np.arange(1, 9), 5 * 60), np.tile(np.repeat(np.arange(1, 6), 60), 8)
    cat = np.tile(np.arange(60), 40)
    click, buy = segment_offsets(Segments(click_spread=1.5, buy_spread=1.0), 3, 60, power, tier,
                                 cat)
    assert 1.2 < click.std() < 1.8 and 0.85 < buy.std() < 1.15
    assert abs(np.corrcoef(click, buy)[0, 1]) < 0.1


# ------------------------------------------------------------------------------ long_tail_slots

def test_the_placement_field_replaces_slot_id_and_keeps_the_true_probabilities_at_zero_spread():
    base = GeneratorConfig(**SMALL)
    on = dataclasses.replace(base, placements=Placements(count=200))
    a, b = frame(base), frame(on)
    assert b["slot_id"].between(0, 199).all() and b["slot_id"].nunique() > 100
    np.testing.assert_array_equal(a[C.USER_ID].to_numpy(), b[C.USER_ID].to_numpy())
    for col in (C.P_CLICK, C.P_CART_GIVEN_CLICK, C.P_PURCHASE_GIVEN_CLICK):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9)
    # Zipf traffic within each app: a few placements carry much of an app's impressions
    top = b.groupby(C.APP_ID)["slot_id"].agg(lambda s: s.value_counts(normalize=True).iloc[:5]
                                             .sum())
    assert (top > 0.3).all()
    # each app ranks the placements its own way
    heads = b.groupby(C.APP_ID)["slot_id"].agg(lambda s: s.value_counts().index[0])
    assert heads.nunique() > 1


@pytest.mark.parametrize("drift", [False, True])
def test_each_placement_scales_the_conversion_logits_around_the_centre_and_shifts_their_level(
        drift):
    plain = Placements(count=200)
    shaped = Placements(count=200, level_spread=0.5, sharpness_spread=0.4,
                        drift_share=1.0 if drift else 0.0, drift_sd=0.2 if drift else 0.0)
    cfg0 = GeneratorConfig(**SMALL, days=3, placements=plain)
    cfg1 = dataclasses.replace(cfg0, placements=shaped)
    s0, s1 = ImpressionSampler(cfg0, 3, 30_000), ImpressionSampler(cfg1, 3, 30_000)
    c_cart, c_buy = s1.placement_centre
    field = s1.placements
    for block in range(s1.n_blocks):
        a, b = s0.block(block).to_pandas(), s1.block(block).to_pandas()
        v, day = b["slot_id"].to_numpy(), s1.block_day(block)
        level = field.level[v] + field.drift[v] * (day - 1)
        core0 = buy_logit(a) - s0.intercepts.buy
        np.testing.assert_allclose(buy_logit(b) - s1.intercepts.buy,
                                   c_buy + field.sharpness[v] * (core0 - c_buy) + level,
                                   atol=1e-6)
        cart0 = logit(a[C.P_CART_GIVEN_CLICK]) - s0.intercepts.cart
        np.testing.assert_allclose(logit(b[C.P_CART_GIVEN_CLICK]) - s1.intercepts.cart,
                                   c_cart + field.sharpness[v] * (cart0 - c_cart) + 0.5 * level,
                                   atol=1e-6)
    assert field.sharpness.std() > 0.2 and field.level.std() > 0.3
    assert (field.drift != 0).all() if drift else (field.drift == 0).all()
