"""Fixes for merlin-core / NVTabular 23.08's pandas (CPU) helpers: vectorised list columns,
vectorised Categorify encoding, stable hashing.

On the CPU (pandas) path, merlin-core flattens a list column with
``pd.Series(itertools.chain(*s))`` and re-nests it with a per-row Python loop. Profiling
``python -m preprocessing.run`` on 1M synthetic rows put 75% of the whole workflow's time in
those two helpers (``pandas._libs.lib.maybe_convert_objects`` on a 2.5M-element iterator; see
benchmarks/RESULTS.md). The replacements below compute the same values with one
``np.concatenate`` and one ``np.split``. cuDF series (the GPU path) and anything else are passed
to the original functions unchanged.

``encode_categories`` replaces Categorify's ``_encode`` on the pandas path: the original joins
every partition to the vocabulary with a pandas ``merge`` and sorts the result back into row
order (3.7 s of a 1M-row run); the replacement looks the values up in a hash index of the
vocabulary, built once per vocabulary file and reused by every partition.

``hash_series`` is a correctness fix: see its docstring.

``apply()`` installs them on ``merlin.core.dispatch`` and on the NVTabular op modules that
imported them by name. It is idempotent, and every module that builds or loads a workflow calls
it (the Triton preprocessing step too), so fit, transform and serving use the same code.
Equality with the originals is a test (``tests/preprocessing/test_merlin_patches.py``).
"""

from __future__ import annotations

import importlib
import inspect
import os

import numpy as np
import pandas as pd
import pyarrow as pa

_ORIGINAL = {}
_TARGET_MODULES = ("merlin.core.dispatch", "nvtabular.ops.normalize", "nvtabular.ops.logop",
                   "nvtabular.ops.moments", "nvtabular.ops.hash_bucket",
                   "nvtabular.ops.hashed_cross")
_CATEGORIFY = "nvtabular.ops.categorify"

# The signatures the replacements were written against (merlin-core / NVTabular 23.08). A
# different signature after an upgrade means the patched function may have changed: ``apply``
# refuses to patch it rather than silently computing something else.
EXPECTED_SIGNATURES = {
    ("merlin.core.dispatch", "flatten_list_column_values"): "(s)",
    ("merlin.core.dispatch", "encode_list_column"): "(original, encoded, dtype=None)",
    ("merlin.core.dispatch", "hash_series"): "(ser)",
    (_CATEGORIFY, "_encode"): (
        "(name, storage_name, path, df, cat_cache, freq_threshold=0, search_sorted=False, "
        "buckets=None, encode_type='joint', cat_names=None, max_size=0, dtype=None, "
        "split_out=1, single_table=False)"),
}


class MerlinVersionError(RuntimeError):
    """A patched merlin / NVTabular function no longer has the signature it was written for."""


def check_signature(module_name: str, attr: str, fn) -> None:
    """Raise ``MerlinVersionError`` if ``fn`` differs from the signature we patched."""
    want = EXPECTED_SIGNATURES[(module_name, attr)]
    got = str(inspect.signature(fn))
    if got != want:
        raise MerlinVersionError(
            f"{module_name}.{attr} has the signature {got}, but preprocessing/merlin_patches.py "
            f"was written for {want} (merlin-core / NVTabular 23.08). Re-check the replacement "
            "against the new version, then update EXPECTED_SIGNATURES.")


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
    """Row-wise hash of a Series that depends on the value only, and for integer ids the same
    on both devices.

    merlin-core 23.08 hashes pandas Series with ``hash_pandas_object(ser)``, whose default
    ``index=True`` mixes the row's index into the hash: the same rare id then lands in
    different Categorify tail buckets in different rows and partitions, and serving (one
    request = a fresh index) disagrees with training. And cuDF Series get cuDF's murmur3, which
    pandas never matches: a workflow fitted on the GPU and served on the CPU (or the reverse)
    disagrees on every rare id. Integer values (the ids this project hashes) therefore go
    through ``preprocessing.id_hash`` on either device (numpy for pandas, CuPy for cuDF, one
    definition); other values keep a value-only hash of their library (not device-independent).
    """
    from preprocessing.id_hash import id_hash
    if isinstance(ser, pd.Series):
        if isinstance(ser.dtype, np.dtype) and ser.dtype.kind in ("i", "u"):
            return id_hash(ser.to_numpy())
        return pd.util.hash_pandas_object(ser, index=False).values
    values = getattr(ser, "values", None)
    if getattr(getattr(ser, "dtype", None), "kind", None) in ("i", "u") and values is not None \
            and type(ser).__module__.startswith("cudf"):
        import cudf  # the GPU path: the same function on the CuPy array  # pragma: no cover
        return cudf.Series(id_hash(values))  # pragma: no cover
    return _ORIGINAL["hash_series"](ser)


_VOCABULARY_INDEX: dict = {}


def _vocabulary_index(path: str, column: str, reader):
    """(pd.Index of the vocabulary values, their dtype) of one Categorify file, cached.

    The cache key includes the file's size and modification time, so a refitted vocabulary
    written to the same path is read again."""
    st = os.stat(path)
    key = (path, column, st.st_size, st.st_mtime_ns)
    hit = _VOCABULARY_INDEX.get(key)
    if hit is None:
        values = reader(path, columns=[column])[column]
        hit = (pd.Index(values), values.dtype)
        for old in [k for k in _VOCABULARY_INDEX if k[:2] == key[:2]]:
            del _VOCABULARY_INDEX[old]
        _VOCABULARY_INDEX[key] = hit
    return hit


def _encodes_vectorised(name, path, df, cat_cache, search_sorted, dtype, split_out,
                        single_table) -> bool:
    """Whether ``encode_categories`` handles this call (else the original ``_encode`` does)."""
    if not isinstance(df, pd.DataFrame) or not isinstance(name, str) or name not in df:
        return False
    if not path or not os.path.isfile(path) or split_out != 1 or single_table:
        return False
    if search_sorted or cat_cache not in ("host", "disk", "device") or dtype is None:
        return False
    col = df[name]
    return col.dtype != object or _is_plain_list_series(col)


def _is_list_hashed(name, df, buckets, storage_name) -> bool:
    hashed = bool(buckets) and (isinstance(buckets, int) or storage_name in buckets)
    return hashed and df[name].dtype == object


def encode_categories(name, storage_name, path, df, cat_cache, freq_threshold=0,
                      search_sorted=False, buckets=None, encode_type="joint", cat_names=None,
                      max_size=0, dtype=None, split_out=1, single_table=False):
    """Categorify's ``_encode`` for one pandas column: the same codes by hash lookup.

    Code layout (NVTabular 23.08): 1 for a null, ``[2, 2 + n_oov)`` for a value outside the
    vocabulary (its hash bucket when the column has ``buckets``, else 2), and
    ``2 + n_oov + i`` for the i-th row of the vocabulary file. Anything else (cuDF, a
    multi-column group, a split vocabulary, ``search_sorted``) goes to the original.
    """
    if isinstance(cat_cache, dict):
        cat_cache = cat_cache.get(storage_name, "disk")
    if (not _encodes_vectorised(name, path, df, cat_cache, search_sorted, dtype, split_out,
                                single_table)
            or _is_list_hashed(name, df, buckets, storage_name)):
        return _ORIGINAL["_encode"](
            name, storage_name, path, df, cat_cache, freq_threshold=freq_threshold,
            search_sorted=search_sorted, buckets=buckets, encode_type=encode_type,
            cat_names=cat_names, max_size=max_size, dtype=dtype, split_out=split_out,
            single_table=single_table)
    categorify = importlib.import_module(_CATEGORIFY)
    dispatch = importlib.import_module("merlin.core.dispatch")
    if isinstance(buckets, int):
        buckets = {c: buckets for c in cat_names}
    hashed = bool(buckets) and storage_name in buckets
    n_oov = buckets[storage_name] if hashed else 1
    index, vocab_dtype = _vocabulary_index(path, storage_name,
                                           dispatch.read_dispatch(df, fmt="parquet"))
    col = df[name]
    is_list = col.dtype == object
    values = flatten_list_column_values(col) if is_list else col
    pos = index.get_indexer(values.astype(vocab_dtype))
    labels = pos.astype(np.int64) + (categorify.OOV_OFFSET + n_oov)
    missing = pos < 0
    if missing.any():
        if hashed:
            bucket = categorify._hash_bucket(df, buckets, [name], encode_type=encode_type)
            labels[missing] = np.asarray(bucket, dtype=np.int64)[missing] + categorify.OOV_OFFSET
        else:
            labels[missing] = categorify.OOV_OFFSET
    if is_list:
        return encode_list_column(col, labels, dtype=dtype)
    labels[col.isna().to_numpy()] = categorify.NULL_OFFSET
    return labels.astype(dtype, copy=False)


def apply() -> None:
    """Install the vectorised helpers (idempotent); refuses a merlin whose patched functions
    changed signature (``MerlinVersionError``)."""
    dispatch = importlib.import_module("merlin.core.dispatch")
    categorify = importlib.import_module(_CATEGORIFY)
    if not _ORIGINAL:
        for (module_name, attr) in EXPECTED_SIGNATURES:
            module = dispatch if module_name == "merlin.core.dispatch" else categorify
            check_signature(module_name, attr, getattr(module, attr))
        _ORIGINAL["flatten_list_column_values"] = dispatch.flatten_list_column_values
        _ORIGINAL["encode_list_column"] = dispatch.encode_list_column
        _ORIGINAL["hash_series"] = dispatch.hash_series
        _ORIGINAL["_encode"] = categorify._encode
    replacements = {"flatten_list_column_values": flatten_list_column_values,
                    "encode_list_column": encode_list_column, "hash_series": hash_series}
    for name in _TARGET_MODULES:
        module = importlib.import_module(name)
        for attr, fn in replacements.items():
            if hasattr(module, attr):
                setattr(module, attr, fn)
    categorify._encode = encode_categories


def original(name: str):
    """The unpatched merlin-core function ``name`` (for equivalence tests)."""
    if not _ORIGINAL:
        module = _CATEGORIFY if name == "_encode" else "merlin.core.dispatch"
        return getattr(importlib.import_module(module), name)
    return _ORIGINAL[name]
