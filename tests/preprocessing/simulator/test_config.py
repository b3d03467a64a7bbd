"""Tests of ``preprocessing.simulator.config``: validation, file loading, overrides."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from preprocessing.simulator.config import (MAX_ITEMS, MAX_USERS, Effects, FunnelRates,
                                            GeneratorConfig, MediaApp, MediaSignal,
                                            config_from_dict, load_config)

DEFAULT_YAML = Path(__file__).resolve().parents[3] / "preprocessing" / "configs" / "default.yaml"


def four_apps(**overrides):
    """Four valid apps, each with ``overrides`` applied."""
    return tuple(MediaApp(**{"name": f"app{i}", "share": 0.25, **overrides}) for i in range(4))


def raises_naming(param: str):
    """pytest.raises(ValueError) whose message names the parameter in quotes."""
    return pytest.raises(ValueError, match=re.escape(f"'{param}'"))


def test_default_config_is_valid_with_the_documented_defaults():
    cfg = GeneratorConfig()
    assert cfg.n_users == 1_000_000 and cfg.n_items == 100_000
    assert cfg.days == 7 and len(cfg.apps) >= 4
    assert cfg.rates == FunnelRates(ctr=0.04, cart_given_click=0.12, purchase_given_click=0.05)
    assert len({a.name for a in cfg.apps}) == len(cfg.apps)
    assert cfg.to_dict()["rates"]["ctr"] == 0.04
    json.dumps(cfg.to_dict())  # plain data


@pytest.mark.parametrize("param, kwargs", [
    ("n_users", {"n_users": MAX_USERS + 1}),
    ("n_users", {"n_users": 0}),
    ("n_items", {"n_items": MAX_ITEMS + 1}),
    ("n_categories", {"n_categories": 1}),
    ("n_categories", {"n_categories": 200, "n_items": 100}),
    ("n_shops", {"n_shops": 0}),
    ("n_brands", {"n_brands": 0}),
    ("user_zipf", {"user_zipf": 1.0}),
    ("item_zipf", {"item_zipf": 1.0}),
    ("item_zipf", {"item_zipf": 0.0}),
    ("days", {"days": 0}),
    ("days", {"days": 367}),
    ("rows_per_block", {"rows_per_block": 1000}),
    ("rows_per_block", {"rows_per_block": 4_194_305}),
    ("pilot_rows", {"pilot_rows": 9_999}),
    ("apps", {"apps": four_apps()[:3]}),
    ("apps", {"apps": four_apps()[:3] + four_apps()[:1]}),
])
def test_invalid_generator_field_raises_value_error_naming_the_parameter(param, kwargs):
    with raises_naming(param):
        GeneratorConfig(**kwargs)


@pytest.mark.parametrize("param, kwargs", [
    ("ctr", {"ctr": 0.0}),
    ("ctr", {"ctr": 0.5}),
    ("cart_given_click", {"cart_given_click": 0.9}),
    ("cart_given_click", {"cart_given_click": 0.0}),
    ("purchase_given_click", {"purchase_given_click": 0.10, "cart_given_click": 0.10}),
    ("purchase_given_click", {"purchase_given_click": 0.2, "cart_given_click": 0.1}),
    ("purchase_given_click", {"purchase_given_click": 0.0}),
])
def test_invalid_funnel_rate_raises_value_error_naming_the_parameter(param, kwargs):
    with raises_naming(param):
        FunnelRates(**kwargs)


@pytest.mark.parametrize("param, kwargs", [
    ("share", {"share": 0.0}),
    ("clickbait_mix", {"clickbait_mix": 1.5}),
    ("targeting", {"targeting": -0.1}),
    ("max_slot", {"max_slot": 0}),
    ("max_slot", {"max_slot": 51}),
])
def test_invalid_media_app_field_raises_value_error_naming_the_parameter(param, kwargs):
    with raises_naming(param):
        MediaApp(**{"name": "x", "share": 1.0, **kwargs})


@pytest.mark.parametrize("trend", [math.nan, math.inf, -math.inf, 1.01, -1.5, 3.0])
def test_cvr_trend_that_is_not_finite_or_beyond_one_logit_per_day_raises_naming_it(trend,
                                                                                   tmp_path):
    with pytest.raises(ValueError, match=re.escape("'cvr_trend'")) as err:
        MediaApp("x", 1.0, cvr_trend=trend)
    assert "finite and in [-1, 1]" in str(err.value)
    # The same from a config file (YAML writes .nan / .inf).
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(
        {"apps": [{"name": f"a{i}", "share": 1, "cvr_trend": trend if i == 2 else 0.0}
                  for i in range(4)]}))
    with raises_naming("cvr_trend"):
        load_config(str(path))


def test_cvr_trend_defaults_to_zero_and_accepts_plus_or_minus_one():
    assert MediaApp("x", 1.0).cvr_trend == 0.0
    assert MediaApp("x", 1.0, cvr_trend=1.0).cvr_trend == 1.0
    assert MediaApp("x", 1.0, cvr_trend=-1).cvr_trend == -1
    trends = {a.name: a.cvr_trend for a in GeneratorConfig().apps}
    assert trends == {"shortvideo_a": 0.0, "shortvideo_b": 0.10, "livestream_c": -0.08,
                      "news_feed_d": 0.05, "game_e": -0.12}


def test_default_yaml_lists_every_field_with_the_dataclass_defaults():
    raw = yaml.safe_load(DEFAULT_YAML.read_text())
    assert load_config(str(DEFAULT_YAML)) == GeneratorConfig()
    # Every field is spelled out (the file documents them all), apps included.
    assert set(raw) == {f.name for f in dataclasses.fields(GeneratorConfig)}
    for app in raw["apps"]:
        assert set(app) == {f.name for f in dataclasses.fields(MediaApp)}


@pytest.mark.parametrize("cls, param, kwargs", [
    (Effects, "category_conv_sd", {"category_conv_sd": -0.1}),
    (MediaSignal, "shopping_noise", {"shopping_noise": -1.0}),
    (MediaSignal, "ad_click_noise", {"ad_click_noise": -1.0}),
    (MediaSignal, "interest_accuracy", {"interest_accuracy": 1.5}),
])
def test_invalid_effect_or_media_signal_raises_value_error_naming_the_parameter(cls, param,
                                                                                 kwargs):
    with raises_naming(param):
        cls(**kwargs)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        GeneratorConfig().days = 3


def test_load_config_without_a_path_gives_the_defaults(tmp_path):
    assert load_config(None) == GeneratorConfig()
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set\n")
    assert load_config(str(empty)) == GeneratorConfig()


def test_load_config_reads_yaml_with_nested_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({
        "n_users": 5000, "days": 3, "rows_per_block": 4096,
        "rates": {"ctr": 0.03, "purchase_given_click": 0.01},
        "effects": {"clickbait_click": 1.2},
        "media": {"interest_accuracy": 0.9},
        "apps": [{"name": f"a{i}", "share": 1 + i, "cvr_offset": 0.1 * i} for i in range(4)],
    }))
    cfg = load_config(str(path))
    assert (cfg.n_users, cfg.days, cfg.rows_per_block) == (5000, 3, 4096)
    # A nested mapping overrides only the keys it names; the rest keep their defaults.
    assert cfg.rates == FunnelRates(ctr=0.03, cart_given_click=0.12, purchase_given_click=0.01)
    assert cfg.effects == dataclasses.replace(Effects(), clickbait_click=1.2)
    assert cfg.media == MediaSignal(interest_accuracy=0.9)
    # A list of apps replaces the default apps.
    assert [a.name for a in cfg.apps] == ["a0", "a1", "a2", "a3"]
    assert cfg.apps[2] == MediaApp("a2", 3, cvr_offset=0.2)
    assert cfg.n_items == GeneratorConfig().n_items


def test_load_config_reads_json(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"n_items": 5000, "rates": {"cart_given_click": 0.2}}))
    cfg = load_config(str(path))
    assert cfg.n_items == 5000
    assert cfg.rates == FunnelRates(cart_given_click=0.2)


def test_resolved_config_written_as_json_loads_back_equal(tmp_path):
    cfg = config_from_dict({"days": 2, "rates": {"ctr": 0.05},
                            "apps": [{"name": f"a{i}", "share": 0.25} for i in range(5)]})
    path = tmp_path / "generator_config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert load_config(str(path)) == cfg


@pytest.mark.parametrize("raw, key", [
    ({"n_user": 10}, "n_user"),
    ({"rates": {"ctr": 0.03, "cvr": 0.01}}, "cvr"),
    ({"effects": {"intent": 1.0}}, "intent"),
    ({"media": {"noise": 1.0}}, "noise"),
    ({"apps": [{"name": f"a{i}", "share": 1, "colour": "red"} for i in range(4)]}, "colour"),
])
def test_unknown_config_key_raises_value_error_naming_the_key(tmp_path, raw, key):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=re.escape(f"'{key}'")) as err:
        load_config(str(path))
    assert str(path) in str(err.value)


def test_invalid_value_in_a_config_file_raises_value_error_naming_the_parameter(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("rates:\n  purchase_given_click: 0.5\n")
    with raises_naming("purchase_given_click"):
        load_config(str(path))
    path.write_text("n_users: 20000000\n")
    with raises_naming("n_users"):
        load_config(str(path))
    path.write_text("user_zipf: 1.0\n")
    with raises_naming("user_zipf"):
        load_config(str(path))


def test_app_without_a_required_field_raises_value_error_naming_the_field():
    with pytest.raises(ValueError, match=re.escape("'name'")):
        config_from_dict({"apps": [{"share": 1.0}] * 4})


@pytest.mark.parametrize("raw, param", [
    ({"n_users": "many"}, "n_users"),
    ({"rates": {"ctr": "4%"}}, "ctr"),
    ({"days": True}, "days"),
    ({"apps": [{"name": f"a{i}", "share": "big"} for i in range(4)]}, "share"),
])
def test_non_numeric_value_raises_value_error_naming_the_parameter(raw, param):
    with raises_naming(param):
        config_from_dict(raw)


@pytest.mark.parametrize("text", ["rates: [1, 2]\n", "apps: {name: a}\n", "- 1\n- 2\n"])
def test_config_of_the_wrong_shape_raises_value_error(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ValueError):
        load_config(str(path))


def test_unparsable_config_file_raises_value_error_naming_the_file(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot parse"):
        load_config(str(path))
    bad_yaml = tmp_path / "cfg.yaml"
    bad_yaml.write_text("rates: {ctr: [\n")
    with pytest.raises(ValueError, match=re.escape(str(bad_yaml))):
        load_config(str(bad_yaml))


def test_missing_config_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(str(tmp_path / "absent.yaml"))


@pytest.mark.parametrize("value", [0.6, -0.51, float("nan"), float("inf")])
def test_cvr_sharpness_trend_beyond_half_a_unit_per_day_or_not_finite_raises_naming_it(value):
    with pytest.raises(ValueError, match=re.escape("'cvr_sharpness_trend'")):
        MediaApp("x", 1.0, cvr_sharpness_trend=value)


def test_cvr_sharpness_trend_defaults_to_zero_on_every_default_app():
    assert MediaApp("x", 1.0).cvr_sharpness_trend == 0.0
    assert all(a.cvr_sharpness_trend == 0.0 for a in GeneratorConfig().apps)


@pytest.mark.parametrize("field, value", [("need_click", -0.1), ("need_click", 5.5),
                                          ("need_click", float("nan"))])
def test_an_out_of_range_need_effect_is_refused_with_its_name(field, value):
    with pytest.raises(ValueError, match=field):
        MediaApp("x", 0.2, **{field: value})


def test_an_out_of_range_conversion_need_effect_is_refused_with_its_name():
    for field in ("need_cart", "need_buy"):
        with pytest.raises(ValueError, match=field):
            Effects(**{field: -1.0})
