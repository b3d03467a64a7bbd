"""federated.psi: Diffie-Hellman PSI on P-256 (RFC 9380 hash) against a plain set intersection."""

import copy
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federated import psi
from federated.hash_to_curve import encode_uncompressed, hash_to_curve
from federated.psi import (DST, EcdhPsiKey, canonical_ids, canonical_order, hash_to_group,
                           intersect_positions, run_psi_in_memory)

_ids = st.one_of(st.integers(0, 40), st.text(alphabet="abc", min_size=1, max_size=2))


@st.composite
def _two_id_lists(draw):
    """Two lists of unique ids drawn from a small pool, so that overlaps are common; sizes
    include 0 and disjoint lists."""
    pool = draw(st.lists(_ids, unique_by=str, max_size=30))
    a = draw(st.lists(st.sampled_from(pool), unique=True) if pool else st.just([]))
    b = draw(st.lists(st.sampled_from(pool), unique=True) if pool else st.just([]))
    return a, b


@settings(max_examples=40, deadline=None)
@given(_two_id_lists())
def test_psi_finds_exactly_the_plain_set_intersection_with_aligned_positions(lists):
    ids_a, ids_b = lists
    pa, pb = run_psi_in_memory(ids_a, ids_b)
    assert pa.dtype == np.int64 and pb.dtype == np.int64
    assert len(pa) == len(pb)
    assert [ids_a[i] for i in pa] == [ids_b[i] for i in pb]
    assert {str(ids_a[i]) for i in pa} == {str(x) for x in ids_a} & {str(x) for x in ids_b}


def test_psi_of_empty_and_disjoint_lists_is_empty():
    for ids_a, ids_b in (([], []), ([], ["x"]), (["x", "y"], []), (["x", "y"], ["z", 1])):
        pa, pb = run_psi_in_memory(ids_a, ids_b)
        assert pa.shape == (0,) and pb.shape == (0,)


def test_psi_of_a_list_with_itself_pairs_every_row():
    ids = [f"user-{i}" for i in range(50)]
    pa, pb = run_psi_in_memory(ids, ids[::-1])
    assert sorted(pa) == list(range(50))
    assert [ids[i] for i in pa] == [ids[::-1][i] for i in pb]


def test_blinding_commutes():
    ka, kb = EcdhPsiKey(), EcdhPsiKey()
    ids = ["a", "b", 3, b"d"]
    np.testing.assert_array_equal(kb.reblind(ka.blind(ids)), ka.reblind(kb.blind(ids)))


def test_blinding_is_deterministic_per_key_and_differs_between_keys():
    ka, kb = EcdhPsiKey(), EcdhPsiKey()
    ids = ["a", "b", "c"]
    blinded = ka.blind(ids)
    assert blinded.shape == (3, 32) and blinded.dtype == np.uint8
    np.testing.assert_array_equal(blinded, ka.blind(ids))
    assert not (blinded == kb.blind(ids)).all(axis=1).any()
    assert len({row.tobytes() for row in blinded}) == 3


def test_ids_hash_to_the_rfc9380_point_of_their_canonical_bytes():
    expected = encode_uncompressed(hash_to_curve(b"42", DST))
    assert hash_to_group([42, "42", b"42", np.int64(42)]) == [expected] * 4
    assert canonical_ids(["é"]) == ["é".encode()]
    assert DST == b"extcvr-psi-v2-P256_XMD:SHA-256_SSWU_RO_"


@pytest.mark.parametrize("bad", [1.5, True, None])
def test_ids_that_are_not_str_int_or_bytes_are_refused_with_their_position(bad):
    with pytest.raises(TypeError, match="id 1"):
        canonical_ids(["ok", bad])
    with pytest.raises(TypeError, match="id 1"):
        EcdhPsiKey().blind(["ok", bad])


def test_blind_refuses_duplicate_ids_and_names_their_count():
    with pytest.raises(ValueError, match="2 of 5 ids repeat"):
        EcdhPsiKey().blind(["a", "b", "a", 42, "42"])


def test_key_repr_pickle_and_copy_do_not_reveal_the_secret_scalar():
    key = EcdhPsiKey()
    secret = format(key._key.private_numbers().private_value, "x")
    assert repr(key) == str(key) == "EcdhPsiKey(<secret>)"
    assert secret not in repr(key)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    with pytest.raises(TypeError, match="cannot be pickled"):
        copy.deepcopy(key)


def test_reblind_of_a_value_off_the_curve_names_the_row():
    key = EcdhPsiKey()
    points = key.blind(["a", "b", "c"])
    points[1] = 0xFF  # x >= p: no point of P-256 has it
    with pytest.raises(ValueError, match="row 1: not the x-coordinate of a point of P-256"):
        key.reblind(points)
    points[1] = 0
    points[1, -1] = 1  # x = 1: 1 - 3 + b is not a square mod p (no point has it)
    with pytest.raises(ValueError, match="row 1"):
        key.reblind(points)


@pytest.mark.parametrize("points", [np.zeros((2, 31), np.uint8), np.zeros((2, 32), np.int64),
                                    np.zeros(32, np.uint8)])
def test_reblind_rejects_arrays_that_are_not_n_by_32_uint8(points):
    with pytest.raises(ValueError, match=r"expected a uint8 array of shape \(n, 32\)"):
        EcdhPsiKey().reblind(points)


def test_worker_processes_give_the_same_points_as_one_process(monkeypatch):
    monkeypatch.setattr(psi, "_CHUNK_ROWS", 16)  # several chunks from a few ids
    key = EcdhPsiKey()
    ids = [f"id-{i}" for i in range(70)]
    one = key.blind(ids)
    np.testing.assert_array_equal(key.blind(ids, processes=2), one)
    other = EcdhPsiKey()
    np.testing.assert_array_equal(other.reblind(one, processes=2), other.reblind(one))
    bad = one.copy()
    bad[37] = 0xFF  # x >= p: not a point
    with pytest.raises(ValueError, match="row 37"):
        other.reblind(bad, processes=2)


def test_intersect_positions_and_canonical_order_compare_whole_rows_as_bytes():
    rows = np.array([[3] + [0] * 31, [1] + [0] * 31, [1] + [0] * 30 + [9], [2] * 32], np.uint8)
    assert intersect_positions(rows, rows[[2, 3]]).tolist() == [2, 3]
    assert intersect_positions(rows, rows[:0]).tolist() == []
    assert canonical_order(rows).tolist() == [1, 2, 3, 0]
    assert canonical_order(rows[:0]).tolist() == []
