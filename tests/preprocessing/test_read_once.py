"""The read-once dataset: merlin's partitioning, one read per partition per computation."""

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocessing import columns as C
from preprocessing import read_once
from preprocessing.run import split_files_by_day
from preprocessing.validate import list_parquet_files
from preprocessing.workflow import WorkflowConfig, build_workflow


def _file(path, rows, row_group_size):
    table = pa.table({"x": np.arange(rows), "click": np.arange(rows) % 2,
                      "purchase": (np.arange(rows) % 4 == 1).astype(np.int64)})
    pq.write_table(table, path, row_group_size=row_group_size)
    return str(path)


def test_partitions_are_the_row_group_runs_merlin_makes(tmp_path):
    from merlin.io import Dataset
    files = [_file(tmp_path / "a.parquet", 1000, 100), _file(tmp_path / "b.parquet", 250, 100)]
    assert read_once.plan_partitions(files, 3) == [
        (files[0], (0, 1, 2)), (files[0], (3, 4, 5)), (files[0], (6, 7, 8)), (files[0], (9,)),
        (files[1], (0, 1, 2))]
    group = pq.ParquetFile(files[0]).read_row_group(0).to_pandas()
    part_size = int(3.5 * group.memory_usage(deep=True, index=True).sum())  # 3 row groups
    theirs = Dataset(files, engine="parquet", part_size=part_size, cpu=True).to_ddf()
    ours = read_once.read_once_dataset(files, str(part_size), cpu=True).to_ddf()
    assert ours.npartitions == theirs.npartitions == 5
    for i in range(5):
        assert ours.partitions[i].compute()["x"].tolist() == \
            theirs.partitions[i].compute()["x"].tolist()
    with pytest.raises(ValueError, match=">= 1"):
        read_once.plan_partitions(files, 0)


def test_row_groups_per_part_follows_merlins_rule():
    group = pd.DataFrame({"x": np.arange(1000, dtype=np.int64)})
    size = int(group.memory_usage(deep=True, index=True).sum())
    assert read_once.row_groups_per_part(group, 10 * size) == 10
    assert read_once.row_groups_per_part(group, size // 2) == 1


def test_funnel_violating_rows_are_dropped_in_the_read(tmp_path):
    path = _file(tmp_path / "a.parquet", 8, 8)
    df = read_once.read_partition(path, (0,), True, funnel=[("purchase", "click")])
    # rows 1 and 5 have purchase 1 and click 1; purchase is never 1 where click is 0 here
    assert len(df) == 8
    bad = pa.table({"click": [0, 1, 0], "purchase": [1, 1, 0]})
    pq.write_table(bad, tmp_path / "bad.parquet")
    df = read_once.read_partition(str(tmp_path / "bad.parquet"), (0,), True,
                                  funnel=[("purchase", "click")])
    assert df["click"].tolist() == [1, 0] and list(df.index) == [0, 1]


def test_a_workflow_fit_reads_each_partition_once(small_generated, tmp_path, monkeypatch):
    reads = []
    original = read_once.read_partition

    def counted(path, row_groups, cpu, funnel=()):
        reads.append((os.path.basename(path), row_groups))
        return original(path, row_groups, cpu, funnel)

    monkeypatch.setattr(read_once, "read_partition", counted)
    spec = C.DatasetSpec.load(small_generated)
    config = WorkflowConfig()
    train = split_files_by_day(list_parquet_files(small_generated), spec, config)["train"]
    dataset = read_once.read_once_dataset(train, config.part_size, cpu=True)
    assert reads.pop(0) == (os.path.basename(train[0]), (0,))  # the size sample: 1 group
    workflow = build_workflow(spec, config, str(tmp_path / "cats"))
    workflow.fit(dataset)
    partitions = dataset.to_ddf().npartitions
    assert partitions == len(train) >= 2
    counts = pd.Series(reads).value_counts()
    first = reads[0]
    # one read per partition for all statistics; partition 0 is also read by merlin's schema
    # inference (Dataset) and its output-dtype sample at the end of the fit
    assert (counts.drop(index=[first]) == 1).all()
    assert counts[first] == 3
    assert len(counts) == partitions
