"""Counter-based randomness: per-entity attributes from a hash of (seed, salt, id).

An entity (user, item, category) gets the same attributes wherever it appears, without a table
in memory: attribute = f(splitmix64(id, seed, salt)). That keeps the generator's memory
independent of the number of users and items, and makes it deterministic by seed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtri

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_INV_2_53 = 1.0 / float(1 << 53)
#: The largest float64 below 1: (2**53 - 1 + 0.5) * 2**-53 rounds up to exactly 1.0.
_BELOW_ONE = np.nextafter(1.0, 0.0)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al., OOPSLA 2014), vectorised over uint64."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64, copy=True) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def stream_key(seed: int, salt: str) -> np.uint64:
    """A 64-bit key for one named attribute stream of one seed."""
    h = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    for ch in salt.encode():
        h = splitmix64(np.array([h ^ np.uint64(ch)], dtype=np.uint64))[0]
    return h


def hash_uniform(ids: np.ndarray, seed: int, salt: str) -> np.ndarray:
    """Uniform(0, 1) per id, strictly inside the interval, fixed by (seed, salt, id)."""
    key = stream_key(seed, salt)
    with np.errstate(over="ignore"):
        h = splitmix64(ids.astype(np.uint64) * _GOLDEN ^ key)
    return np.minimum(((h >> np.uint64(11)).astype(np.float64) + 0.5) * _INV_2_53, _BELOW_ONE)


def hash_normal(ids: np.ndarray, seed: int, salt: str) -> np.ndarray:
    """Standard normal per id (inverse-CDF of ``hash_uniform``)."""
    return ndtri(hash_uniform(ids, seed, salt))


def zipf_rank(u: np.ndarray, n: int, exponent: float) -> np.ndarray:
    """Map uniforms to Zipf ranks in [0, n): P(rank = r) ~ (r + 1) ** -exponent.

    Uses the inverse CDF of the continuous power law on [1, n + 1), which is exact up to the
    discretisation and costs O(1) per draw for any n.
    """
    one_minus = 1.0 - exponent
    top = (n + 1.0) ** one_minus
    x = (1.0 + u * (top - 1.0)) ** (1.0 / one_minus)
    return np.clip(np.floor(x).astype(np.int64) - 1, 0, n - 1)


class AffinePermutation:
    """A bijection of [0, n): r -> (a * r + b) mod n, with gcd(a, n) = 1, chosen by seed.

    Used to scatter popularity ranks over ids, so that id 0 is not the most popular one.
    """

    def __init__(self, n: int, seed: int, salt: str):
        self.n = int(n)
        rng = np.random.default_rng([seed, int(stream_key(seed, salt) % np.uint64(2**31))])
        a = int(rng.integers(1 << 20, 1 << 32)) | 1
        while math.gcd(a, self.n) != 1:
            a += 2
        self.a = a % self.n if self.n > 1 else 0
        if self.n > 1 and self.a == 0:
            self.a = 1
        self.b = int(rng.integers(0, max(self.n, 1)))

    def __call__(self, ranks: np.ndarray) -> np.ndarray:
        """Apply the permutation to an int64 array of ranks."""
        if self.n == 1:
            return np.zeros_like(ranks, dtype=np.int64)
        # a < n <= 1e7 and ranks < n keep the product below 2**63.
        return (ranks.astype(np.int64) * self.a + self.b) % self.n
