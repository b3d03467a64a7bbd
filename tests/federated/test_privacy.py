"""federated.privacy: the DP accountant, embedding clip-and-noise, gradient defences and the
label-leak attacks they are measured by."""

import numpy as np
import pytest

from federated.privacy import (DPConfig, EmbeddingDP, GradientDefenceConfig, clip_rows,
                               direction_attack_scores, epsilon_for, noise_multiplier_for,
                               norm_attack_scores, pca_attack_scores, perturb_gradients,
                               secure_generator)
from models.metrics import auc

#: The defaults of DPConfig and EmbeddingDP, so that the (cached) accountant calls are shared.
DELTA = DPConfig().delta


def _two_class_gradients(seed: int, n: int = 2000, width: int = 8):
    """Labels and gradients where positives cluster around one mean with larger norms and
    negatives around another: both attacks separate them perfectly without a defence."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    mu_pos = np.zeros(width)
    mu_pos[0] = 0.5
    mu_neg = np.zeros(width)
    mu_neg[:2] = [-0.2, -0.1]
    g = np.where(y[:, None] == 1, mu_pos, mu_neg) + 0.05 * rng.normal(size=(n, width))
    return y, g.astype(np.float32)


def _direction_auc(y, g):
    known = int(np.flatnonzero(y)[0])
    keep = np.arange(len(y)) != known
    return auc(y[keep], direction_attack_scores(g, known)[keep])


# --------------------------------------------------------------------------------------------
# Accountant
# --------------------------------------------------------------------------------------------

def test_epsilon_falls_as_the_noise_multiplier_rises():
    eps = [epsilon_for(m, 1, 1e-5) for m in (0.7, 1.0, 2.0, 4.0)]
    assert all(a > b > 0 for a, b in zip(eps, eps[1:]))


def test_epsilon_rises_with_the_number_of_releases():
    eps = [epsilon_for(1.0, r, 1e-5) for r in (1, 4, 16)]
    assert all(a < b for a, b in zip(eps, eps[1:]))


def test_epsilon_of_no_noise_is_infinite():
    assert epsilon_for(0.0, 1, 1e-5) == float("inf")


def test_noise_multiplier_for_meets_the_target_epsilon_tightly():
    m = noise_multiplier_for(8.0, 1, DELTA)
    spent = epsilon_for(m, 1, DELTA)
    assert spent <= 8.0
    assert spent == pytest.approx(8.0, rel=0.03)


def test_noise_multiplier_for_rejects_non_positive_epsilon_and_bad_delta():
    with pytest.raises(ValueError, match="epsilon > 0"):
        noise_multiplier_for(0.0, 1, 1e-5)
    with pytest.raises(ValueError, match="delta"):
        noise_multiplier_for(1.0, 1, 1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"epsilon": -1.0}, "epsilon must be >= 0"),
    ({"delta": 0.0}, "delta must be in"),
    ({"delta": 1.0}, "delta must be in"),
    ({"clip": 0.0}, "clip must be > 0"),
])
def test_dp_config_rejects_invalid_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DPConfig(**kwargs)


def test_dp_config_is_enabled_only_with_a_positive_epsilon():
    assert not DPConfig().enabled
    assert DPConfig(epsilon=1.0).enabled


def test_gradient_defence_config_rejects_unknown_method_and_negative_power():
    with pytest.raises(ValueError, match="gradient defence must be one of"):
        GradientDefenceConfig(method="laplace")
    with pytest.raises(ValueError, match="marvell_power"):
        GradientDefenceConfig(method="marvell", marvell_power=-1.0)


def test_the_defence_is_on_by_default_marvell_with_max_norm():
    assert GradientDefenceConfig() == GradientDefenceConfig("marvell", 4.0, True)


# --------------------------------------------------------------------------------------------
# Embedding DP
# --------------------------------------------------------------------------------------------

def test_embedding_dp_with_epsilon_zero_returns_the_input_unchanged():
    dp = EmbeddingDP(DPConfig(epsilon=0.0))
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    assert dp.noise(x) is x
    assert dp.noise_std == 0.0
    assert dp.spent() == float("inf")


def test_embedding_dp_noise_has_the_stated_standard_deviation():
    dp = EmbeddingDP(DPConfig(epsilon=8.0, clip=0.5), rng=np.random.default_rng(0))
    assert dp.noise_std == pytest.approx(dp.noise_multiplier * 2 * 0.5)
    assert dp.spent() <= 8.0
    x = np.full((20_000, 8), 0.1, dtype=np.float32)
    noised = dp.noise(x)
    assert noised.dtype == np.float32 and noised.shape == x.shape
    diff = noised - x
    assert abs(diff.mean()) < 0.05 * dp.noise_std
    assert diff.std() == pytest.approx(dp.noise_std, rel=0.05)


def test_embedding_dp_rejects_zero_releases():
    with pytest.raises(ValueError, match="releases"):
        EmbeddingDP(DPConfig(), releases=0)


def test_clip_rows_caps_long_rows_and_leaves_short_rows_alone():
    x = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [-6.0, 8.0]])
    out = clip_rows(x, 1.0)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1.0, 0.5, 0.0, 1.0])
    np.testing.assert_array_equal(out[1:3], x[1:3])
    np.testing.assert_allclose(out[3], [-0.6, 0.8])  # direction kept


def test_secure_generator_gives_different_streams_on_two_calls():
    assert not np.array_equal(secure_generator().random(8), secure_generator().random(8))


# --------------------------------------------------------------------------------------------
# Gradient defences and leak attacks
# --------------------------------------------------------------------------------------------

def test_perturb_gradients_without_a_defence_returns_the_input():
    y, g = _two_class_gradients(0, n=100)
    sent, kl = perturb_gradients(g, y, GradientDefenceConfig("none"), np.random.default_rng(0))
    assert sent is g and kl is None


def test_max_norm_lifts_every_rows_expected_squared_norm_to_the_batch_max():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(6, 4)) * np.array([[0.1], [0.5], [1.0], [2.0], [0.0], [3.0]])
    target = np.max(np.sum(g * g, axis=1))
    draws = np.stack([perturb_gradients(g, np.zeros(6), GradientDefenceConfig("max_norm"),
                                        rng)[0] for _ in range(4000)])
    mean_sq = np.mean(np.sum(draws * draws, axis=2), axis=0)
    np.testing.assert_allclose(mean_sq, target, rtol=0.05)
    longest = int(np.argmax(np.sum(g * g, axis=1)))
    np.testing.assert_array_equal(draws[:, longest], np.broadcast_to(g[longest], (4000, 4)))


def test_norm_attack_separates_larger_positive_gradients_and_max_norm_defeats_it():
    y, g = _two_class_gradients(1)
    assert auc(y, norm_attack_scores(g)) > 0.99
    defended, _ = perturb_gradients(g, y, GradientDefenceConfig("max_norm"),
                                    np.random.default_rng(2))
    assert defended.dtype == g.dtype
    assert abs(auc(y, norm_attack_scores(defended)) - 0.5) < 0.08


def test_marvell_brings_every_attack_towards_chance_within_its_stated_bound():
    from federated.marvell import auc_bound
    y, g = _two_class_gradients(3)
    assert _direction_auc(y, g) > 0.99
    defended, kl = perturb_gradients(g, y, GradientDefenceConfig("marvell", 4.0),
                                     np.random.default_rng(4))
    bound = auc_bound(kl)
    assert bound < 0.7
    for attack_auc in (_direction_auc(y, defended), auc(y, norm_attack_scores(defended)),
                       auc(y, pca_attack_scores(defended))):
        assert attack_auc < bound + 0.03  # sampling noise of 2000 rows


def test_direction_attack_scores_are_cosines_with_the_known_positive():
    g = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    np.testing.assert_allclose(direction_attack_scores(g, 0), [1.0, 1.0, 0.0, -1.0])
