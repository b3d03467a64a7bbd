"""Hashing to the NIST P-256 curve: the RFC 9380 suite ``P256_XMD:SHA-256_SSWU_RO_``.

Faz-Hernandez, Scott, Sullivan, Wahby and Wood, "Hashing to Elliptic Curves", RFC 9380 (2023):
``expand_message_xmd`` with SHA-256 (section 5.3.1), ``hash_to_field`` to two elements of GF(p)
(section 5.2), the simplified SWU map (section 6.6.2) applied to each, and their sum (the
random-oracle construction of section 3; P-256 has cofactor 1, so ``clear_cofactor`` is the
identity). The result is indifferentiable from a random oracle to the curve's prime-order group,
which is what the Diffie-Hellman PSI's security argument assumes of its hash
(``federated.psi``).

Python integers do the field arithmetic of the map; the square roots come from OpenSSL (through
``cryptography``: decompressing a point computes ``y = sqrt(x^3 + ax + b)`` and refuses an ``x``
that is not on the curve, which is the map's ``is_square`` test). Every step is checked against
the RFC's test vectors (appendix J.1.1 for the suite, K.1 for the expander) in
``tests/federated/test_hash_to_curve.py``. Nothing here is secret: the inputs are public ids
and the map is not constant-time, as RFC 9380 section 10.3 allows for public inputs (the secret
scalars live in ``federated.psi`` and OpenSSL).
"""

from __future__ import annotations

import hashlib
from typing import List, Optional, Sequence, Tuple

from cryptography.hazmat.primitives.asymmetric import ec

#: P-256 (SEC 2 secp256r1 / FIPS 186-4): y^2 = x^3 + A x + B over GF(P); RFC 9380 section 8.2.
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
A = P - 3
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
#: The suite's non-square Z (RFC 9380 section 8.2) and the field elements' hash length L.
Z = P - 10
L = 48
SUITE = b"P256_XMD:SHA-256_SSWU_RO_"

_CURVE = ec.SECP256R1()
_MINUS_B_OVER_A = (-B) * pow(A, -1, P) % P
_B_OVER_ZA = B * pow(Z * A, -1, P) % P
_SHA256_BLOCK, _SHA256_OUT = 64, 32


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 section 5.3.1 with SHA-256: ``length`` uniform bytes from ``msg`` under the
    domain separation tag ``dst``.

    Raises:
        ValueError: ``dst`` longer than 255 bytes, or ``length`` above 255 blocks or 65535.
    """
    if len(dst) > 255:
        raise ValueError(f"expand_message_xmd: the DST has {len(dst)} bytes (at most 255)")
    blocks = -(-length // _SHA256_OUT)
    if blocks > 255 or length > 65535 or length < 0:
        raise ValueError(f"expand_message_xmd: cannot expand to {length} bytes")
    dst_prime = dst + bytes([len(dst)])
    b0 = hashlib.sha256(bytes(_SHA256_BLOCK) + msg + length.to_bytes(2, "big") + b"\0"
                        + dst_prime).digest()
    b0_int = int.from_bytes(b0, "big")
    prev = hashlib.sha256(b0 + b"\1" + dst_prime).digest()
    out = [prev]
    for i in range(2, blocks + 1):
        mixed = (b0_int ^ int.from_bytes(prev, "big")).to_bytes(_SHA256_OUT, "big")
        prev = hashlib.sha256(mixed + bytes([i]) + dst_prime).digest()
        out.append(prev)
    return b"".join(out)[:length]


def hash_to_field(msg: bytes, dst: bytes, count: int = 2) -> Tuple[int, ...]:
    """RFC 9380 section 5.2 for GF(P) (m = 1, L = 48): ``count`` field elements."""
    uniform = expand_message_xmd(msg, dst, count * L)
    return tuple(int.from_bytes(uniform[i * L:(i + 1) * L], "big") % P for i in range(count))


def _lift(x: int) -> Optional[int]:
    """The even ``y`` with ``(x, y)`` on the curve (OpenSSL's point decompression), or None
    when ``x^3 + Ax + B`` is not a square."""
    try:
        point = ec.EllipticCurvePublicKey.from_encoded_point(
            _CURVE, b"\x02" + x.to_bytes(32, "big"))
    except ValueError:
        return None
    return point.public_numbers().y


def _batch_inverse(values: List[int]) -> List[int]:
    """Inverses mod P of many field elements for the price of one (Montgomery's trick); a zero
    maps to zero (``inv0`` of RFC 9380 section 4)."""
    prefix, acc = [], 1
    for v in values:
        prefix.append(acc)
        acc = acc * (v or 1) % P
    inv = pow(acc, -1, P)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        v = values[i] or 1
        out[i] = inv * prefix[i] % P if values[i] else 0
        inv = inv * v % P
    return out


def _sswu_many(us: List[int]) -> List[Tuple[int, int]]:
    """The simplified SWU map (RFC 9380 section 6.6.2) of many field elements."""
    uus = [u * u % P for u in us]
    tv1s = _batch_inverse([(Z * Z * uu * uu + Z * uu) % P for uu in uus])
    points = []
    for u, uu, tv1 in zip(us, uus, tv1s):
        x = _MINUS_B_OVER_A * (1 + tv1) % P if tv1 else _B_OVER_ZA
        y = _lift(x)
        if y is None:
            # g(x2) = Z^3 u^6 g(x1) with Z a non-square: exactly one of the two is a square.
            x = Z * uu * x % P
            y = _lift(x)
            assert y is not None, "simplified SWU: neither candidate is on the curve"
        if (u & 1) != (y & 1):  # sgn0(y) == sgn0(u)
            y = P - y
        points.append((x, y))
    return points


def map_to_curve_sswu(u: int) -> Tuple[int, int]:
    """RFC 9380 section 6.6.2, the simplified Shallue-van de Woestijne-Ulas map: a field element
    to an affine point ``(x, y)`` of P-256, with ``sgn0(y) == sgn0(u)``."""
    return _sswu_many([u])[0]


def _add_many(pairs: List[Tuple[Tuple[int, int], Tuple[int, int]]]) -> List[Tuple[int, int]]:
    """Affine sums ``p1 + p2`` of many pairs of points (one batched inversion).

    Raises:
        ValueError: a pair sums to the point at infinity (for hashed points, probability about
            2**-256).
    """
    denominators = []
    for (x1, y1), (x2, y2) in pairs:
        if x1 == x2 and (y1 + y2) % P == 0:
            raise ValueError("hash_to_curve: the point at infinity (probability 2**-256)")
        denominators.append(2 * y1 % P if x1 == x2 else (x2 - x1) % P)
    out = []
    for ((x1, y1), (x2, y2)), inv in zip(pairs, _batch_inverse(denominators)):
        numerator = (3 * x1 * x1 + A) if x1 == x2 else (y2 - y1)
        slope = numerator * inv % P
        x3 = (slope * slope - x1 - x2) % P
        out.append((x3, (slope * (x1 - x3) - y1) % P))
    return out


def hash_to_curve_many(messages: Sequence[bytes], dst: bytes) -> List[Tuple[int, int]]:
    """RFC 9380 section 3, ``hash_to_curve`` for ``P256_XMD:SHA-256_SSWU_RO_``, of each message:
    affine points ``(x, y)``. The same result as :func:`hash_to_curve` one by one, with the
    field inversions batched.

    Raises:
        ValueError: the two mapped points of a message cancel (probability about 2**-256).
    """
    us = [u for m in messages for u in hash_to_field(m, dst, 2)]
    mapped = _sswu_many(us)
    return _add_many(list(zip(mapped[0::2], mapped[1::2])))


def hash_to_curve(msg: bytes, dst: bytes) -> Tuple[int, int]:
    """RFC 9380 ``hash_to_curve`` of one message (:func:`hash_to_curve_many`)."""
    return hash_to_curve_many([msg], dst)[0]


def encode_uncompressed(point: Tuple[int, int]) -> bytes:
    """SEC 1 uncompressed encoding, ``04 || x || y``."""
    return b"\x04" + point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big")
