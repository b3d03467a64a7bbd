"""AdaCalib: adaptive buckets, exact gradients, per-app calibration, fallback, chaining."""

import numpy as np
import pytest

from models import metrics as M
from calibration import AdaCalibConfig, make_calibrator
from calibration.adacalib import (_build_groups, _key_point_net, _training_pairs,
                                         choose_buckets)
from calibration.artifact import logit


@pytest.fixture(scope="module")
def ada(cal_data):
    (p, y, f), _ = cal_data
    return make_calibrator("adacalib", ("app_id",)).fit(p, y, f)


def test_bucket_count_is_the_largest_candidate_with_enough_positives():
    assert choose_buckets(400, (2, 4, 8, 16, 32), 10) == 32
    assert choose_buckets(100, (2, 4, 8, 16, 32), 10) == 8
    assert choose_buckets(19, (2, 4, 8, 16, 32), 10) == 0    # level correction only


def test_values_with_more_data_get_more_buckets(ada):
    buckets = ada.spec_["meta"]["buckets"]["app_id"]
    # app 3 has 35% of the rows, app 7 8%
    assert buckets["3"] > buckets["7"] >= 2


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.001, 0.3, 4000)
    y = (rng.random(4000) < p * 1.5).astype(float)
    col = rng.integers(0, 3, 4000)
    cfg = AdaCalibConfig(min_positives_per_bucket=5, hidden_units=(5,), embedding_dim=2,
                         l2=1e-3)
    x = logit(p)
    glob, groups = _build_groups(x, y, col, cfg)
    all_groups = [glob] + groups
    net, seg_start = _key_point_net(all_groups, cfg)
    for k, v in net.params.items():                          # leave the identity start
        net.params[k] = v + rng.normal(0, 0.3, v.shape)
    pairs = _training_pairs(x, y, all_groups, seg_start, cfg)
    n_total = pairs[2].sum()
    _, grads = net.loss_and_grad(*pairs, n_total)
    for k, v in net.params.items():
        flat = v.reshape(-1)
        for i in rng.choice(len(flat), size=min(4, len(flat)), replace=False):
            old = flat[i]
            flat[i] = old + 1e-6
            up = net.loss_and_grad(*pairs, n_total)[0]
            flat[i] = old - 1e-6
            down = net.loss_and_grad(*pairs, n_total)[0]
            flat[i] = old
            num = (up - down) / 2e-6
            assert abs(num - grads[k].reshape(-1)[i]) < 1e-5 + 1e-4 * abs(num), (k, i)


def test_zero_iterations_is_the_identity_inside_the_data_range(cal_data):
    (p, y, f), _ = cal_data
    cal = make_calibrator("adacalib", ("app_id",), AdaCalibConfig(max_iter=0)).fit(p, y, f)
    inside = (p > 0.01) & (p < 0.1)
    unseen = {"app_id": np.full(len(p), 42)}                  # the global function alone
    np.testing.assert_allclose(cal.transform(p, unseen)[inside], p[inside], rtol=1e-9)


def test_functions_are_strictly_increasing_with_slope_one_tails(ada):
    stage = ada.spec_["stages"][0]
    for x, yk in zip(stage["x"] + [stage["fallback"]["x"]], stage["y"] + [stage["fallback"]["y"]]):
        slopes = np.diff(yk) / np.diff(x)
        assert slopes.min() > 0                               # no flat segment, no ties
        assert slopes[0] == pytest.approx(1.0) and slopes[-1] == pytest.approx(1.0)
    z = np.linspace(-12, 2, 2000)                             # also beyond the data range
    q = ada.transform(1 / (1 + np.exp(-z)), {"app_id": np.full(len(z), 3)})
    assert np.all(np.diff(q) > 0)


def test_level_offset_is_the_gamma_poisson_posterior_mean():
    from calibration.adacalib import level_offset
    g = np.full(1000, -3.0)                                   # 47.4 expected positives
    e = 1000 / (1 + np.exp(3.0))
    o, mult = level_offset(g, 2 * e, tau=10.0)
    assert mult == pytest.approx((2 * e + 10) / (e + 10))
    assert (1 / (1 + np.exp(-(g + o)))).sum() == pytest.approx(mult * e, rel=1e-9)
    o0, mult0 = level_offset(g, 0.0, tau=10.0)                # no positives: finite, shrunk
    assert np.isfinite(o0) and mult0 == pytest.approx(10 / (e + 10))


def test_adacalib_fixes_per_app_miscalibration_that_platt_leaves(ada, cal_data):
    (p, y, f), (pt, yt, ft) = cal_data
    q = ada.transform(pt, ft)
    platt = make_calibrator("platt").fit(p, y).transform(pt)
    rce_ada = M.field_rce(yt, q, ft["app_id"])
    assert rce_ada < 0.5 * M.field_rce(yt, platt, ft["app_id"])
    assert abs(M.pcoc(yt, q) - 1.0) < 0.05
    assert M.auc(yt, q) > M.auc(yt, pt)                       # per-app fix also ranks better


def test_unseen_value_falls_back_to_the_global_function(ada, cal_data):
    _, (pt, _, _) = cal_data
    spec = ada.spec_["stages"][0]
    assert 42 not in spec["values"]
    q_unseen = ada.transform(pt, {"app_id": np.full(len(pt), 42)})
    fallback = spec["fallback"]
    expected = 1 / (1 + np.exp(-np.interp(logit(pt), fallback["x"], fallback["y"])))
    np.testing.assert_allclose(q_unseen, expected, rtol=1e-12)


def test_value_with_few_positives_is_shrunk_toward_the_global_function(cal_data):
    (p, y, f), _ = cal_data
    f = dict(f)
    app = f["app_id"].copy()
    rare = np.flatnonzero(y == 1)[:5]
    app[rare] = 99                                            # 5 rows, 5 positives
    f["app_id"] = app
    cal = make_calibrator("adacalib", ("app_id",), AdaCalibConfig(shrink_level=10.0)).fit(p, y, f)
    assert 99 not in cal.spec_["meta"]["buckets"]["app_id"]  # no buckets of its own
    assert cal.spec_["meta"]["shape_weight"]["app_id"]["99"] == 0.0
    # a level correction only, bounded by the prior: (5 + 10) / (expected + 10) < 1.5
    assert 1.0 < cal.spec_["meta"]["level_multiplier"]["app_id"]["99"] < 1.5
    glob = cal.transform(p[rare], {"app_id": np.full(5, 42)})
    own = cal.transform(p[rare], {"app_id": np.full(5, 99)})
    assert np.all(own > glob) and np.all(own < 1.6 * glob)


def test_without_shrinkage_each_value_gets_its_own_level_and_its_own_function(cal_data):
    (p, y, f), _ = cal_data
    f = dict(f)
    app = f["app_id"].copy()
    rare = np.flatnonzero(y == 1)[:5]
    app[rare] = 99                                            # 5 rows, 5 positives
    f["app_id"] = app
    cal = make_calibrator("adacalib", ("app_id",), AdaCalibConfig(shrinkage=False)).fit(p, y, f)
    meta = cal.spec_["meta"]
    assert meta["shrink_level"]["app_id"] == 0.0
    # the level multiplier is the raw positives / expected, here far above the shrunk 1.5
    assert meta["level_multiplier"]["app_id"]["99"] > 5.0
    # values with buckets use their own function alone
    weights = meta["shape_weight"]["app_id"]
    assert all(weights[v] == 1.0 for v in meta["buckets"]["app_id"] if v != "global")
    shrunk = make_calibrator("adacalib", ("app_id",), AdaCalibConfig()).fit(p, y, f)
    assert all(0 < w < 1 for v, w in shrunk.spec_["meta"]["shape_weight"]["app_id"].items()
               if v in shrunk.spec_["meta"]["buckets"]["app_id"])


def test_empirical_bayes_strength_follows_the_spread_beyond_poisson_noise():
    from calibration.adacalib import empirical_bayes_strength
    rng = np.random.default_rng(0)
    expected = np.array([400.0, 300.0, 200.0, 100.0, 50.0] * 4)
    same = rng.poisson(expected).astype(float)                # no real differences
    spread = rng.poisson(expected * np.exp(rng.normal(0, 0.4, 20))).astype(float)
    assert empirical_bayes_strength(same, expected) > 30      # ~no per-value correction
    assert 2 < empirical_bayes_strength(spread, expected) < 20  # prior variance ~0.4^2
    assert empirical_bayes_strength(np.array([5.0]), np.array([3.0])) == 1e6


def test_two_fields_are_chained_and_both_are_needed(cal_data):
    (p, y, f), (pt, yt, ft) = cal_data
    cal = make_calibrator("adacalib", ("app_id", "category_id"),
                          AdaCalibConfig(max_iter=60)).fit(p, y, f)
    assert [s["field"] for s in cal.spec_["stages"]] == ["app_id", "category_id"]
    assert cal.fields == ("app_id", "category_id")
    q = cal.transform(pt, ft)
    assert M.field_rce(yt, q, ft["app_id"]) < 0.1


@pytest.mark.parametrize("bad", [dict(bucket_candidates=(4, 2)), dict(bucket_candidates=()),
                                 dict(shrink_level="x"), dict(shrink_level=0.0),
                                 dict(min_slope=1.0), dict(shrink_shape=0.0),
                                 dict(min_positives_per_bucket=0), dict(max_iter=-1),
                                 dict(hidden_units=(0,)), dict(bucket_mode="attention"),
                                 dict(feature_set="counts"), dict(heldout_min_positives=0)])
def test_config_is_validated(bad):
    with pytest.raises(ValueError, match="parameter must be"):
        AdaCalibConfig(**bad)


def test_heldout_bucket_count_keeps_a_level_only_fit_for_a_pure_level_shift_and_shapes_for_a_slope():
    """The paper's adaptive bucket count as a held-out choice: an app whose base is off only
    in level gains nothing from its own key points (K = 0 or few), an app whose base is off
    in slope needs them (K > 0)."""
    rng = np.random.default_rng(5)
    n = 80_000
    app = rng.choice([3, 4], size=n)
    z = rng.normal(-3.0, 1.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    base_logit = np.where(app == 3, z + 0.5, (z + 3.0) * 0.4 - 3.0)   # 3: level, 4: slope
    p = 1 / (1 + np.exp(-base_logit))
    from calibration.adacalib import heldout_bucket_counts
    cfg = AdaCalibConfig(max_iter=40, bucket_mode="heldout")
    k, scores = heldout_bucket_counts(logit(p), y, app, "app_id", cfg)
    assert k[4] > 0
    assert set(scores["3"]) == {"0", "2", "4", "8", "16", "32"}
    cal = make_calibrator("adacalib", ("app_id",), cfg).fit(p, y, {"app_id": app})
    assert cal.spec_["meta"]["heldout_ce"]["app_id"]["4"] == scores["4"]
    q = cal.transform(p, {"app_id": app})
    for a in (3, 4):
        assert q[app == a].sum() == pytest.approx(y[app == a].sum(), rel=0.05)


def test_smaller_feature_sets_fit_and_still_beat_a_global_method_per_app(cal_data):
    (p, y, f), (pt, yt, ft) = cal_data
    platt = make_calibrator("platt").fit(p, y)
    platt_rce = M.field_rce(yt, platt.transform(pt), ft["app_id"])
    for feature_set in ("posterior", "geometry"):
        cal = make_calibrator("adacalib", ("app_id",),
                              AdaCalibConfig(max_iter=40, feature_set=feature_set)).fit(p, y, f)
        rce = M.field_rce(yt, cal.transform(pt, ft), ft["app_id"])
        assert rce < 0.5 * platt_rce, feature_set
