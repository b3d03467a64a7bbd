"""Reading and comparing processed splits outside the Merlin loader."""

import os

import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing.splits import differing_columns, differing_vocabularies, read_split_table


def _write_output(root, parts, vocab):
    for split in ("train", "valid", "test"):
        os.makedirs(os.path.join(root, split))
        for i, table in enumerate(parts):
            pq.write_table(table, os.path.join(root, split, f"part_{i}.parquet"))
    cats = os.path.join(root, "workflow", "categories")
    os.makedirs(cats)
    pq.write_table(vocab, os.path.join(cats, "unique.a.parquet"))


def test_equal_outputs_with_different_part_boundaries_compare_equal(tmp_path):
    whole = pa.table({"a": [1, 2, 3, 4], "b": [0.5, 0.25, 0.0, 1.0]})
    vocab = pa.table({"a": [1, 2]})
    _write_output(str(tmp_path / "x"), [whole], vocab)
    _write_output(str(tmp_path / "y"), [whole.slice(0, 1), whole.slice(1)], vocab)
    assert differing_columns(str(tmp_path / "x"), str(tmp_path / "y")) == []
    assert differing_vocabularies(str(tmp_path / "x"), str(tmp_path / "y")) == []
    assert read_split_table(str(tmp_path / "y" / "test")).equals(whole)


def test_a_changed_value_and_a_changed_vocabulary_are_named(tmp_path):
    a = pa.table({"a": [1, 2, 3], "b": [0.5, 0.25, 0.0]})
    b = pa.table({"a": [1, 2, 3], "b": [0.5, 0.25, 1e-12]})
    _write_output(str(tmp_path / "x"), [a], pa.table({"a": [1, 2]}))
    _write_output(str(tmp_path / "y"), [b], pa.table({"a": [2, 1]}))
    assert differing_columns(str(tmp_path / "x"), str(tmp_path / "y")) == [
        "train/b", "valid/b", "test/b"]
    assert differing_vocabularies(str(tmp_path / "x"), str(tmp_path / "y")) == [
        "unique.a.parquet"]
