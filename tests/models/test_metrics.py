"""Tests of ``models.metrics`` against scikit-learn and brute-force formulas."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss, roc_auc_score

from models import metrics as m
from preprocessing import columns as cols


def _data(seed: int, n: int = 2000, rate: float = 0.3):
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    y = (rng.random(n) < np.clip(rate + 0.5 * (p - 0.5), 0.01, 0.99)).astype(np.int64)
    return y, p, rng


# --------------------------------------------------------------------------------------------
# AUC
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_on_continuous_scores(seed):
    y, p, _ = _data(seed)
    assert m.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-9)


@pytest.mark.parametrize("decimals", [0, 1, 2])
@pytest.mark.parametrize("seed", range(3))
def test_auc_matches_sklearn_with_heavy_ties(seed, decimals):
    y, p, _ = _data(seed, n=5000)
    p_tied = np.round(p, decimals)
    assert m.auc(y, p_tied) == pytest.approx(roc_auc_score(y, p_tied), abs=1e-9)


def test_auc_matches_sklearn_on_integer_scores_and_bool_labels():
    rng = np.random.default_rng(7)
    y = rng.random(3000) < 0.05
    p = rng.integers(0, 5, 3000)
    assert m.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-9)


def test_auc_is_half_for_constant_predictions():
    y, _, _ = _data(1)
    assert m.auc(y, np.full(len(y), 0.3)) == 0.5


def test_auc_is_one_for_perfect_and_zero_for_reversed_ranking():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    assert m.auc(y, p) == 1.0
    assert m.auc(y, -p) == 0.0


def test_auc_is_nan_when_only_one_class_or_no_rows():
    assert math.isnan(m.auc(np.ones(10), np.random.default_rng(0).random(10)))
    assert math.isnan(m.auc(np.zeros(10), np.random.default_rng(0).random(10)))
    assert math.isnan(m.auc([], []))


def test_auc_accepts_infinite_scores():
    y = np.array([0, 1, 0, 1, 1])
    p = np.array([-np.inf, np.inf, 0.2, 0.2, np.inf])
    assert m.auc(y, p) == pytest.approx(roc_auc_score(y, np.nan_to_num(p)), abs=1e-12)


def test_auc_rejects_non_binary_labels_nan_scores_and_length_mismatch():
    with pytest.raises(ValueError, match="binary"):
        m.auc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        m.auc([0, 1, 0], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="equal lengths"):
        m.auc([0, 1, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="1-D"):
        m.auc(np.zeros((2, 2)), np.zeros((2, 2)))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 300), st.integers(0, 3))
def test_auc_is_invariant_under_strictly_monotone_transforms(seed, n, decimals):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.round(rng.random(n), decimals)
    base = m.auc(y, p)
    for transformed in (np.exp(3 * p), p ** 3 + 7, np.log1p(p), 1 / (1 + np.exp(-10 * p))):
        other = m.auc(y, transformed)
        if math.isnan(base):
            assert math.isnan(other)
        else:
            assert other == pytest.approx(base, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 300), st.integers(0, 3))
def test_auc_of_negated_scores_is_one_minus_auc_when_both_classes_present(seed, n, decimals):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    p = np.round(rng.random(n), decimals)
    assert m.auc(y, -p) == pytest.approx(1.0 - m.auc(y, p), abs=1e-12)
    assert m.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-9)


# --------------------------------------------------------------------------------------------
# GAUC
# --------------------------------------------------------------------------------------------

def _gauc_brute(y, p, groups):
    num = den = 0.0
    for g in np.unique(groups):
        mask = groups == g
        if len(np.unique(y[mask])) < 2:
            continue
        num += mask.sum() * roc_auc_score(y[mask], p[mask])
        den += mask.sum()
    return num / den if den else float("nan")


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("seed", range(3))
def test_gauc_matches_impression_weighted_sklearn_loop_over_groups(seed, decimals):
    y, p, rng = _data(seed, n=3000)
    if decimals is not None:
        p = np.round(p, decimals)
    groups = rng.integers(0, 150, len(y))
    assert m.gauc(y, p, groups) == pytest.approx(_gauc_brute(y, p, groups), abs=1e-9)


def test_gauc_excludes_single_class_groups_and_weights_by_impressions():
    # group 10: 4 rows, AUC 1; group 20: 2 rows, AUC 0; group 30: all negative (excluded);
    # group 40: all positive (excluded)
    y = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1])
    p = np.array([.1, .2, .8, .9, .1, .9, .5, .6, .7, .3, .4])
    g = np.array([10, 10, 10, 10, 20, 20, 30, 30, 30, 40, 40])
    assert m.gauc(y, p, g) == pytest.approx((4 * 1.0 + 2 * 0.0) / 6, abs=1e-12)
    assert m.gauc(y, p, g) == pytest.approx(_gauc_brute(y, p, g), abs=1e-12)


def test_gauc_accepts_string_and_sparse_integer_group_keys():
    y, p, rng = _data(3, n=2000)
    ids = rng.integers(0, 80, len(y))
    expected = _gauc_brute(y, p, ids)
    assert m.gauc(y, p, ids.astype(str)) == pytest.approx(expected, abs=1e-9)
    assert m.gauc(y, p, ids * 10_000_019 - 5) == pytest.approx(expected, abs=1e-9)


def test_gauc_is_nan_when_no_group_has_both_classes():
    y = np.array([0, 0, 1, 1])
    g = np.array([1, 1, 2, 2])
    assert math.isnan(m.gauc(y, [0.1, 0.2, 0.3, 0.4], g))
    assert math.isnan(m.gauc([], [], []))


def test_gauc_with_one_group_equals_auc():
    y, p, _ = _data(4)
    assert m.gauc(y, p, np.zeros(len(y), dtype=int)) == pytest.approx(m.auc(y, p), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_logloss_matches_sklearn_after_clipping(seed):
    y, p, _ = _data(seed)
    p = p.copy()
    p[:5] = [0.0, 1.0, 1e-12, 1 - 1e-12, 0.5]
    eps = 1e-7
    expected = log_loss(y, np.clip(p, eps, 1 - eps), labels=[0, 1])
    assert m.logloss(y, p) == pytest.approx(expected, rel=1e-12)


def test_logloss_is_finite_for_confidently_wrong_predictions():
    value = m.logloss([1, 0], [0.0, 1.0])
    assert value == pytest.approx(-math.log(1e-7), rel=1e-9)


def test_logloss_uses_the_given_eps():
    assert m.logloss([1], [0.0], eps=1e-3) == pytest.approx(-math.log(1e-3), rel=1e-12)
    with pytest.raises(ValueError):
        m.logloss([1], [0.5], eps=0.0)


def test_pcoc_is_sum_of_predictions_over_sum_of_labels():
    y, p, _ = _data(2)
    assert m.pcoc(y, p) == pytest.approx(p.sum() / y.sum(), rel=1e-12)


def test_pcoc_is_inf_without_positives_and_nan_when_also_no_predicted_mass():
    assert m.pcoc([0, 0], [0.1, 0.2]) == math.inf
    assert math.isnan(m.pcoc([0, 0], [0.0, 0.0]))
    assert math.isnan(m.pcoc([], []))


# --------------------------------------------------------------------------------------------
# ECE and the reliability curve
# --------------------------------------------------------------------------------------------

def _ece_width_brute(y, p, n_bins):
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        mask = (p >= lo) & ((p < hi) if b < n_bins - 1 else (p <= 1.0))
        if mask.any():
            total += mask.sum() / len(y) * abs(y[mask].mean() - p[mask].mean())
    return total


def _ece_freq_brute(y, p, n_bins):
    total = 0.0
    for chunk in np.array_split(np.argsort(p, kind="stable"), n_bins):
        if len(chunk):
            total += len(chunk) / len(y) * abs(y[chunk].mean() - p[chunk].mean())
    return total


@pytest.mark.parametrize("n_bins", [1, 7, 10, 100])
@pytest.mark.parametrize("seed", range(3))
def test_ece_equal_width_matches_brute_force_bin_loop(seed, n_bins):
    y, p, _ = _data(seed, n=1999)
    p = p ** 2
    p[:3] = [0.0, 1.0, 0.5]
    assert m.ece(y, p, n_bins, "equal_width") == pytest.approx(
        _ece_width_brute(y, p, n_bins), abs=1e-12)


@pytest.mark.parametrize("n_bins", [1, 3, 10, 64])
@pytest.mark.parametrize("seed", range(3))
def test_ece_equal_frequency_matches_brute_force_array_split(seed, n_bins):
    y, p, _ = _data(seed, n=1003)
    assert m.ece(y, p, n_bins, "equal_frequency") == pytest.approx(
        _ece_freq_brute(y, p, n_bins), abs=1e-12)


def test_ece_equal_frequency_splits_ties_by_stable_sort_order():
    y, p, _ = _data(8, n=1000)
    p_tied = np.round(p, 1)
    assert m.ece(y, p_tied, 10, "equal_frequency") == pytest.approx(
        _ece_freq_brute(y, p_tied, 10), abs=1e-12)


def test_ece_with_fewer_rows_than_bins_leaves_empty_bins_out():
    y = np.array([1, 0, 1])
    p = np.array([0.9, 0.2, 0.4])
    expected = (abs(1 - 0.9) + abs(0 - 0.2) + abs(1 - 0.4)) / 3
    assert m.ece(y, p, 10, "equal_frequency") == pytest.approx(expected, abs=1e-12)
    assert m.ece(y, p, 100, "equal_width") == pytest.approx(expected, abs=1e-12)


def test_ece_wrappers_use_the_project_default_bins():
    y, p, _ = _data(9)
    assert m.ece_equal_frequency(y, p) == m.ece(y, p, 10, "equal_frequency")
    assert m.ece_equal_width(y, p) == m.ece(y, p, 100, "equal_width")
    assert m.ece(y, p) == m.ece_equal_frequency(y, p)


def test_ece_rejects_unknown_binning_bad_bins_and_out_of_range_equal_width():
    with pytest.raises(ValueError, match="binning"):
        m.ece([0, 1], [0.1, 0.2], 10, "quantile")
    with pytest.raises(ValueError, match="n_bins"):
        m.ece([0, 1], [0.1, 0.2], 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.ece([0, 1], [0.1, 1.2], 10, "equal_width")


def test_ece_is_nan_without_rows_and_zero_for_perfect_bin_calibration():
    assert math.isnan(m.ece([], []))
    y = np.array([0, 1, 0, 1])
    assert m.ece(y, np.full(4, 0.5), 1) == 0.0


@pytest.mark.parametrize("binning,n_bins", [("equal_frequency", 10), ("equal_width", 20)])
def test_reliability_curve_returns_per_bin_means_and_counts_consistent_with_ece(binning, n_bins):
    y, p, _ = _data(10, n=777)
    mean_p, mean_y, counts = m.reliability_curve(y, p, n_bins, binning)
    assert mean_p.shape == mean_y.shape == counts.shape == (n_bins,)
    assert counts.sum() == len(y)
    filled = counts > 0
    recomputed = np.sum(counts[filled] / len(y) * np.abs(mean_y[filled] - mean_p[filled]))
    assert recomputed == pytest.approx(m.ece(y, p, n_bins, binning), abs=1e-12)
    assert np.all(np.diff(mean_p[filled]) >= 0)
    if binning == "equal_frequency":
        sizes = [len(c) for c in np.array_split(np.arange(len(y)), n_bins)]
        assert counts.tolist() == sizes


def test_reliability_curve_marks_empty_bins_with_nan_and_zero_count():
    mean_p, mean_y, counts = m.reliability_curve([0, 1], [0.05, 0.95], 10, "equal_width")
    assert counts.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert np.isnan(mean_p[1:9]).all() and np.isnan(mean_y[1:9]).all()
    assert mean_p[0] == 0.05 and mean_y[9] == 1.0


# --------------------------------------------------------------------------------------------
# Field-RCE and Field-ECE
# --------------------------------------------------------------------------------------------

def _field_rce_brute(y, p, field):
    total = 0.0
    for z in np.unique(field):
        mask = field == z
        if y[mask].sum() > 0:
            total += mask.sum() * abs((y[mask] - p[mask]).sum()) / y[mask].sum()
    return total / len(y)


def _field_ece_brute(y, p, field):
    total = 0.0
    for z in np.unique(field):
        mask = field == z
        total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return total / len(y)


@pytest.mark.parametrize("seed", range(4))
def test_field_rce_and_field_ece_match_brute_force_loops(seed):
    y, p, rng = _data(seed, n=3000, rate=0.02)
    field = rng.integers(0, 60, len(y))
    assert m.field_rce(y, p * 0.05, field) == pytest.approx(
        _field_rce_brute(y, p * 0.05, field), rel=1e-10)
    assert m.field_ece(y, p * 0.05, field) == pytest.approx(
        _field_ece_brute(y, p * 0.05, field), rel=1e-10)


def test_field_rce_skips_values_without_positives_but_counts_their_rows_in_n():
    # field a: 2 rows, 1 positive, sum(p) 0.5 -> term 2 * 0.5 / 1 = 1.0
    # field b: 3 rows, no positive -> no term, but its 3 rows are in N = 5
    y = np.array([1, 0, 0, 0, 0])
    p = np.array([0.3, 0.2, 0.1, 0.1, 0.1])
    field = np.array(["a", "a", "b", "b", "b"])
    assert m.field_rce(y, p, field) == pytest.approx(1.0 / 5, abs=1e-12)
    assert m.field_rce(y, p, field) == pytest.approx(_field_rce_brute(y, p, field), abs=1e-12)
    # Field-ECE keeps field b: (|1 - 0.5| + |0 - 0.3|) / 5
    assert m.field_ece(y, p, field) == pytest.approx((0.5 + 0.3) / 5, abs=1e-12)


def test_field_rce_is_zero_without_positives_and_both_are_nan_without_rows():
    assert m.field_rce([0, 0], [0.1, 0.2], [1, 2]) == 0.0
    assert math.isnan(m.field_rce([], [], []))
    assert math.isnan(m.field_ece([], [], []))


def test_field_ece_with_one_field_value_equals_one_bin_ece():
    y, p, _ = _data(6)
    assert m.field_ece(y, p, np.zeros(len(y))) == pytest.approx(m.ece(y, p, 1), abs=1e-12)


# --------------------------------------------------------------------------------------------
# evaluate_predictions
# --------------------------------------------------------------------------------------------

def _frame(seed: int = 0, n: int = 20_000):
    rng = np.random.default_rng(seed)
    p_click = rng.uniform(0.02, 0.4, n)
    p_cvr = rng.uniform(0.01, 0.3, n)
    click = (rng.random(n) < p_click).astype(np.int8)
    cf = (rng.random(n) < p_cvr).astype(np.int8)
    purchase = click * cf
    return {
        "click": click,
        "purchase": purchase,
        "pctr": np.clip(p_click + rng.normal(0, 0.05, n), 0.001, 0.999),
        "pcvr": np.clip(p_cvr + rng.normal(0, 0.05, n), 0.001, 0.999),
        "purchase_counterfactual": cf,
        "p_click": p_click,
        "p_purchase_given_click": p_cvr,
        "user_id": rng.integers(0, 500, n),
        "app_id": rng.integers(0, 12, n),
        "category_id": rng.integers(0, 30, n),
    }


ALL_KEYS = {
    "n_impressions", "n_clicks", "n_purchases", "n_counterfactual_purchases",
    "ctr_auc", "cvr_auc_clicked", "ctcvr_auc", "entire_space_cvr_auc",
    "oracle_ctr_auc", "oracle_cvr_auc_clicked", "oracle_ctcvr_auc",
    "oracle_entire_space_cvr_auc", "ctr_gauc_user", "cvr_gauc_user_clicked",
    "ctr_logloss", "cvr_logloss_clicked", "cvr_pcoc_clicked", "cvr_ece_eqfreq10_clicked",
    "cvr_ece_eqwidth100_clicked", "field_rce_app", "field_ece_app", "field_rce_category",
    "field_ece_category",
}
REQUIRED_ONLY_KEYS = {
    "n_impressions", "n_clicks", "n_purchases", "ctr_auc", "cvr_auc_clicked", "ctcvr_auc",
    "ctr_logloss", "cvr_logloss_clicked", "cvr_pcoc_clicked", "cvr_ece_eqfreq10_clicked",
    "cvr_ece_eqwidth100_clicked",
}


def test_evaluate_predictions_returns_every_key_with_values_of_the_individual_metrics():
    f = _frame()
    out = m.evaluate_predictions(f)
    assert set(out) == ALL_KEYS
    c = f["click"] == 1
    y, cf = f["purchase"], f["purchase_counterfactual"]
    expected = {
        "n_impressions": len(y), "n_clicks": int(f["click"].sum()), "n_purchases": int(y.sum()),
        "n_counterfactual_purchases": int(cf.sum()),
        "ctr_auc": m.auc(f["click"], f["pctr"]),
        "cvr_auc_clicked": m.auc(y[c], f["pcvr"][c]),
        "ctcvr_auc": m.auc(f["click"] * y, f["pctr"] * f["pcvr"]),
        "entire_space_cvr_auc": m.auc(cf, f["pcvr"]),
        "oracle_ctr_auc": m.auc(f["click"], f["p_click"]),
        "oracle_cvr_auc_clicked": m.auc(y[c], f["p_purchase_given_click"][c]),
        "oracle_ctcvr_auc": m.auc(f["click"] * y, f["p_click"] * f["p_purchase_given_click"]),
        "oracle_entire_space_cvr_auc": m.auc(cf, f["p_purchase_given_click"]),
        "ctr_gauc_user": m.gauc(f["click"], f["pctr"], f["user_id"]),
        "cvr_gauc_user_clicked": m.gauc(y[c], f["pcvr"][c], f["user_id"][c]),
        "ctr_logloss": m.logloss(f["click"], f["pctr"]),
        "cvr_logloss_clicked": m.logloss(y[c], f["pcvr"][c]),
        "cvr_pcoc_clicked": m.pcoc(y[c], f["pcvr"][c]),
        "cvr_ece_eqfreq10_clicked": m.ece(y[c], f["pcvr"][c], 10, "equal_frequency"),
        "cvr_ece_eqwidth100_clicked": m.ece(y[c], f["pcvr"][c], 100, "equal_width"),
        "field_rce_app": m.field_rce(y[c], f["pcvr"][c], f["app_id"][c]),
        "field_ece_app": m.field_ece(y[c], f["pcvr"][c], f["app_id"][c]),
        "field_rce_category": m.field_rce(y[c], f["pcvr"][c], f["category_id"][c]),
        "field_ece_category": m.field_ece(y[c], f["pcvr"][c], f["category_id"][c]),
    }
    assert out == expected
    # cross-check a few against scikit-learn directly
    assert out["ctr_auc"] == pytest.approx(roc_auc_score(f["click"], f["pctr"]), abs=1e-9)
    assert out["cvr_auc_clicked"] == pytest.approx(roc_auc_score(y[c], f["pcvr"][c]), abs=1e-9)
    assert out["ctr_logloss"] == pytest.approx(log_loss(f["click"], f["pctr"]), rel=1e-9)
    # the oracle is the ceiling on this data
    assert out["oracle_entire_space_cvr_auc"] > out["entire_space_cvr_auc"]
    assert isinstance(out["n_clicks"], int) and isinstance(out["ctr_auc"], float)


def test_evaluate_predictions_accepts_a_dataframe_and_gives_the_same_result():
    f = _frame(1, n=5000)
    assert m.evaluate_predictions(pd.DataFrame(f)) == m.evaluate_predictions(f)


def test_evaluate_predictions_omits_keys_whose_optional_inputs_are_missing():
    f = _frame(2, n=5000)
    required = {k: f[k] for k in ("click", "purchase", "pctr", "pcvr")}
    assert set(m.evaluate_predictions(required)) == REQUIRED_ONLY_KEYS
    only_truth_cvr = dict(required, p_purchase_given_click=f["p_purchase_given_click"])
    assert set(m.evaluate_predictions(only_truth_cvr)) == REQUIRED_ONLY_KEYS | {
        "oracle_cvr_auc_clicked"}
    with_none = dict(required, user_id=None, app_id=f["app_id"])
    assert set(m.evaluate_predictions(with_none)) == REQUIRED_ONLY_KEYS | {
        "field_rce_app", "field_ece_app"}


def test_evaluate_predictions_raises_key_error_when_a_required_column_is_missing():
    f = _frame(3, n=100)
    del f["pcvr"]
    with pytest.raises(KeyError, match="pcvr"):
        m.evaluate_predictions(f)


def test_evaluate_predictions_reads_the_canonical_column_names():
    assert (m.CLICK, m.PURCHASE, m.PURCHASE_COUNTERFACTUAL, m.P_CLICK,
            m.P_PURCHASE_GIVEN_CLICK, m.USER_ID, m.APP_ID, m.CATEGORY_ID) == (
        cols.CLICK, cols.PURCHASE, cols.PURCHASE_COUNTERFACTUAL, cols.P_CLICK,
        cols.P_PURCHASE_GIVEN_CLICK, cols.USER_ID, cols.APP_ID, cols.CATEGORY_ID)


# --------------------------------------------------------------------------------------------
# aggregation over seeds
# --------------------------------------------------------------------------------------------

def test_mean_std_uses_sample_std_and_zero_for_a_single_value():
    assert m.mean_std([1.0, 2.0, 3.0]) == (2.0, pytest.approx(1.0))
    assert m.mean_std(np.array([0.7])) == (0.7, 0.0)
    with pytest.raises(ValueError):
        m.mean_std([])


def test_format_mean_std_renders_mean_plus_minus_std_with_the_given_digits():
    assert m.format_mean_std([0.1230, 0.1238]) == "0.1234 ± 0.0006"
    assert m.format_mean_std(iter([0.25, 0.75]), digits=2) == "0.50 ± 0.35"


def test_format_mean_std_prints_a_single_seed_alone():
    assert m.format_mean_std([0.5], digits=2) == "0.50"


def test_intervals_overlap_is_false_only_for_separated_mean_std_intervals():
    assert m.intervals_overlap([0.60, 0.62], [0.61, 0.63]) is True
    assert m.intervals_overlap([0.60, 0.61, 0.62], [0.70, 0.71, 0.72]) is False
    # touching intervals count as overlapping: 1 ± 0 and 1 ± 0
    assert m.intervals_overlap([1.0], [1.0]) is True
    # a NaN never lets a gain be claimed
    assert m.intervals_overlap([0.5, float("nan")], [0.9, 0.91]) is True


def test_metrics_module_does_not_import_tensorflow():
    import subprocess
    import sys
    code = "import sys, models.metrics; print('tensorflow' in sys.modules)"
    repo_root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(repo_root), check=True)
    assert res.stdout.strip() == "False"


def test_field_rce_truth_is_the_relative_error_of_each_values_predicted_mass():
    from models.metrics import field_rce_truth
    truth = np.array([0.1, 0.1, 0.2, 0.2, 0.0])
    field = np.array([1, 1, 2, 2, 3])
    # value 1: predicted 0.3 vs true 0.2 -> 0.5; value 2: 0.4 vs 0.4 -> 0; value 3: no truth
    pred = np.array([0.15, 0.15, 0.2, 0.2, 0.3])
    assert field_rce_truth(truth, pred, field) == pytest.approx((2 * 0.5 + 2 * 0.0) / 5)
    assert field_rce_truth(truth, truth, field) == 0.0
    assert np.isnan(field_rce_truth(np.array([]), np.array([]), np.array([])))
    with pytest.raises(ValueError):
        field_rce_truth(truth, pred[:3], field)
