"""federated.hash_to_curve against the test vectors of RFC 9380 (appendix K.1 for
expand_message_xmd with SHA-256, appendix J.1.1 for the P256_XMD:SHA-256_SSWU_RO_ suite)."""

import pytest

from federated.hash_to_curve import (P, expand_message_xmd, hash_to_curve, hash_to_curve_many,
                                     hash_to_field, map_to_curve_sswu)

K1_DST = b"QUUX-V01-CS02-with-expander-SHA256-128"
K1 = [
    (b"", 0x20, "68a985b87eb6b46952128911f2a4412bbc302a9d759667f87f7a21d803f07235"),
    (b"abc", 0x20, "d8ccab23b5985ccea865c6c97b6e5b8350e794e603b4b97902f53a8a0d605615"),
    (b"abcdef0123456789", 0x20,
     "eff31487c770a893cfb36f912fbfcbff40d5661771ca4b2cb4eafe524333f5c1"),
    (b"abc", 0x80,
     "abba86a6129e366fc877aab32fc4ffc70120d8996c88aee2fe4b32d6c7b6437a647e6c3163d40b76a73cf6a567"
     "4ef1d890f95b664ee0afa5359a5c4e07985635bbecbac65d747d3d2da7ec2b8221b17b0ca9dc8a1ac1c07ea6a1"
     "e60583e2cb00058e77b7b72a298425cd1b941ad4ec65e8afc50303a22c0f99b0509b4c895f40"),
]

J11_DST = b"QUUX-V01-CS02-with-P256_XMD:SHA-256_SSWU_RO_"
# msg, P.x, P.y, u[0], u[1]
J11 = [
    (b"",
     "2c15230b26dbc6fc9a37051158c95b79656e17a1a920b11394ca91c44247d3e4",
     "8a7a74985cc5c776cdfe4b1f19884970453912e9d31528c060be9ab5c43e8415",
     "ad5342c66a6dd0ff080df1da0ea1c04b96e0330dd89406465eeba11582515009",
     "8c0f1d43204bd6f6ea70ae8013070a1518b43873bcd850aafa0a9e220e2eea5a"),
    (b"abc",
     "0bb8b87485551aa43ed54f009230450b492fead5f1cc91658775dac4a3388a0f",
     "5c41b3d0731a27a7b14bc0bf0ccded2d8751f83493404c84a88e71ffd424212e",
     "afe47f2ea2b10465cc26ac403194dfb68b7f5ee865cda61e9f3e07a537220af1",
     "379a27833b0bfe6f7bdca08e1e83c760bf9a338ab335542704edcd69ce9e46e0"),
    (b"abcdef0123456789",
     "65038ac8f2b1def042a5df0b33b1f4eca6bff7cb0f9c6c1526811864e544ed80",
     "cad44d40a656e7aff4002a8de287abc8ae0482b5ae825822bb870d6df9b56ca3",
     "0fad9d125a9477d55cf9357105b0eb3a5c4259809bf87180aa01d651f53d312c",
     "b68597377392cd3419d8fcc7d7660948c8403b19ea78bbca4b133c9d2196c0fb"),
]
# Q0 and Q1 of the first J.1.1 vector: the map of u[0] and of u[1] before the sum.
J11_Q = ((0xab640a12220d3ff283510ff3f4b1953d09fad35795140b1c5d64f313967934d5,
          0xdccb558863804a881d4fff3455716c836cef230e5209594ddd33d85c565b19b1),
         (0x51cce63c50d972a6e51c61334f0f4875c9ac1cd2d3238412f84e31da7d980ef5,
          0xb45d1a36d00ad90e5ec7840a60a4de411917fbe7c82c3949a6e699e5a1b66aac))


@pytest.mark.parametrize("msg,length,expected", K1)
def test_expand_message_xmd_matches_rfc9380_appendix_k1(msg, length, expected):
    assert expand_message_xmd(msg, K1_DST, length).hex() == expected


@pytest.mark.parametrize("msg,px,py,u0,u1", J11)
def test_hash_to_field_and_hash_to_curve_match_rfc9380_appendix_j11(msg, px, py, u0, u1):
    assert hash_to_field(msg, J11_DST, 2) == (int(u0, 16), int(u1, 16))
    assert hash_to_curve(msg, J11_DST) == (int(px, 16), int(py, 16))


def test_the_simplified_swu_map_matches_the_rfc9380_intermediate_points():
    u0, u1 = (int(J11[0][3], 16), int(J11[0][4], 16))
    assert map_to_curve_sswu(u0) == J11_Q[0]
    assert map_to_curve_sswu(u1) == J11_Q[1]


def test_the_batched_hash_equals_the_hash_one_by_one_and_lands_on_the_curve():
    messages = [m for m, *_ in J11] + [str(i).encode() for i in range(40)]
    points = hash_to_curve_many(messages, J11_DST)
    assert points == [hash_to_curve(m, J11_DST) for m in messages]
    b = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
    assert all((y * y - x ** 3 + 3 * x - b) % P == 0 for x, y in points)
    assert hash_to_curve_many([], J11_DST) == []


def test_expand_message_xmd_refuses_a_dst_over_255_bytes_and_an_oversized_output():
    with pytest.raises(ValueError, match="256 bytes"):
        expand_message_xmd(b"", b"d" * 256, 32)
    with pytest.raises(ValueError, match="cannot expand"):
        expand_message_xmd(b"", b"d", 255 * 32 + 1)
