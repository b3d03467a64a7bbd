"""Tests of ``preprocessing.generate``: the simulated funnel, its ground truth, output and CLI.

Two statistically sized data sets are generated once per module (500k rows with the default
config, 400k rows with non-default rates); the other tests use small, fast configs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from preprocessing import columns as C
from preprocessing.columns import DatasetSpec
from preprocessing.generate import day_filename, generate, main
from preprocessing.simulator.config import FunnelRates, GeneratorConfig
from preprocessing.simulator.sampler import ImpressionSampler

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_ROWS = 500_000
DEFAULT_SEED = 7
RATES_ROWS = 400_000
CUSTOM_RATES = FunnelRates(ctr=0.03, cart_given_click=0.06, purchase_given_click=0.01)
#: Relative error allowed for the intercepts solved on the pilot sample (200k rows, heavy-tailed
#: users and items): the mean true probabilities of the output differ from the targets by up to
#: ~2% at the seeds used here.
PILOT_REL_TOL = 0.05
Z = 4.0  # standard errors allowed for sampled quantities

#: Small and fast: several blocks per day, a small pilot.
SMALL = GeneratorConfig(days=3, rows_per_block=2048, pilot_rows=20_000)


# -------------------------------------------------------------------------------------- helpers

def read_days(out: Path) -> List[pa.Table]:
    """The day files of a generated directory, in day order."""
    return [pq.read_table(p) for p in sorted(out.glob("day_*.parquet"))]


def read_frame(out: Path) -> pd.DataFrame:
    """All day files as one DataFrame (without the list column)."""
    spec = DatasetSpec.load(str(out))
    cols = [c for c in spec.all_columns if c not in spec.multihot]
    return pd.concat([pq.read_table(p, columns=cols).to_pandas()
                      for p in sorted(out.glob("day_*.parquet"))], ignore_index=True)


def bernoulli_mean_se(p: np.ndarray) -> float:
    """Standard error of the mean of independent Bernoulli(p_i) draws."""
    return float(np.sqrt(np.sum(p * (1 - p))) / len(p))


def assert_rate(observed: float, target: float, n: int, what: str):
    """A sampled rate matches its target within Z binomial SEs plus the pilot-solve error."""
    tol = Z * np.sqrt(target * (1 - target) / n) + PILOT_REL_TOL * target
    assert abs(observed - target) <= tol, (f"{what}: observed {observed:.5f}, target {target}, "
                                           f"n={n}, tolerance {tol:.5f}")


def assert_calibrated(p: np.ndarray, y: np.ndarray, bins: int, what: str):
    """Equal-frequency bins of p: |mean(y) - mean(p)| within Z standard errors in every bin."""
    order = np.argsort(p, kind="stable")
    for k, idx in enumerate(np.array_split(order, bins)):
        pk, yk = p[idx], y[idx]
        gap = abs(yk.mean() - pk.mean())
        se = bernoulli_mean_se(pk)
        assert gap <= Z * se, (f"{what}, bin {k}: empirical {yk.mean():.5f} vs mean p "
                               f"{pk.mean():.5f} ({gap / se:.1f} SE, n={len(idx)})")


def small_config_file(tmp_path: Path, **overrides) -> Path:
    """A YAML file of the SMALL config with overrides."""
    raw = {"days": SMALL.days, "rows_per_block": SMALL.rows_per_block,
           "pilot_rows": SMALL.pilot_rows, **overrides}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """500k rows with the default config: (output dir, manifest)."""
    out = tmp_path_factory.mktemp("gen") / "default"
    manifest = generate(DEFAULT_ROWS, DEFAULT_SEED, str(out), GeneratorConfig(), progress=False)
    return out, manifest


@pytest.fixture(scope="module")
def default_frame(default_run) -> pd.DataFrame:
    return read_frame(default_run[0])


@pytest.fixture(scope="module")
def rates_run(tmp_path_factory):
    """400k rows with non-default target rates: (output dir, manifest, frame)."""
    out = tmp_path_factory.mktemp("gen") / "rates"
    cfg = GeneratorConfig(rates=CUSTOM_RATES, days=2)
    manifest = generate(RATES_ROWS, 11, str(out), cfg, progress=False)
    return out, manifest, read_frame(out)


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory) -> Dict[str, Path]:
    """The SMALL config generated with seed 11 twice and seed 12 once."""
    root = tmp_path_factory.mktemp("small")
    runs = {}
    for name, seed in (("a", 11), ("a_again", 11), ("b", 12)):
        generate(20_000, seed, str(root / name), SMALL, progress=False)
        runs[name] = root / name
    return runs


# ---------------------------------------------------------------------------------------- rates

def check_rates(df: pd.DataFrame, manifest: dict, rates: FunnelRates):
    n, clicks = len(df), int(df[C.CLICK].sum())
    assert manifest["rows"] == n and manifest["clicks"] == clicks
    ctr = df[C.CLICK].mean()
    cart = df.loc[df[C.CLICK] == 1, C.CART].mean()
    purchase = df.loc[df[C.CLICK] == 1, C.PURCHASE].mean()
    assert manifest["ctr"] == pytest.approx(ctr)
    assert manifest["cart_given_click"] == pytest.approx(cart)
    assert manifest["purchase_given_click"] == pytest.approx(purchase)
    assert_rate(ctr, rates.ctr, n, "CTR")
    assert_rate(cart, rates.cart_given_click, clicks, "cart | click")
    assert_rate(purchase, rates.purchase_given_click, clicks, "purchase | click")
    # The true probabilities hit the targets up to the pilot-solve error alone.
    p_click = df[C.P_CLICK].to_numpy()
    assert p_click.mean() == pytest.approx(rates.ctr, rel=PILOT_REL_TOL)
    w = p_click / p_click.sum()
    assert (w * df[C.P_CART_GIVEN_CLICK]).sum() == pytest.approx(rates.cart_given_click,
                                                                 rel=PILOT_REL_TOL)
    assert (w * df[C.P_PURCHASE_GIVEN_CLICK]).sum() == pytest.approx(
        rates.purchase_given_click, rel=PILOT_REL_TOL)


def test_default_config_rates_match_targets_within_sampling_and_pilot_error(default_run,
                                                                            default_frame):
    check_rates(default_frame, default_run[1], GeneratorConfig().rates)


def test_custom_rates_config_is_honoured_within_sampling_and_pilot_error(rates_run):
    out, manifest, df = rates_run
    check_rates(df, manifest, CUSTOM_RATES)
    assert json.loads((out / "generator_config.json").read_text())["rates"] == {
        "ctr": 0.03, "cart_given_click": 0.06, "purchase_given_click": 0.01}


# ---------------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_tables_for_every_day_file(small_runs):
    a, again = small_runs["a"], small_runs["a_again"]
    days_a, days_again = read_days(a), read_days(again)
    assert len(days_a) == SMALL.days == len(days_again)
    for ta, tb in zip(days_a, days_again):
        assert ta.equals(tb)
    for name in (C.SPEC_FILENAME, "generator_config.json"):
        assert (a / name).read_bytes() == (again / name).read_bytes()
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, again))
    for key in ("rows", "days", "ctr", "clicks", "purchases", "intercepts"):
        assert ma[key] == mb[key]


def test_different_seed_gives_different_data(small_runs):
    for ta, tb in zip(read_days(small_runs["a"]), read_days(small_runs["b"])):
        assert ta.num_rows == tb.num_rows
        assert not ta.equals(tb)
        for col in (C.USER_ID, C.ITEM_ID, C.P_CLICK, "media_shopping_minutes"):
            assert not ta.column(col).equals(tb.column(col))


# ------------------------------------------------------------------------------- output layout

def test_one_file_per_day_with_rows_split_evenly_and_a_constant_day_column(default_run):
    out, manifest = default_run
    days = GeneratorConfig().days
    files = sorted(p.name for p in out.glob("*.parquet"))
    assert files == [day_filename(d) for d in range(days)]
    counts = []
    for d in range(days):
        table = pq.read_table(out / day_filename(d), columns=[C.DAY])
        day = np.asarray(table.column(C.DAY))
        assert (day == d).all()
        counts.append(table.num_rows)
    assert sum(counts) == DEFAULT_ROWS
    assert max(counts) - min(counts) <= 1
    assert set(counts) <= {DEFAULT_ROWS // days, -(-DEFAULT_ROWS // days)}
    assert manifest["days"] == {day_filename(d): n for d, n in enumerate(counts)}
    assert sorted(os.listdir(out)) == sorted(
        files + [C.SPEC_FILENAME, "generator_config.json", "manifest.json"])


def test_each_day_file_is_written_in_row_groups_of_at_most_rows_per_block(small_runs):
    for path in sorted(small_runs["a"].glob("day_*.parquet")):
        meta = pq.ParquetFile(path).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert meta.num_row_groups == -(-meta.num_rows // SMALL.rows_per_block)
        assert max(sizes) <= SMALL.rows_per_block


def test_dataset_spec_lists_targets_ground_truth_and_media_columns(default_run):
    out, _ = default_run
    spec = DatasetSpec.load(str(out))
    assert spec == C.synthetic_spec()
    assert spec.targets == ("click", "cart", "purchase")
    assert {"p_click", "p_purchase_given_click", "purchase_counterfactual"} <= set(
        spec.ground_truth)
    assert "app_id" in spec.categorical
    assert spec.split == "day"
    schema = pq.read_schema(out / day_filename(0))
    assert schema.names == spec.all_columns
    media_in_file = [c for c in schema.names if c.startswith("media_")]
    assert media_in_file and sorted(spec.media_private) == sorted(media_in_file)
    assert not set(spec.media_private) & {*spec.targets, *spec.ground_truth}
    for col in spec.targets:
        assert schema.field(col).type == pa.int32()
    for col in spec.categorical:
        assert schema.field(col).type == pa.int64()
    for col in spec.continuous:
        assert schema.field(col).type == pa.float32()


def test_user_recent_cats_is_a_list_of_one_to_five_int64_categories(default_run):
    out, _ = default_run
    col = pq.read_table(out / day_filename(0), columns=["user_recent_cats"]).column(0)
    assert col.type == pa.list_(pa.int64())
    lengths = np.asarray(pc.list_value_length(col))
    assert lengths.min() == 1 and lengths.max() == 5
    assert set(np.unique(lengths)) == {1, 2, 3, 4, 5}
    values = np.asarray(pc.list_flatten(col))
    assert values.min() >= 0 and values.max() < GeneratorConfig().n_categories
    assert col.null_count == 0


def test_media_watch_minutes_has_about_five_percent_missing_values(default_frame):
    missing = default_frame["media_watch_minutes"].isna().mean()
    assert 0.03 < missing < 0.08
    others = [c for c in C.synthetic_spec().continuous if c != "media_watch_minutes"]
    assert not default_frame[others].isna().any().any()


# ------------------------------------------------------------------- ground truth: calibration

def test_true_p_click_is_calibrated_against_clicks(default_frame):
    assert_calibrated(default_frame[C.P_CLICK].to_numpy(), default_frame[C.CLICK].to_numpy(),
                      bins=10, what="click vs p_click")


def test_true_p_cart_given_click_is_calibrated_against_cart_among_clicks(default_frame):
    clicked = default_frame[default_frame[C.CLICK] == 1]
    assert_calibrated(clicked[C.P_CART_GIVEN_CLICK].to_numpy(), clicked[C.CART].to_numpy(),
                      bins=10, what="cart | click vs p_cart_given_click")


def test_true_p_purchase_given_click_is_calibrated_against_counterfactual_on_all_rows(
        default_frame):
    p = default_frame[C.P_PURCHASE_GIVEN_CLICK].to_numpy()
    assert_calibrated(p, default_frame[C.PURCHASE_COUNTERFACTUAL].to_numpy(), bins=5,
                      what="purchase_counterfactual vs p_purchase_given_click")
    assert_calibrated(default_frame[C.P_CART_GIVEN_CLICK].to_numpy(),
                      default_frame[C.CART_COUNTERFACTUAL].to_numpy(), bins=5,
                      what="cart_counterfactual vs p_cart_given_click")


def test_true_probabilities_are_valid_and_purchase_never_exceeds_cart(default_frame):
    p_click = default_frame[C.P_CLICK]
    p_cart = default_frame[C.P_CART_GIVEN_CLICK]
    p_buy = default_frame[C.P_PURCHASE_GIVEN_CLICK]
    for p in (p_click, p_cart, p_buy):
        assert ((p > 0) & (p < 1)).all()
    assert (p_buy <= p_cart).all()


# --------------------------------------------------------------- ground truth: counterfactuals

def test_counterfactual_labels_equal_observed_labels_on_clicks_and_respect_the_chain(
        default_frame):
    df = default_frame
    click, cart, purchase = df[C.CLICK], df[C.CART], df[C.PURCHASE]
    cart_cf, purchase_cf = df[C.CART_COUNTERFACTUAL], df[C.PURCHASE_COUNTERFACTUAL]
    clicked = click == 1
    assert (purchase[clicked] == purchase_cf[clicked]).all()
    assert (cart[clicked] == cart_cf[clicked]).all()
    assert ((purchase <= cart) & (cart <= click)).all()
    assert (purchase_cf <= cart_cf).all()
    unclicked = ~clicked
    assert (purchase[unclicked] == 0).all() and (cart[unclicked] == 0).all()
    assert purchase_cf[unclicked].sum() > 100
    assert cart_cf[unclicked].sum() > purchase_cf[unclicked].sum()
    for col in (C.CLICK, C.CART, C.PURCHASE, C.CART_COUNTERFACTUAL, C.PURCHASE_COUNTERFACTUAL):
        assert set(df[col].unique()) == {0, 1}


def test_selection_bias_makes_clicked_rows_convert_more_than_all_impressions(default_frame):
    p = default_frame[C.P_PURCHASE_GIVEN_CLICK].to_numpy()
    on_clicked = p[default_frame[C.CLICK].to_numpy() == 1]
    diff = on_clicked.mean() - p.mean()
    se = np.sqrt(on_clicked.var() / on_clicked.size + p.var() / p.size)
    print(f"mean p_purchase_given_click: clicked {on_clicked.mean():.5f}, all {p.mean():.5f}, "
          f"relative {diff / p.mean():+.1%}, {diff / se:.1f} SE")
    assert abs(diff) / p.mean() > 0.10
    assert abs(diff) / se > 8
    # The counterfactual purchase rate shows the same gap between clicked and all rows.
    cf = default_frame[C.PURCHASE_COUNTERFACTUAL].to_numpy()
    assert cf[default_frame[C.CLICK].to_numpy() == 1].mean() > 1.1 * cf.mean()


def test_conversion_varies_strongly_by_media_app_and_by_category(default_frame):
    by_app = default_frame.groupby(C.APP_ID)[C.P_PURCHASE_GIVEN_CLICK].mean()
    assert len(by_app) == len(GeneratorConfig().apps)
    cats = default_frame.groupby(C.CATEGORY_ID)[C.P_PURCHASE_GIVEN_CLICK].agg(["mean", "size"])
    cats = cats[cats["size"] >= 1000]
    assert len(cats) >= 20
    print(f"per-app max/min {by_app.max() / by_app.min():.1f}, per-category max/min "
          f"{cats['mean'].max() / cats['mean'].min():.1f} over {len(cats)} categories")
    assert by_app.max() / by_app.min() > 3
    assert cats["mean"].max() / cats["mean"].min() > 5


# ------------------------------------------------------------------- conversion trend over days

#: Conversion-rich rates, so that the observed purchases of one app on one day are plentiful.
TREND_RATES = FunnelRates(ctr=0.2, cart_given_click=0.2, purchase_given_click=0.08)


def trend_config(trends, days: int) -> GeneratorConfig:
    """The default apps with the given ``cvr_trend`` each, conversion-rich rates, a small pilot."""
    apps = tuple(dataclasses.replace(a, cvr_trend=t) for a, t in zip(GeneratorConfig().apps,
                                                                      trends))
    return GeneratorConfig(days=days, rows_per_block=16_384, pilot_rows=20_000,
                           rates=TREND_RATES, apps=apps)


def sample_frame(cfg: GeneratorConfig, rows: int, seed: int) -> pd.DataFrame:
    """All blocks of an ``ImpressionSampler`` (no files), the columns the trend tests use."""
    sampler = ImpressionSampler(cfg, seed, rows)
    cols = [C.APP_ID, C.DAY, C.CLICK, C.PURCHASE, C.P_CART_GIVEN_CLICK,
            C.P_PURCHASE_GIVEN_CLICK]
    return pd.concat([sampler.block(b).select(cols).to_pandas()
                      for b in range(sampler.n_blocks)], ignore_index=True)


def mean_and_se(x: pd.Series):
    return float(x.mean()), float(x.std() / np.sqrt(len(x)))


def observed_cvr_and_se(df: pd.DataFrame):
    """purchase | click and its binomial standard error."""
    clicked = df[df[C.CLICK] == 1]
    rate = float(clicked[C.PURCHASE].mean())
    return rate, float(np.sqrt(rate * (1 - rate) / len(clicked)))


def test_positive_cvr_trend_raises_that_apps_conversion_from_first_to_last_day_only():
    days, trend = 2, 1.0  # day offsets -0.5 and +0.5: one logit apart on the buy stage
    cfg = trend_config([trend, 0.0, 0.0, 0.0, 0.0], days)
    df = sample_frame(cfg, 200_000, seed=5)
    first, last = df[df[C.DAY] == 0], df[df[C.DAY] == days - 1]
    for app, trending in ((0, True), (1, False)):
        a, b = first[first[C.APP_ID] == app], last[last[C.APP_ID] == app]
        (p_a, se_pa), (p_b, se_pb) = (mean_and_se(x[C.P_PURCHASE_GIVEN_CLICK]) for x in (a, b))
        (y_a, se_ya), (y_b, se_yb) = observed_cvr_and_se(a), observed_cvr_and_se(b)
        se_p, se_y = np.hypot(se_pa, se_pb), np.hypot(se_ya, se_yb)
        print(f"app {app}: true pCVR day 0 {p_a:.4f} -> day {days - 1} {p_b:.4f}; observed "
              f"purchase | click {y_a:.4f} -> {y_b:.4f}")
        if trending:
            # +1 logit on buy and +0.5 on cart: measured 0.042 -> 0.094 at these rates.
            assert p_b > 1.8 * p_a and p_b - p_a > 10 * se_p
            assert y_b - y_a > Z * se_y
        else:
            assert abs(p_b - p_a) <= Z * se_p
            assert abs(y_b - y_a) <= Z * se_y


def test_cvr_trend_enters_the_cart_logit_at_half_and_the_buy_logit_fully_on_each_day():
    # With every trend 0 and with a trend on app 0, the same seed draws the same impressions
    # (the day takes no random draw), so the logits differ by the trend term and by the change
    # of the intercepts alone, which were solved on a pilot that includes the trend.
    days, trend = 5, 0.3
    still = ImpressionSampler(trend_config([0.0] * 5, days), 3, 20_000)
    moving = ImpressionSampler(trend_config([trend, 0.0, 0.0, 0.0, 0.0], days), 3, 20_000)
    d_cart = moving.intercepts.cart - still.intercepts.cart
    d_buy = moving.intercepts.buy - still.intercepts.buy
    assert moving.intercepts.click == still.intercepts.click

    def logit(p):
        return np.log(p) - np.log1p(-p)

    for block in range(moving.n_blocks):
        s, m = still.block(block).to_pandas(), moving.block(block).to_pandas()
        assert s[C.APP_ID].equals(m[C.APP_ID]) and s[C.P_CLICK].equals(m[C.P_CLICK])
        day = moving.block_day(block)
        shift = np.where(m[C.APP_ID] == 0, trend * (day - (days - 1) / 2), 0.0)
        cart_s, cart_m = s[C.P_CART_GIVEN_CLICK], m[C.P_CART_GIVEN_CLICK]
        buy_s = s[C.P_PURCHASE_GIVEN_CLICK] / cart_s
        buy_m = m[C.P_PURCHASE_GIVEN_CLICK] / cart_m
        np.testing.assert_allclose(logit(cart_m) - logit(cart_s), 0.5 * shift + d_cart,
                                   atol=1e-6)
        np.testing.assert_allclose(logit(buy_m) - logit(buy_s), shift + d_buy, atol=1e-6)


def test_zero_cvr_trend_keeps_each_apps_true_conversion_the_same_on_every_day():
    days = 3
    df = sample_frame(trend_config([0.0] * 5, days), 150_000, seed=9)
    for app, rows in df.groupby(C.APP_ID):
        overall = rows[C.P_PURCHASE_GIVEN_CLICK].mean()
        for day, on_day in rows.groupby(C.DAY):
            mean, se = mean_and_se(on_day[C.P_PURCHASE_GIVEN_CLICK])
            # Each day against the pooled mean (which shares a third of its rows): 4 SE.
            assert abs(mean - overall) <= Z * se, (
                f"app {app}, day {day}: mean true pCVR {mean:.5f} vs {overall:.5f} over all "
                f"days ({abs(mean - overall) / se:.1f} SE)")


# ------------------------------------------------------------------------ media informativeness

#: Advertiser-side features: the shop app's CRM and the ad itself, plus the app the ad ran on.
#: (``hour`` is left out only to keep the fit fast; its effect is small.)
ADVERTISER_CATEGORICAL = ["app_id", "category_id", "user_age", "user_gender", "user_city_tier",
                          "user_purchase_power", "creative_type", "slot_id"]
ADVERTISER_CONTINUOUS = ["item_price"]
#: Media-private features (``media_interest_cat`` helps only through its match with the ad's
#: category, which a linear model on one-hot ids cannot use, so it is left out).
MEDIA_CONTINUOUS = ["media_watch_minutes", "media_shopping_minutes", "media_active_days",
                    "media_ad_click_rate"]
LOG_COLUMNS = {"item_price", "media_watch_minutes", "media_shopping_minutes"}


def design(df: pd.DataFrame, categorical: List[str], continuous: List[str],
           levels: Dict[str, np.ndarray]) -> np.ndarray:
    """One-hot (first level dropped) + log1p'd continuous, NaN -> 0 plus a missing indicator."""
    parts = []
    for col in categorical:
        parts.append(df[col].to_numpy()[:, None] == levels[col][None, 1:])
    for col in continuous:
        x = df[col].to_numpy(dtype=np.float64)
        missing = np.isnan(x)
        if missing.any() or col == "media_watch_minutes":
            parts.append(missing[:, None])
            x = np.where(missing, 0.0, x)
        parts.append((np.log1p(x) if col in LOG_COLUMNS else x)[:, None])
    return np.hstack([p.astype(np.float32) for p in parts])


def test_media_features_raise_the_auc_of_counterfactual_purchase_prediction(default_frame):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    df = default_frame
    # Train on days 0-4 (every second row, to keep the fit short), test on day 6.
    train = df[df[C.DAY] <= 4].iloc[::2]
    test = df[df[C.DAY] == 6]
    y_train = train[C.PURCHASE_COUNTERFACTUAL].to_numpy()
    y_test = test[C.PURCHASE_COUNTERFACTUAL].to_numpy()
    assert y_train.sum() > 1500 and y_test.sum() > 500

    def auc(continuous):
        levels = {c: np.unique(train[c]) for c in ADVERTISER_CATEGORICAL}
        x_train = design(train, ADVERTISER_CATEGORICAL, continuous, levels)
        x_test = design(test, ADVERTISER_CATEGORICAL, continuous, levels)
        mu, sd = x_train.mean(0), x_train.std(0)
        sd[sd == 0] = 1.0
        model = LogisticRegression(max_iter=300).fit((x_train - mu) / sd, y_train)
        return roc_auc_score(y_test, model.decision_function((x_test - mu) / sd))

    advertiser = auc(ADVERTISER_CONTINUOUS)
    both = auc(ADVERTISER_CONTINUOUS + MEDIA_CONTINUOUS)
    print(f"AUC advertiser-only {advertiser:.4f}, advertiser+media {both:.4f}, "
          f"gain {both - advertiser:+.4f}")
    assert advertiser > 0.75  # the advertiser features alone are informative too
    # Measured gain: about 0.034 at seed 7; the paired sampling error is a few thousandths.
    assert both - advertiser > 0.015


# --------------------------------------------------------------------------------- bounded memory

def test_peak_memory_is_bounded_and_does_not_grow_with_the_row_count(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    # A small pilot, so that the blocks (not the 200k-row pilot sample) set the peak.
    cfg.write_text("rows_per_block: 16384\npilot_rows: 20000\n")
    sizes = {"small": 300_000, "large": 1_200_000}
    procs = {}
    for name, rows in sizes.items():  # run both at once: two cores
        command = [sys.executable, "-m", "preprocessing.generate", "--rows", str(rows),
                   "--seed", "3", "--out", str(tmp_path / name), "--config", str(cfg),
                   "--no-progress"]
        # Linux keeps ru_maxrss across fork + exec, so a generator started straight from this
        # (large) pytest process would report pytest's peak. A small intermediate process that
        # forks the generator gives it a clean count.
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", "import subprocess, sys; "
             "sys.exit(subprocess.call(sys.argv[1:]))", *command],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["rows"] == sizes[name]
        peak[name] = manifest["peak_rss_mb"]
    print(f"peak RSS: {sizes['small']:,} rows {peak['small']:.0f} MB, "
          f"{sizes['large']:,} rows {peak['large']:.0f} MB")
    assert peak["small"] < 600
    assert peak["large"] < 600
    assert peak["large"] <= 1.15 * peak["small"]


# ---------------------------------------------------------------------------------- atomic output

def _fail_on_block_2(monkeypatch):
    original = ImpressionSampler.block

    def block(self, index, rows=None):
        if index == 2:
            raise RuntimeError("simulated failure in block 2")
        return original(self, index, rows)

    monkeypatch.setattr(ImpressionSampler, "block", block)


def test_failed_generation_leaves_no_output_and_no_staging_directory(tmp_path, monkeypatch):
    _fail_on_block_2(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="block 2"):
        generate(20_000, 1, str(out), SMALL, progress=False)
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # no .out.partial-* staging directory either


def test_failed_generation_leaves_an_existing_output_directory_untouched(tmp_path, monkeypatch):
    out = tmp_path / "out"
    generate(5_000, 1, str(out), SMALL, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _fail_on_block_2(monkeypatch)
    with pytest.raises(RuntimeError, match="block 2"):
        generate(20_000, 2, str(out), SMALL, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert os.listdir(tmp_path) == ["out"]


def test_successful_generation_replaces_an_existing_output_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    generate(5_000, 1, str(out), SMALL, progress=False)
    assert not (out / "stale.txt").exists()
    assert (out / day_filename(0)).is_file()
    assert os.listdir(tmp_path) == ["out"]


# -------------------------------------------------------------------------------------------- CLI

def test_cli_returns_zero_writes_the_output_and_prints_the_summary_table(tmp_path, capsys):
    out = tmp_path / "out"
    cfg = small_config_file(tmp_path)
    rc = main(["--rows", "6000", "--seed", "5", "--out", str(out), "--config", str(cfg),
               "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "preprocessing.generate" in printed
    for label in ("rows", "6,000", "files (days)", "CTR", "purchase | click", "peak RSS (MB)"):
        assert label in printed
    assert sorted(p.name for p in out.glob("*.parquet")) == [day_filename(d) for d in range(3)]
    assert json.loads((out / "manifest.json").read_text())["rows"] == 6000


@pytest.mark.parametrize("config_text, param", [
    ("rates:\n  purchase_given_click: 0.5\n", "purchase_given_click"),
    ("n_users: 20000000\n", "n_users"),
    ("apps:\n  - {name: a, share: 1}\n", "apps"),
    ("rates:\n  cvr: 0.1\n", "cvr"),
    ("apps:\n" + "  - {share: 1}\n" * 4, "name"),
])
def test_cli_invalid_config_returns_2_with_a_message_naming_the_parameter(tmp_path, capsys,
                                                                          config_text, param):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(config_text)
    out = tmp_path / "out"
    rc = main(["--rows", "1000", "--out", str(out), "--config", str(cfg), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"'{param}'" in err
    assert not out.exists()


def test_cli_missing_config_file_or_bad_rows_returns_2(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--rows", "10", "--out", str(out), "--config",
                 str(tmp_path / "absent.yaml")]) == 2
    assert main(["--rows", "0", "--out", str(out), "--config",
                 str(small_config_file(tmp_path)), "--no-progress"]) == 2
    assert "'rows'" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------ conversion sharpness

def test_default_output_is_byte_identical_to_the_output_before_the_optional_effects(
        table_digest, default_digest):
    assert table_digest(ImpressionSampler(GeneratorConfig(pilot_rows=20_000), 11,
                                          30_000)) == default_digest


def test_cvr_sharpness_trend_scales_that_apps_cart_and_buy_logits_around_their_mean_by_day():
    days, sharp = 5, 0.2
    still = ImpressionSampler(trend_config([0.0] * 5, days), 3, 20_000)
    apps = tuple(dataclasses.replace(a, cvr_sharpness_trend=sharp if i == 0 else 0.0)
                 for i, a in enumerate(still.config.apps))
    moving = ImpressionSampler(dataclasses.replace(still.config, apps=apps), 3, 20_000)
    assert moving.intercepts.click == still.intercepts.click

    def logit(p):
        return np.log(p) - np.log1p(-p)

    for block in range(moving.n_blocks):
        s, m = still.block(block).to_pandas(), moving.block(block).to_pandas()
        assert s[C.APP_ID].equals(m[C.APP_ID])
        day = moving.block_day(block)
        scale = np.where(m[C.APP_ID] == 0, max(0.1, 1 + sharp * (day - (days - 1) / 2)), 1.0)
        # app 0 has offset 0 and no level trend: both logits minus the intercepts are scaled
        app0 = (m[C.APP_ID] == 0).to_numpy()
        cart_s = (logit(s[C.P_CART_GIVEN_CLICK]) - still.intercepts.cart).to_numpy()
        cart_m = (logit(m[C.P_CART_GIVEN_CLICK]) - moving.intercepts.cart).to_numpy()
        buy_s = (logit(s[C.P_PURCHASE_GIVEN_CLICK] / s[C.P_CART_GIVEN_CLICK])
                 - still.intercepts.buy).to_numpy()
        buy_m = (logit(m[C.P_PURCHASE_GIVEN_CLICK] / m[C.P_CART_GIVEN_CLICK])
                 - moving.intercepts.buy).to_numpy()
        for core_s, core_m in ((cart_s, cart_m), (buy_s, buy_m)):
            # scaled around the app's mean in the block, at the same mean exp(logit)
            mean = core_s[app0].mean()
            scaled = (scale * (core_s - mean) + mean)[app0]
            shift = np.log(np.exp(core_s[app0]).mean()) - np.log(np.exp(scaled).mean())
            np.testing.assert_allclose(core_m[app0], scaled + shift, atol=1e-6)
            assert np.exp(core_m[app0]).mean() == pytest.approx(np.exp(core_s[app0]).mean(),
                                                                rel=1e-6)
            if day != (days - 1) / 2:
                assert not np.allclose(core_m[app0], core_s[app0])
            # the other apps are not scaled
            np.testing.assert_allclose(core_m[~app0], core_s[~app0], atol=1e-6)


def test_the_shape_setting_config_loads_with_sharpness_trends_on_some_apps():
    from preprocessing.simulator.config import load_config
    path = Path(__file__).resolve().parents[2] / "preprocessing" / "configs" / \
        "calibration_shapes.yaml"
    cfg = load_config(str(path))
    sharp = [a.cvr_sharpness_trend for a in cfg.apps]
    assert any(s > 0 for s in sharp) and any(s < 0 for s in sharp)
    defaults = GeneratorConfig()
    # everything else is the default world
    assert [a.cvr_trend for a in cfg.apps] == [a.cvr_trend for a in defaults.apps]
    assert cfg.rates == defaults.rates and cfg.effects == defaults.effects


# ------------------------------------------------------------------------ selection on a need

STRONG_BIAS = REPO_ROOT / "preprocessing" / "configs" / "strong_bias.yaml"


def _without_need(cfg: GeneratorConfig) -> GeneratorConfig:
    apps = tuple(dataclasses.replace(a, need_click=0.0) for a in cfg.apps)
    return dataclasses.replace(cfg, apps=apps, effects=dataclasses.replace(
        cfg.effects, need_cart=0.0, need_buy=0.0))


def test_the_strong_bias_config_with_its_need_effects_at_zero_is_the_default_bit_for_bit(
        table_digest, default_digest):
    from preprocessing.simulator.config import load_config
    cfg = _without_need(dataclasses.replace(load_config(str(STRONG_BIAS)), pilot_rows=20_000))
    assert table_digest(ImpressionSampler(cfg, 11, 30_000)) == default_digest


def test_the_strong_bias_config_is_the_default_world_plus_need_effects_on_some_apps():
    from preprocessing.simulator.config import load_config
    cfg = load_config(str(STRONG_BIAS))
    assert _without_need(cfg) == GeneratorConfig()
    need = [a.need_click for a in cfg.apps]
    assert min(need) == 0.0 and max(need) >= 2.0
    assert cfg.effects.need_cart > 0 and cfg.effects.need_buy > 0


def test_a_selective_apps_clicks_convert_above_its_impressions_and_the_others_do_not():
    """With the need's click effect on app 0 only, the true purchase | click probability of
    app 0's clicked impressions rises far above that of all its impressions (E[conv | x, click]
    - E[conv | x] differs by app); on the other apps the ratio stays as without the need, and
    app 0's click rate keeps its order of magnitude."""
    base = GeneratorConfig(days=2, rows_per_block=16_384, pilot_rows=20_000,
                           rates=TREND_RATES)
    apps = tuple(dataclasses.replace(a, need_click=2.5 if i == 0 else 0.0)
                 for i, a in enumerate(base.apps))
    cfg = dataclasses.replace(base, apps=apps, effects=dataclasses.replace(
        base.effects, need_cart=1.0, need_buy=1.0))
    rows = 60_000
    frames = {}
    for name, c in (("need", cfg), ("none", base)):
        sampler = ImpressionSampler(c, 5, rows)
        frames[name] = pd.concat([sampler.block(b).select(
            [C.APP_ID, C.CLICK, C.P_CLICK, C.P_PURCHASE_GIVEN_CLICK]).to_pandas()
            for b in range(sampler.n_blocks)], ignore_index=True)
    lift = {k: (f[f[C.CLICK] == 1].groupby(C.APP_ID)[C.P_PURCHASE_GIVEN_CLICK].mean()
                / f.groupby(C.APP_ID)[C.P_PURCHASE_GIVEN_CLICK].mean())
            for k, f in frames.items()}
    # clicks select on intent everywhere (lift ~1.4 without the need); the need adds a
    # selection of its own on app 0 only
    assert lift["need"][0] > 2.0 * lift["none"][0]
    others = lift["need"].drop(0) / lift["none"].drop(0)
    assert ((others > 0.8) & (others < 1.25)).all(), others
    # - k^2 / 2 holds app 0's click rate at its order of magnitude (without it, exp(k^2 / 2)
    # = 23x more clicks before saturation); saturation at high needs lowers it (~0.45x here)
    ctr = {k: f.groupby(C.APP_ID)[C.P_CLICK].mean() for k, f in frames.items()}
    assert 0.35 < ctr["need"][0] / ctr["none"][0] < 1.2
