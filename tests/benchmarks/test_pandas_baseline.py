"""The pandas baseline of the foundation benchmark computes what the NVTabular workflow computes.

One small generated dataset goes through both ``preprocessing.run.run`` (NVTabular) and
``benchmarks.pandas_baseline.run_pandas_baseline``; the outputs are compared row by row (both keep
the input row order, which the pass-through ground-truth columns prove):

- rows per split are equal;
- continuous columns agree to 1e-4;
- categorical codes are the same partition of the rows (a bijection between the two code sets),
  with the same padding / null / OOV codes. For the tail-hashed columns the vocabulary part is a
  bijection and the same rows fall into the hash buckets, but the bucket numbers are not compared:
  NVTabular's CPU path hashes with the row index included (see ``benchmarks/pandas_baseline.py``);
- the multi-hot column has the same list lengths and a bijection on the flat codes.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.pandas_baseline import run_pandas_baseline
from preprocessing import columns as C
from preprocessing.generate import generate
from preprocessing.run import SPLITS, run
from preprocessing.simulator.config import GeneratorConfig
from preprocessing.workflow import WorkflowConfig

ROWS = 60_000
DAYS = 4


def _parts(directory: str):
    """The Parquet parts of one output split, in part-number order (= input row order)."""
    names = [f for f in os.listdir(directory) if f.endswith(".parquet")]
    return [os.path.join(directory, f)
            for f in sorted(names, key=lambda f: int(re.findall(r"\d+", f)[-1]))]


def _read(directory: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in _parts(directory)])


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """(NVTabular manifest, pandas manifest, {split: (nvt table, pandas table)})."""
    root = tmp_path_factory.mktemp("bench")
    gen = str(root / "gen")
    generate(ROWS, seed=7, out=gen, config=GeneratorConfig(rows_per_block=8192, days=DAYS),
             progress=False)
    config = WorkflowConfig()
    nvt = run(gen, str(root / "nvt"), config, progress=False)
    base = run_pandas_baseline(gen, str(root / "pandas"), config)
    tables = {s: (_read(str(root / "nvt" / s)), _read(str(root / "pandas" / s))) for s in SPLITS}
    return nvt, base, tables


def _assert_bijection(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Equal codes in ``a`` <=> equal codes in ``b``, row by row."""
    assert a.shape == b.shape, what
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    assert len(pairs) == len(np.unique(a)) == len(np.unique(b)), \
        f"{what}: the two encodings are not a relabelling of each other"


def _kind(codes: np.ndarray, vocab_offset: int) -> np.ndarray:
    """0 padding, 1 null, 2 any OOV / hash bucket, 3 any vocabulary value."""
    return np.where(codes >= vocab_offset, 3, np.minimum(codes, 2))


def test_rows_per_split_are_equal(outputs):
    nvt, base, tables = outputs
    assert base["rows_out"] == nvt["rows_out"] == base["rows_in"]
    assert sum(base["rows_out"].values()) == ROWS
    for split, (a, b) in tables.items():
        assert a.num_rows == b.num_rows == base["rows_out"][split], split


def test_both_keep_input_row_order(outputs):
    _, _, tables = outputs
    for split, (a, b) in tables.items():
        for col in (C.P_CLICK, C.P_PURCHASE_GIVEN_CLICK, C.DAY, C.CLICK, C.PURCHASE):
            assert a.column(col).to_numpy().tolist() == b.column(col).to_numpy().tolist(), \
                (split, col)


def test_continuous_columns_match_to_1e_4(outputs):
    _, _, tables = outputs
    spec = C.synthetic_spec()
    for split, (a, b) in tables.items():
        for col in spec.continuous:
            x, y = a.column(col).to_numpy(), b.column(col).to_numpy()
            assert not np.isnan(y).any(), (split, col)
            np.testing.assert_allclose(y, x, rtol=0, atol=1e-4, err_msg=f"{split}.{col}")


def test_categorical_codes_are_a_relabelling(outputs):
    _, _, tables = outputs
    spec, config = C.synthetic_spec(), WorkflowConfig()
    for split, (a, b) in tables.items():
        for col in spec.categorical:
            x, y = a.column(col).to_numpy(), b.column(col).to_numpy()
            n_oov = config.tail_buckets if col in config.tail_hashed else 1
            vocab = 2 + n_oov
            # padding / null / OOV rows are the same rows, vocabulary rows too
            np.testing.assert_array_equal(_kind(x, vocab), _kind(y, vocab),
                                          err_msg=f"{split}.{col}")
            assert (y >= 2).all(), (split, col)
            if col in config.tail_hashed:
                in_vocab = y >= vocab
                assert (~in_vocab).any(), f"{col}: no hashed rows, the test checks nothing"
                _assert_bijection(x[in_vocab], y[in_vocab], f"{split}.{col}")
            else:
                _assert_bijection(x, y, f"{split}.{col}")


def test_multihot_codes_are_a_relabelling(outputs):
    _, _, tables = outputs
    for split, (a, b) in tables.items():
        for col in C.synthetic_spec().multihot:
            x, y = a.column(col).combine_chunks(), b.column(col).combine_chunks()
            np.testing.assert_array_equal(pa.compute.list_value_length(x).to_numpy(),
                                          pa.compute.list_value_length(y).to_numpy())
            _assert_bijection(x.flatten().to_numpy(), y.flatten().to_numpy(), f"{split}.{col}")


def test_cardinalities_match_nvtabular_vocabularies(outputs):
    nvt, base, tables = outputs
    train_nvt, _ = tables["train"]
    for col, card in base["cardinality"].items():
        codes = train_nvt.column(col).combine_chunks()
        if isinstance(codes, pa.ListArray):
            codes = codes.flatten()
        assert int(pa.compute.max(codes).as_py()) == card - 1, col
