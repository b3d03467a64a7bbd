"""Parquet files as a merlin ``Dataset`` whose partitions are read once per computation.

``merlin.io.Dataset(files, engine="parquet")`` reads through dask's Parquet layer, a graph layer
that dask may fuse into its consumers and project onto the columns they use. Categorify's
``fit`` optimises its own part of the graph, which does exactly that: each statistic gets a
private copy of the read. On the 1M-row default data one ``Workflow.fit`` read the five training
files 41 times (5 files x 8 statistics + a dtype sample), and the fit took 6.7 s. Here the reads
are a plain (materialised) graph layer, which dask can neither fuse nor project, so all
statistics share one read per partition: 7 reads, 3.2 s, the same vocabularies and moments
(``tests/preprocessing/test_run.py`` compares whole outputs with the stock reader's).

Partitions are what merlin's Parquet engine would make of the same ``part_size``: runs of
``part_size / (in-memory size of the first row group)`` row groups of one file, so that the
statistics are summed in the same order. Funnel-violating rows are dropped inside the read when
asked. The reader is pandas (through pyarrow) on the CPU
and cuDF on the GPU (``cpu``: the caller passes ``preprocessing.device``'s ``dataset_cpu``);
everything after the read is NVTabular's own graph either way.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import pyarrow.parquet as pq

Partition = Tuple[str, Tuple[int, ...]]


def read_partition(path: str, row_groups: Tuple[int, ...], cpu: bool,
                   funnel: Sequence[Tuple[str, str]] = ()):
    """One partition: ``row_groups`` of ``path`` as a pandas (``cpu``) or cuDF DataFrame,
    without the rows where a later funnel stage is 1 and its earlier stage 0."""
    if cpu:
        df = pq.ParquetFile(path).read_row_groups(list(row_groups)).to_pandas()
    else:
        import cudf
        df = cudf.read_parquet(path, row_groups=list(row_groups))
    if funnel:
        keep = None
        for later, earlier in funnel:
            ok = ~((df[later] == 1) & (df[earlier] == 0))
            keep = ok if keep is None else keep & ok
        if not keep.all():
            df = df[keep].reset_index(drop=True)
    return df


def plan_partitions(files: Sequence[str], row_groups_per_part: int) -> List[Partition]:
    """Each file's row groups in runs of ``row_groups_per_part`` (the last run may be shorter),
    as ``dask.dataframe.read_parquet(split_row_groups=...)`` splits them."""
    if row_groups_per_part < 1:
        raise ValueError(f"row_groups_per_part must be >= 1, got {row_groups_per_part}")
    plan: List[Partition] = []
    for path in files:
        groups = range(pq.ParquetFile(path).metadata.num_row_groups)
        plan += [(path, tuple(groups[i:i + row_groups_per_part]))
                 for i in range(0, len(groups), row_groups_per_part)]
    return plan


def row_groups_per_part(first_row_group, part_bytes: int) -> int:
    """merlin's rule: ``part_bytes`` over the first row group's in-memory size (deep, index
    included), at least 1."""
    size = int(first_row_group.memory_usage(deep=True, index=True).sum())
    return max(1, int(part_bytes / max(size, 1)))


def read_once_dataset(files: Sequence[str], part_size: str, cpu: bool,
                      funnel: Sequence[Tuple[str, str]] = (), name: Optional[str] = None):
    """A merlin ``Dataset`` over ``files`` whose read tasks every consumer shares.

    Args:
        files: Parquet files, in the row order of the dataset.
        part_size: target in-memory size of a partition, e.g. "256MB".
        cpu: pandas (True) or cuDF (False) partitions.
        funnel: (later, earlier) target pairs; rows with later = 1 and earlier = 0 are dropped.
        name: the graph layer's name (default: derived from the arguments).
    """
    import dask.dataframe as dd
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
    from dask.utils import parse_bytes
    from merlin.io import Dataset

    if not files:
        raise ValueError("read_once_dataset needs at least one file")
    first = pq.ParquetFile(files[0])
    groups = (0,) if first.metadata.num_row_groups else ()
    sample = read_partition(files[0], groups, cpu)
    plan = plan_partitions(files, row_groups_per_part(sample, parse_bytes(part_size)))
    name = name or "read-once-" + tokenize(list(files), part_size, cpu, list(funnel),
                                           [os.stat(f).st_mtime_ns for f in files])
    layer = {(name, i): (read_partition, path, row_groups, cpu, tuple(funnel))
             for i, (path, row_groups) in enumerate(plan)}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[])
    ddf = dd.DataFrame(graph, name, sample.head(0), [None] * (len(plan) + 1))
    return Dataset(ddf, cpu=cpu)
