"""Fixes for merlin-core 23.08's pandas (CPU) helpers: vectorised list columns, stable hashing.

On the CPU (pandas) path, merlin-core flattens a list column with
``pd.Series(itertools.chain(*s))`` and re-nests it with a per-row Python loop. Profiling
``python -m preprocessing.run`` on 1M synthetic rows put 75% of the whole workflow's time in
those two helpers (``pandas._libs.lib.maybe_convert_objects`` on a 2.5M-element iterator; see
benchmarks/RESULTS.md). The replacements below compute the same values with one
``np.concatenate`` and one ``np.split``. cuDF series (the GPU path) and anything else are passed
to the original functions unchanged.

``hash_series`` is a correctness fix: see its docstring.

``apply()`` installs them on ``merlin.core.dispatch`` and on the NVTabular op modules that
imported them by name. It is idempotent, and every module that builds or loads a workflow calls
it (the Triton preprocessing step too), so fit, transform and serving use the same code.
Equality with the originals is a test (``tests/preprocessing/test_merlin_patches.py``).
"""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pyarrow as pa

_ORIGINAL = {}
_TARGET_MODULES = ("merlin.core.dispatch", "nvtabular.ops.normalize", "nvtabular.ops.logop",
                   "nvtabular.ops.moments", "nvtabular.ops.hash_bucket",
                   "nvtabular.ops.hashed_cross")


def _is_plain_list_series(s) -> bool:
    if not isinstance(s, pd.Series) or s.dtype != object or len(s) == 0:
        return False
    first = s.iloc[0]
    return isinstance(first, (np.ndarray, list)) and not s.isna().any()


def flatten_list_column_values(s):
    """The concatenated values of a list column (same result as merlin-core's helper)."""
    if _is_plain_list_series(s):
        return pd.Series(np.concatenate([np.asarray(v) for v in s.values]))
    return _ORIGINAL["flatten_list_column_values"](s)


def encode_list_column(original, encoded, dtype=None):
    """Re-nest flat ``encoded`` values with the row lengths of the list column ``original``."""
    if _is_plain_list_series(original):
        lengths = np.fromiter((len(v) for v in original.values), dtype=np.int64,
                              count=len(original))
        flat = np.asarray(encoded, dtype=dtype)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        nested = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat))
        return pd.Series(nested.to_numpy(zero_copy_only=False))
    return _ORIGINAL["encode_list_column"](original, encoded, dtype=dtype)


def hash_series(ser):
    """Row-wise hash of a Series that depends on the value only.

    merlin-core 23.08 hashes pandas Series with ``hash_pandas_object(ser)``, whose default
    ``index=True`` mixes the row's index into the hash: the same rare id then lands in
    different Categorify tail buckets in different rows and partitions, and serving (one
    request = a fresh index) disagrees with training. Hashing the values alone fixes both.
    """
    if isinstance(ser, pd.Series):
        return pd.util.hash_pandas_object(ser, index=False).values
    return _ORIGINAL["hash_series"](ser)


def apply() -> None:
    """Install the vectorised helpers (idempotent)."""
    dispatch = importlib.import_module("merlin.core.dispatch")
    if not _ORIGINAL:
        _ORIGINAL["flatten_list_column_values"] = dispatch.flatten_list_column_values
        _ORIGINAL["encode_list_column"] = dispatch.encode_list_column
        _ORIGINAL["hash_series"] = dispatch.hash_series
    replacements = {"flatten_list_column_values": flatten_list_column_values,
                    "encode_list_column": encode_list_column, "hash_series": hash_series}
    for name in _TARGET_MODULES:
        module = importlib.import_module(name)
        for attr, fn in replacements.items():
            if hasattr(module, attr):
                setattr(module, attr, fn)


def original(name: str):
    """The unpatched merlin-core function ``name`` (for equivalence tests)."""
    if not _ORIGINAL:
        dispatch = importlib.import_module("merlin.core.dispatch")
        return getattr(dispatch, name)
    return _ORIGINAL[name]
