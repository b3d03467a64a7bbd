"""One hash of an integer id for training and serving, on the CPU (numpy) and the GPU (CuPy).

NVTabular 23.08 hashes the rare tail of a ``Categorify(num_buckets=...)`` column with
``merlin.core.dispatch.hash_series``: pandas' ``hash_pandas_object`` on the CPU, cuDF's murmur3
on the GPU. The two disagree, so a workflow fitted on one device and a serving step on the other
put a rare id in different tail buckets (train/serve skew). This module is the single definition
both devices use instead (installed by ``preprocessing.merlin_patches``): the SplitMix64 output
function (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014;
Vigna's reference ``splitmix64.c``) of the id's 64 bits::

    z = uint64(id) + 0x9E3779B97F4A7C15
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    hash = z ^ (z >> 31)                      (all arithmetic modulo 2**64)

so ``id_hash(k * 0x9E3779B97F4A7C15)`` for k = 0, 1, 2, 3 is the reference generator's first
four outputs from state 0 (``0xE220A8397B1DCDAF``, ...): the known-answer vectors of the tests.
The function is a bijection of the 64-bit values. Only shifts, xors and wrapping multiplies:
numpy and CuPy evaluate it bit for bit alike (unverified on a GPU: no GPU run yet).
"""

from __future__ import annotations

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def id_hash(ids):
    """The SplitMix64 output function of each id (module docstring), as uint64.

    Args:
        ids: a numpy or CuPy array of integers (any width, signed or not); the result is of the
            same array library.

    Raises:
        TypeError: a non-integer array.
    """
    xp = _array_module(ids)
    ids = xp.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"id_hash: expected an integer array, got dtype {ids.dtype}")
    z = ids.astype(xp.int64, copy=False).view(xp.uint64) + xp.uint64(GOLDEN)
    z = (z ^ (z >> xp.uint64(30))) * xp.uint64(_M1)
    z = (z ^ (z >> xp.uint64(27))) * xp.uint64(_M2)
    return z ^ (z >> xp.uint64(31))


def _array_module(x):
    """numpy, or CuPy for a CuPy array (without importing CuPy on the CPU)."""
    module = type(x).__module__
    if module.startswith("cupy"):
        import cupy
        return cupy
    return np
