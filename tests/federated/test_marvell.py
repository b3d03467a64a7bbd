"""federated.marvell: the optimal noise of Li et al.'s Marvell and the leak-AUC bound."""

import math

import numpy as np
import pytest

from federated.marvell import auc_bound, perturb, solve, sum_kl
from models.metrics import auc


def test_sum_kl_is_the_symmetrised_kl_of_the_two_gaussians():
    # d = 1, no noise: KL(N(m1, v) || N(m0, u)) + KL(N(m0, u) || N(m1, v))
    u, v, q = 0.5, 2.0, 3.0
    kl = 0.5 * (v / u + q / u - 1 + math.log(u / v)) + 0.5 * (u / v + q / v - 1 + math.log(v / u))
    assert sum_kl(u, v, 1, q, 0, 0, 0, 0) == pytest.approx(kl)
    assert sum_kl(1.0, 1.0, 4, 0.0, 0, 0, 0, 0) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_solve_meets_the_budget_and_beats_any_random_feasible_noise(seed):
    rng = np.random.default_rng(seed)
    u, v = rng.uniform(0.01, 2.0, 2)
    d, q, p = int(rng.integers(1, 9)), rng.uniform(0.1, 5.0), rng.uniform(0.01, 0.5)
    power = rng.uniform(0.1, 3.0) * q
    noise = solve(u, v, d, q, p, power)
    assert noise.power(p, d) <= power * (1 + 1e-6)
    best_random = math.inf
    for w in rng.dirichlet(np.ones(4), size=3000) * power:
        across = max(d - 1, 1)
        best_random = min(best_random, sum_kl(u, v, d, q, w[2] / (1 - p), w[3] / (1 - p) / across,
                                              w[0] / p, w[1] / p / across))
    assert noise.sum_kl <= best_random + 1e-9


def test_more_power_leaves_less_divergence_and_a_lower_bound():
    kls = [solve(0.3, 0.6, 4, 2.0, 0.05, s * 2.0).sum_kl for s in (0.0, 0.5, 2.0, 8.0)]
    assert all(a > b for a, b in zip(kls, kls[1:]))
    assert auc_bound(kls[0]) > auc_bound(kls[-1]) > 0.5
    assert auc_bound(0.0) == 0.5 and auc_bound(1e9) == 1.0


def test_the_likelihood_ratio_attack_stays_under_the_bound():
    rng = np.random.default_rng(7)
    u, v, d, q, p = 0.5, 1.0, 2, 4.0, 0.1
    noise = solve(u, v, d, q, p, 8.0 * q)
    var1 = np.array([v + noise.along1, v + noise.across1])
    var0 = np.array([u + noise.along0, u + noise.across0])
    m1 = np.array([2.0, 0.0])
    g1 = rng.normal(size=(20000, 2)) * np.sqrt(var1) + m1
    g0 = rng.normal(size=(20000, 2)) * np.sqrt(var0)

    def log_ratio(x):  # the most powerful test between the two perturbed Gaussians
        return (-0.5 * ((x - m1) ** 2 / var1 + np.log(var1)).sum(1)
                + 0.5 * (x ** 2 / var0 + np.log(var0)).sum(1))
    best = auc(np.r_[np.ones(20000), np.zeros(20000)], np.r_[log_ratio(g1), log_ratio(g0)])
    assert best <= auc_bound(noise.sum_kl) + 0.01
    assert best > 0.55  # the bound is not vacuous here


def test_a_one_class_batch_gets_the_last_mixed_batchs_noise_so_its_level_tells_nothing():
    from federated.marvell import MarvellState
    rng, state = np.random.default_rng(0), MarvellState()
    g = rng.normal(size=(4000, 3))
    first, noise = perturb(g, np.zeros(4000), 4.0, rng, state)  # no history yet: isotropic
    assert noise is None and not np.allclose(first, g)
    y = np.r_[np.ones(400), np.zeros(3600)]
    mixed = g.copy()
    mixed[y > 0] += 3.0
    out, noise = perturb(mixed, y, 4.0, rng, state)
    assert noise is not None and noise.sum_kl >= 0 and state.noise is noise
    negatives_mixed = out[y == 0] - mixed[y == 0]
    pure, none = perturb(g, np.zeros(4000), 4.0, rng, state)
    assert none is None
    # a batch without a conversion gets the negatives' noise of the mixed batch: same spread
    spread_pure = np.linalg.norm(pure - g, axis=1).mean()
    spread_mixed = np.linalg.norm(negatives_mixed, axis=1).mean()
    assert spread_pure == pytest.approx(spread_mixed, rel=0.05)


def test_one_positive_takes_the_negatives_variance():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(50, 4))
    y = np.zeros(50)
    y[0] = 1
    g[0] += 5.0
    _, noise = perturb(g, y, 4.0, rng)
    u = float(((g[1:] - g[1:].mean(0)) ** 2).sum() / (49 * 4))
    q = float(((g[0] - g[1:].mean(0)) ** 2).sum())
    assert noise == solve(u, u, 4, q, 1 / 50, 4.0 * q)
