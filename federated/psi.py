"""ECDH private set intersection (PSI) on X25519: the two parties find the ids they share, and
align their rows on them, without revealing the ids outside the intersection.

The protocol is Diffie-Hellman PSI (Meadows, "A more efficient cryptographic matchmaking
protocol for use in the absence of a continuously available third party", IEEE S&P 1986;
Huberman, Franklin and Hogg, "Enhancing privacy and trust in electronic communities", ACM EC
1999) on Curve25519 (Bernstein, "Curve25519: new Diffie-Hellman speed records", PKC 2006;
RFC 7748), the construction of Alibaba's EFLS federated-learning framework (its ECDH PSI on
Curve25519). Each party hashes its ids to curve points and raises them to its secret scalar;
X25519 scalar multiplication commutes, ``X25519(a, X25519(b, u)) == X25519(b, X25519(a, u))``,
so an id held by both parties gives the same *doubly-blinded* value on both sides, and nothing
else can be matched without a secret key (decisional Diffie-Hellman assumption, semi-honest
parties).

Protocol (:func:`run_psi_in_memory` plays it in one process):

1. A and B each draw a fresh :class:`EcdhPsiKey`, blind their ids and send the blinded values
   to the peer *sorted by value* (a pseudorandom order that hides their row order).
2. Each reblinds what it received, in the received order, and sends it back.
3. Each maps the returned values back to its own rows: its doubly-blinded ids. It also holds the
   peer's doubly-blinded ids (it computed them in step 2). :func:`intersect_positions` gives the
   own rows in the intersection, and :func:`canonical_order` sorts them by doubly-blinded value:
   an order both parties reach without exchanging any id.

Ids must be unique within a party (:meth:`EcdhPsiKey.blind` refuses duplicates): with
duplicates the intersection would not pair rows one to one.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import numbers
from typing import List, Optional, Sequence, Tuple

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

#: Domain separation of the id hash: a version bump changes every hashed value.
DOMAIN = b"extcvr-psi-v1\0"
POINT_BYTES = 32
#: Rows per chunk handed to a worker process.
_CHUNK_ROWS = 8192


def _canonical_id(i: int, value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return str(int(value)).encode("ascii")
    raise TypeError(f"id {i} ({value!r}): expected str, int or bytes, "
                    f"got {type(value).__name__}")


def hash_to_u(ids: Sequence) -> List[bytes]:
    """Hash ids to 32-byte X25519 u-coordinates: SHA-256 of ``DOMAIN`` + the id's canonical
    bytes (UTF-8 of a str, the decimal digits of an int, a bytes id as is; so ``42``, ``"42"``
    and ``b"42"`` are the same id). X25519 ignores the top bit (RFC 7748, section 5).

    Raises:
        TypeError: an id is not a str, int (including numpy integers) or bytes.
    """
    return [hashlib.sha256(DOMAIN + _canonical_id(i, v)).digest() for i, v in enumerate(ids)]


def _as_points(points: np.ndarray, what: str = "points") -> np.ndarray:
    if not isinstance(points, np.ndarray) or points.dtype != np.uint8 or points.ndim != 2 \
            or points.shape[1] != POINT_BYTES:
        desc = (f"{points.dtype} array of shape {points.shape}" if isinstance(points, np.ndarray)
                else type(points).__name__)
        raise ValueError(f"{what}: expected a uint8 array of shape (n, {POINT_BYTES}), "
                         f"got {desc}")
    return np.ascontiguousarray(points)


def _multiply(key: X25519PrivateKey, data: bytes, first_row: int) -> bytes:
    """X25519(key, u) for each 32-byte u of ``data``; rows are numbered from ``first_row``."""
    exchange, point = key.exchange, X25519PublicKey.from_public_bytes
    out = []
    for start in range(0, len(data), POINT_BYTES):
        try:
            out.append(exchange(point(data[start:start + POINT_BYTES])))
        except ValueError:
            # OpenSSL refuses an all-zero shared secret: the input was a small-order point.
            raise ValueError(f"row {first_row + start // POINT_BYTES}: X25519 gave the all-zero "
                             f"point (a small-order input); this row cannot take part in the "
                             f"PSI") from None
    return b"".join(out)


_WORKER_KEY: Optional[X25519PrivateKey] = None


def _init_worker(key: X25519PrivateKey) -> None:
    # Runs in a forked child: the key object is inherited from the parent's memory, not pickled.
    global _WORKER_KEY
    _WORKER_KEY = key


def _worker_multiply(data: bytes, first_row: int) -> bytes:
    assert _WORKER_KEY is not None
    return _multiply(_WORKER_KEY, data, first_row)


class EcdhPsiKey:
    """One party's secret X25519 scalar for one PSI run.

    The scalar comes from the OS's secure random generator (``X25519PrivateKey.generate``) and
    never leaves the object: it has no accessor, its repr hides it, and it cannot be pickled or
    copied. Draw a fresh key per run.
    """

    __slots__ = ("_key",)

    def __init__(self):
        self._key = X25519PrivateKey.generate()

    def __repr__(self) -> str:
        return "EcdhPsiKey(<secret>)"

    def __reduce_ex__(self, protocol):
        raise TypeError("EcdhPsiKey holds a secret scalar: it cannot be pickled or copied")

    def _apply(self, data: bytes, processes: int) -> np.ndarray:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes: expected an integer >= 1, got {processes!r}")
        rows = len(data) // POINT_BYTES
        if processes == 1 or rows <= _CHUNK_ROWS:
            out = _multiply(self._key, data, 0)
        else:
            step = _CHUNK_ROWS * POINT_BYTES
            chunks = [(data[i:i + step], i // POINT_BYTES) for i in range(0, len(data), step)]
            # fork: the workers inherit the key; nothing secret crosses a pipe.
            with multiprocessing.get_context("fork").Pool(
                    processes, initializer=_init_worker, initargs=(self._key,)) as pool:
                out = b"".join(pool.starmap(_worker_multiply, chunks))
        return np.frombuffer(out, dtype=np.uint8).reshape(rows, POINT_BYTES).copy()

    def blind(self, ids: Sequence, processes: int = 1) -> np.ndarray:
        """``X25519(k, H(id))`` for each id (H: :func:`hash_to_u`), shape ``(n, 32)`` uint8.

        Args:
            ids: unique ids (str, int or bytes).
            processes: worker processes (forked, Linux); 1 runs in this process. Fork before
                starting threads (e.g. a gRPC server) where possible.

        Raises:
            ValueError: duplicate ids (after canonical encoding), or a hashed id is a
                small-order point (probability about 2**-250).
            TypeError: an id of another type.
        """
        us = hash_to_u(ids)
        duplicates = len(us) - len(set(us))
        if duplicates:
            raise ValueError(f"ids must be unique for the PSI: {duplicates} of {len(us)} ids "
                             f"repeat an earlier id (42, '42' and b'42' are the same id); "
                             f"deduplicate them first")
        return self._apply(b"".join(us), processes)

    def reblind(self, points: np.ndarray, processes: int = 1) -> np.ndarray:
        """``X25519(k, point)`` for each row of the peer's blinded ``points`` (shape ``(n, 32)``
        uint8), in the same order.

        Raises:
            ValueError: ``points`` has another shape or dtype, or a row is a small-order point
                (the message names the row).
        """
        return self._apply(_as_points(points).tobytes(), processes)


def _row_keys(points: np.ndarray) -> np.ndarray:
    """Each 32-byte row as one fixed-width bytes scalar: compares and sorts as bytes do."""
    return np.ascontiguousarray(points).view(f"S{POINT_BYTES}").ravel()


def intersect_positions(own_double: np.ndarray, peer_double: np.ndarray) -> np.ndarray:
    """The positions (ascending, int64) in ``own_double`` whose doubly-blinded value is also in
    ``peer_double``; both are ``(n, 32)`` uint8 arrays."""
    own = _row_keys(_as_points(own_double, "own_double"))
    peer = _row_keys(_as_points(peer_double, "peer_double"))
    return np.flatnonzero(np.isin(own, peer)).astype(np.int64)


def canonical_order(double_blinded: np.ndarray) -> np.ndarray:
    """The argsort (int64) of ``(n, 32)`` uint8 doubly-blinded values in bytes order: both
    parties sort their intersection rows by it to agree on one order without sharing ids."""
    keys = _row_keys(_as_points(double_blinded, "double_blinded"))
    return np.argsort(keys, kind="stable").astype(np.int64)


def _send_sorted(blinded: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    order = canonical_order(blinded)
    return blinded[order], order


def _unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[order] = values
    return out


def run_psi_in_memory(ids_a: Sequence, ids_b: Sequence) -> Tuple[np.ndarray, np.ndarray]:
    """Play both parties of the ECDH PSI (module docstring) with fresh keys and return
    ``(positions_in_a, positions_in_b)`` in canonical order, so that
    ``ids_a[pa[i]] == ids_b[pb[i]]`` for every ``i``. Documents the protocol; the parties run it
    over ``federated.transport``."""
    key_a, key_b = EcdhPsiKey(), EcdhPsiKey()
    # 1. each blinds its ids and sends them sorted by blinded value (hides its row order)
    a_sent, a_order = _send_sorted(key_a.blind(ids_a))
    b_sent, b_order = _send_sorted(key_b.blind(ids_b))
    # 2. each reblinds what it received, in the received order, and sends it back
    a_back = key_b.reblind(a_sent)      # B -> A
    b_back = key_a.reblind(b_sent)      # A -> B
    # 3. each maps its doubly-blinded ids back to its rows; it holds the peer's from step 2
    a_double = _unsort(a_back, a_order)
    b_double = _unsort(b_back, b_order)
    pa = intersect_positions(a_double, b_back)      # A: own rows found among B's values
    pb = intersect_positions(b_double, a_back)      # B: own rows found among A's values
    return pa[canonical_order(a_double[pa])], pb[canonical_order(b_double[pb])]
