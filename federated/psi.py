"""Diffie-Hellman private set intersection (PSI) on the prime-order group of NIST P-256, with
the RFC 9380 hash to the curve: the two parties find the ids they share, and align their rows
on them, without revealing the ids outside the intersection.

The protocol is Diffie-Hellman PSI (Meadows, "A more efficient cryptographic matchmaking
protocol for use in the absence of a continuously available third party", IEEE S&P 1986;
Huberman, Franklin and Hogg, "Enhancing privacy and trust in electronic communities", ACM EC
1999), the construction of Alibaba's EFLS framework (ECDH PSI), here on a prime-order group with
a standard hash to it: ids go to curve points by RFC 9380's ``P256_XMD:SHA-256_SSWU_RO_``
(``federated.hash_to_curve``, a random oracle to the group), and each party raises them to a
secret scalar with OpenSSL's ECDH (``cryptography``), which also refuses any received value
that is not a point of the group. ``k*(j*H(x))`` and ``j*(k*H(x))`` are the same point, so an id
held by both parties gives the same *doubly-blinded* value on both sides; anything else needs a
secret scalar to match (decisional Diffie-Hellman on P-256, random-oracle model, semi-honest
parties).

Values on the wire are 32-byte x-coordinates (the ECDH shared-secret encoding of SEC 1): ``P``
and ``-P`` share one, and ``x(k*P) == x(k*(-P))``, so the protocol runs on the group modulo the
sign without losing anything.

Protocol (:func:`run_psi_in_memory` plays it in one process):

1. A and B each draw a fresh :class:`EcdhPsiKey`, blind their ids and send the blinded values
   to the peer *sorted by value* (a pseudorandom order that hides their row order).
2. Each reblinds what it received, in the received order, and sends it back.
3. Each maps the returned values back to its own rows: its doubly-blinded ids. It also holds the
   peer's doubly-blinded ids (it computed them in step 2). :func:`intersect_positions` gives the
   own rows in the intersection, and :func:`canonical_order` sorts them by doubly-blinded value:
   an order both parties reach without exchanging any id.

Ids must be unique within a party (:meth:`EcdhPsiKey.blind` refuses duplicates): with
duplicates the intersection would not pair rows one to one. Who may ask for what over the wire
(one re-blinding per session, no more values than announced) is ``federated.alignment``'s.
"""

from __future__ import annotations

import multiprocessing
import numbers
from typing import List, Optional, Sequence, Tuple

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec

from federated.hash_to_curve import SUITE, encode_uncompressed, hash_to_curve_many

#: The hash's domain separation tag (RFC 9380 section 3.1): a version bump changes every value.
DST = b"extcvr-psi-v2-" + SUITE
POINT_BYTES = 32
#: Rows per chunk handed to a worker process.
_CHUNK_ROWS = 8192
_CURVE = ec.SECP256R1()


def _canonical_id(i: int, value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return str(int(value)).encode("ascii")
    raise TypeError(f"id {i} ({value!r}): expected str, int or bytes, "
                    f"got {type(value).__name__}")


def canonical_ids(ids: Sequence) -> List[bytes]:
    """Each id's bytes as hashed: UTF-8 of a str, the decimal digits of an int, a bytes id as
    is (so ``42``, ``"42"`` and ``b"42"`` are the same id).

    Raises:
        TypeError: an id is not a str, int (including numpy integers) or bytes.
    """
    return [_canonical_id(i, v) for i, v in enumerate(ids)]


def hash_to_group(ids: Sequence) -> List[bytes]:
    """Each id as a point of P-256 (SEC 1 uncompressed, 65 bytes): RFC 9380
    ``hash_to_curve`` of its canonical bytes (:func:`canonical_ids`) under :data:`DST`."""
    return [encode_uncompressed(p) for p in hash_to_curve_many(canonical_ids(ids), DST)]


def _as_points(points: np.ndarray, what: str = "points") -> np.ndarray:
    if not isinstance(points, np.ndarray) or points.dtype != np.uint8 or points.ndim != 2 \
            or points.shape[1] != POINT_BYTES:
        desc = (f"{points.dtype} array of shape {points.shape}" if isinstance(points, np.ndarray)
                else type(points).__name__)
        raise ValueError(f"{what}: expected a uint8 array of shape (n, {POINT_BYTES}), "
                         f"got {desc}")
    return np.ascontiguousarray(points)


def _multiply(key: ec.EllipticCurvePrivateKey, points: List[bytes], first_row: int) -> bytes:
    """The x-coordinate of ``k * P`` for each SEC 1 encoded point ``P``; rows are numbered
    from ``first_row``."""
    exchange, decode, ecdh = key.exchange, ec.EllipticCurvePublicKey.from_encoded_point, ec.ECDH()
    out = []
    for row, encoded in enumerate(points, first_row):
        try:
            out.append(exchange(ecdh, decode(_CURVE, encoded)))
        except ValueError:
            raise ValueError(f"row {row}: not the x-coordinate of a point of P-256; this row "
                             f"cannot take part in the PSI") from None
    return b"".join(out)


def _blind_chunk(key: ec.EllipticCurvePrivateKey, messages: List[bytes], first_row: int) -> bytes:
    return _multiply(key, [encode_uncompressed(p) for p in hash_to_curve_many(messages, DST)],
                     first_row)


def _reblind_chunk(key: ec.EllipticCurvePrivateKey, data: bytes, first_row: int) -> bytes:
    return _multiply(key, [b"\x02" + data[i:i + POINT_BYTES]
                           for i in range(0, len(data), POINT_BYTES)], first_row)


_WORKER_KEY: Optional[ec.EllipticCurvePrivateKey] = None


def _init_worker(key: ec.EllipticCurvePrivateKey) -> None:
    # Runs in a forked child: the key object is inherited from the parent's memory, not pickled.
    global _WORKER_KEY
    _WORKER_KEY = key


def _worker(fn, chunk, first_row: int) -> bytes:
    assert _WORKER_KEY is not None
    return fn(_WORKER_KEY, chunk, first_row)


class EcdhPsiKey:
    """One party's secret P-256 scalar for one PSI session.

    The scalar comes from OpenSSL's secure random generator (``ec.generate_private_key``) and
    never leaves the object: it has no accessor, its repr hides it, and it cannot be pickled or
    copied. Draw a fresh key per session (``federated.alignment`` does).
    """

    __slots__ = ("_key",)

    def __init__(self):
        self._key = ec.generate_private_key(_CURVE)

    def __repr__(self) -> str:
        return "EcdhPsiKey(<secret>)"

    def __reduce_ex__(self, protocol):
        raise TypeError("EcdhPsiKey holds a secret scalar: it cannot be pickled or copied")

    def _apply(self, fn, chunks: List[Tuple[object, int]], rows: int,
               processes: int) -> np.ndarray:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes: expected an integer >= 1, got {processes!r}")
        if processes == 1 or len(chunks) <= 1:
            out = b"".join(fn(self._key, chunk, first) for chunk, first in chunks)
        else:
            # fork: the workers inherit the key; nothing secret crosses a pipe.
            with multiprocessing.get_context("fork").Pool(
                    processes, initializer=_init_worker, initargs=(self._key,)) as pool:
                out = b"".join(pool.starmap(_worker, [(fn, c, f) for c, f in chunks]))
        return np.frombuffer(out, dtype=np.uint8).reshape(rows, POINT_BYTES).copy()

    def blind(self, ids: Sequence, processes: int = 1) -> np.ndarray:
        """``x(k * H(id))`` for each id (H: :func:`hash_to_group`), shape ``(n, 32)`` uint8.

        Args:
            ids: unique ids (str, int or bytes).
            processes: worker processes (forked, Linux); 1 runs in this process. Fork before
                starting threads (e.g. a gRPC server) where possible.

        Raises:
            ValueError: duplicate ids (after canonical encoding).
            TypeError: an id of another type.
        """
        messages = canonical_ids(ids)
        duplicates = len(messages) - len(set(messages))
        if duplicates:
            raise ValueError(f"ids must be unique for the PSI: {duplicates} of {len(messages)} "
                             f"ids repeat an earlier id (42, '42' and b'42' are the same id); "
                             f"deduplicate them first")
        chunks = [(messages[i:i + _CHUNK_ROWS], i) for i in range(0, len(messages), _CHUNK_ROWS)]
        return self._apply(_blind_chunk, chunks, len(messages), processes)

    def reblind(self, points: np.ndarray, processes: int = 1) -> np.ndarray:
        """``x(k * P)`` for each row of the peer's blinded ``points`` (x-coordinates, shape
        ``(n, 32)`` uint8), in the same order.

        Raises:
            ValueError: ``points`` has another shape or dtype, or a row is not the x-coordinate
                of a curve point (the message names the row).
        """
        data = _as_points(points).tobytes()
        step = _CHUNK_ROWS * POINT_BYTES
        chunks = [(data[i:i + step], i // POINT_BYTES) for i in range(0, len(data), step)]
        return self._apply(_reblind_chunk, chunks, len(data) // POINT_BYTES, processes)


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
