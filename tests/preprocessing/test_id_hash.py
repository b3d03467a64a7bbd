"""preprocessing.id_hash: the SplitMix64 output function against the reference generator."""

import numpy as np
import pytest

from preprocessing.id_hash import GOLDEN, id_hash

#: Vigna's splitmix64.c from state 0: its first four outputs (the published reference values).
SPLITMIX64_SEED0 = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F,
                    0xF88BB8A8724C81EC]


def test_hash_of_k_times_the_golden_gamma_is_the_reference_splitmix64_stream():
    states = np.array([(k * GOLDEN) % 2**64 for k in range(4)], dtype=np.uint64)
    assert id_hash(states).tolist() == SPLITMIX64_SEED0


def test_signed_ids_hash_their_64_bits_and_every_width_gives_the_same_hash():
    assert id_hash(np.array([-1], np.int64))[0] == id_hash(np.array([2**64 - 1], np.uint64))[0]
    small = np.array([0, 1, 12345], np.int32)
    np.testing.assert_array_equal(id_hash(small), id_hash(small.astype(np.int64)))
    assert id_hash(np.array([5], np.int64)).dtype == np.uint64


def test_distinct_ids_get_distinct_hashes_and_spread_over_buckets():
    ids = np.arange(200_000, dtype=np.int64)
    h = id_hash(ids)
    assert len(np.unique(h)) == len(ids)  # a bijection of the 64-bit values
    counts = np.bincount((h % np.uint64(64)).astype(np.int64), minlength=64)
    assert counts.min() > 0.9 * len(ids) / 64 and counts.max() < 1.1 * len(ids) / 64


def test_a_non_integer_array_is_refused():
    with pytest.raises(TypeError, match="integer array"):
        id_hash(np.array([1.5]))
