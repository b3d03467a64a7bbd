"""The HugeCTR view of a processed directory (``models/hugectr/data.py``): file lists, metadata
column order, slot sizes from the workflow, the multi-hot decision, the Parquet copy, and the
errors on inconsistent inputs."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from models.hugectr.data import (FILE_LIST, LABELS, METADATA, SPLITS, describe, read_file_list,
                                 slot_size)
from preprocessing import columns as C


def _meta(directory, split):
    with open(os.path.join(directory, split, METADATA)) as fh:
        return json.load(fh)


def test_file_lists_name_existing_parts_and_columns_follow_metadata_order(hugectr_data,
                                                                          small_processed):
    for split in SPLITS:
        meta = _meta(small_processed, split)
        parts = hugectr_data.parts[split]
        assert parts and all(os.path.isfile(p) for p in parts)
        assert sorted(os.path.basename(p) for p in parts) == \
            sorted(s["file_name"] for s in meta["file_stats"])
        assert hugectr_data.rows[split] == sum(pq.ParquetFile(p).metadata.num_rows
                                               for p in parts)
        for role, got in (("cats", hugectr_data.categorical), ("conts", hugectr_data.dense),
                          ("labels", hugectr_data.labels)):
            assert list(got) == [c["col_name"] for c in meta[role]]
            assert [c["index"] for c in meta[role]] == sorted(c["index"] for c in meta[role])
    spec = C.DatasetSpec.load(small_processed)
    assert set(hugectr_data.categorical) == set(spec.categorical) | set(spec.multihot)
    assert set(hugectr_data.dense) == set(spec.continuous)


def test_slot_sizes_equal_the_workflow_cardinalities_and_bound_every_code(hugectr_data,
                                                                         hugectr_schema):
    for col in hugectr_data.categorical:
        schema_col = hugectr_schema[col]
        size = hugectr_data.slot_sizes[col]
        assert size == int(schema_col.int_domain.max) + 1
        assert size == int(schema_col.properties["embedding_sizes"]["cardinality"])
        codes = pa.concat_tables([pq.read_table(p, columns=[col])
                                  for p in hugectr_data.parts["train"]]).column(0)
        if col in hugectr_data.multihot:
            codes = pc.list_flatten(codes)
        values = codes.to_numpy()
        assert values.min() >= 0 and values.max() + 1 <= size, col
    offsets = hugectr_data.slot_offsets
    assert offsets[0] == 0
    assert np.all(np.diff(offsets) == np.array(hugectr_data.slot_size_array[:-1]))


def test_multihot_columns_are_left_out_of_the_slots_and_the_copy(hugectr_data, hugectr_out,
                                                                  hugectr_desc,
                                                                  small_processed):
    spec = C.DatasetSpec.load(small_processed)
    assert hugectr_data.multihot == tuple(spec.multihot) == ("user_recent_cats",)
    assert "user_recent_cats" not in hugectr_data.slots
    assert hugectr_desc["multihot_left_out"] == ["user_recent_cats"]
    for split in SPLITS:
        meta = _meta(os.path.join(hugectr_out, "data"), split)
        assert [c["col_name"] for c in meta["cats"]] == list(hugectr_data.slots)
        for rel in hugectr_desc["splits"][split]["parts"]:
            schema = pq.read_schema(os.path.join(hugectr_out, rel))
            assert not any(pa.types.is_list(t) for t in schema.types)
    # the predict step still sends the multi-hot column; the adapter declares and ignores it
    inputs = hugectr_desc["signature"]["inputs"]
    assert {"user_recent_cats__values", "user_recent_cats__offsets"} <= set(inputs)


def test_copy_holds_float32_labels_and_dense_at_the_metadata_positions(hugectr_data,
                                                                      hugectr_out, hugectr_desc):
    for split in SPLITS:
        meta = _meta(os.path.join(hugectr_out, "data"), split)
        assert [c["col_name"] for c in meta["labels"]] == list(LABELS) == sorted(LABELS)
        src_parts = hugectr_data.parts[split]
        out_parts = hugectr_desc["splits"][split]["parts"]
        assert [os.path.basename(p) for p in src_parts] == [os.path.basename(p)
                                                            for p in out_parts]
        for src, rel in zip(src_parts, out_parts):
            table = pq.read_table(os.path.join(hugectr_out, rel))
            for role in ("cats", "conts", "labels"):
                for col in meta[role]:
                    assert table.column_names[col["index"]] == col["col_name"]
                    want = pa.int64() if role == "cats" else pa.float32()
                    assert table.schema.field(col["index"]).type == want
            source = pq.read_table(src, columns=[*hugectr_data.slots, *hugectr_data.dense,
                                                 C.CLICK, C.PURCHASE])
            for col in hugectr_data.slots:
                assert np.array_equal(table.column(col).to_numpy(),
                                      source.column(col).to_numpy())
            for col in hugectr_data.dense:
                np.testing.assert_allclose(table.column(col).to_numpy(),
                                           source.column(col).to_numpy(), rtol=1e-6, atol=1e-6)
            click = source.column(C.CLICK).to_numpy()
            purchase = source.column(C.PURCHASE).to_numpy()
            assert np.array_equal(table.column("click").to_numpy(), click)
            assert np.array_equal(table.column("ctcvr").to_numpy(), click * purchase)
        stats = {s["file_name"]: s["num_rows"] for s in meta["file_stats"]}
        assert sum(stats.values()) == hugectr_data.rows[split]


def test_copy_file_lists_are_relative_to_the_output_directory(hugectr_out, hugectr_desc):
    for split in SPLITS:
        path = os.path.join(hugectr_out, hugectr_desc["splits"][split]["file_list"])
        lines = Path(path).read_text().splitlines()
        assert int(lines[0]) == len(lines) - 1
        assert all(not os.path.isabs(p) and os.path.isfile(os.path.join(hugectr_out, p))
                   for p in lines[1:])
        # HugeCTR finds _metadata.json beside the first listed part
        assert os.path.isfile(os.path.join(hugectr_out, os.path.dirname(lines[1]), METADATA))


def _proc_copy(tmp_path, small_processed) -> Path:
    """A processed directory whose side files can be edited: copies of the file lists and the
    metadata (the lists still name the fixture's parts), the workflow linked."""
    dst = tmp_path / "proc"
    for split in SPLITS:
        (dst / split).mkdir(parents=True)
        for name in (FILE_LIST, METADATA):
            shutil.copy(os.path.join(small_processed, split, name), dst / split / name)
    os.symlink(os.path.join(small_processed, "workflow"), dst / "workflow")
    return dst


def _edit_metadata(proc: Path, edit) -> None:
    for split in SPLITS:
        path = proc / split / METADATA
        meta = json.loads(path.read_text())
        edit(meta)
        path.write_text(json.dumps(meta))


def test_describe_of_an_unchanged_copy_matches_the_original(tmp_path, small_processed,
                                                           hugectr_schema, hugectr_data):
    got = describe(str(_proc_copy(tmp_path, small_processed)), hugectr_schema)
    assert got.categorical == hugectr_data.categorical
    assert got.slot_sizes == hugectr_data.slot_sizes


def test_missing_file_list_is_an_error_naming_it(tmp_path, small_processed, hugectr_schema):
    proc = _proc_copy(tmp_path, small_processed)
    os.remove(proc / "valid" / FILE_LIST)
    with pytest.raises(FileNotFoundError, match=r"valid/_file_list\.txt: no HugeCTR file list"):
        describe(str(proc), hugectr_schema)


def test_file_list_naming_a_missing_part_is_an_error_naming_both(tmp_path, small_processed,
                                                                 hugectr_schema):
    proc = _proc_copy(tmp_path, small_processed)
    gone = str(tmp_path / "elsewhere" / "part_0.parquet")
    (proc / "train" / FILE_LIST).write_text(f"1\n{gone}\n")
    with pytest.raises(FileNotFoundError, match=r"train/_file_list\.txt: names .*elsewhere/"
                                                r"part_0\.parquet, which does not exist"):
        describe(str(proc), hugectr_schema)
    with pytest.raises(ValueError, match="says 3 files but lists 1"):
        (proc / "train" / FILE_LIST).write_text(f"3\n{gone}\n")
        read_file_list(str(proc / "train" / FILE_LIST))


def test_metadata_column_missing_from_the_workflow_is_an_error_naming_it(tmp_path,
                                                                         small_processed,
                                                                         hugectr_schema):
    proc = _proc_copy(tmp_path, small_processed)

    def rename(meta):
        for col in meta["cats"]:
            if col["col_name"] == "user_age":
                col["col_name"] = "user_age_v2"
    _edit_metadata(proc, rename)
    with pytest.raises(ValueError, match=r"train/_metadata\.json: column 'user_age_v2' \(cats\) "
                                         r"is not in the workflow's output schema"):
        describe(str(proc), hugectr_schema)


def test_workflow_feature_absent_from_the_metadata_is_an_error(tmp_path, small_processed,
                                                               hugectr_schema):
    proc = _proc_copy(tmp_path, small_processed)
    _edit_metadata(proc, lambda m: m.update(conts=[c for c in m["conts"]
                                                   if c["col_name"] != "item_price"]))
    with pytest.raises(ValueError, match=r"model features \['item_price'\] are not listed"):
        describe(str(proc), hugectr_schema)


def test_metadata_index_that_is_not_the_parquet_position_is_an_error(tmp_path, small_processed,
                                                                     hugectr_schema):
    proc = _proc_copy(tmp_path, small_processed)

    def swap(meta):
        a, b = meta["cats"][0], meta["cats"][1]
        a["index"], b["index"] = b["index"], a["index"]
    _edit_metadata(proc, swap)
    with pytest.raises(ValueError, match=r"'user_id' has index 1, but column 1 of part_\d+"
                                         r"\.parquet is user_age"):
        describe(str(proc), hugectr_schema)


def test_metadata_that_disagrees_between_splits_is_an_error(tmp_path, small_processed,
                                                            hugectr_schema):
    proc = _proc_copy(tmp_path, small_processed)
    path = proc / "test" / METADATA
    meta = json.loads(path.read_text())
    meta["labels"] = meta["labels"][:-1]
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"test/_metadata\.json: 'labels' is"):
        describe(str(proc), hugectr_schema)


def test_slot_size_refuses_a_schema_without_a_domain(hugectr_schema):
    col = hugectr_schema["item_price"]  # continuous: no int_domain
    with pytest.raises(ValueError, match="no int_domain.max"):
        slot_size(col)
