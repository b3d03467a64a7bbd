"""One handle on a processed dataset (the output of ``python -m preprocessing.run``), opened once
per command and passed down to every stage that reads it.

A processed dataset is a directory with ``dataset_spec.json`` (which column plays which role),
one sub-directory per split (``train``, ``valid``, ``test``: Parquet parts and the Merlin
``schema.pbtxt``) and the fitted NVTabular ``workflow/``. :class:`ProcessedData` reads the spec
when it is opened and everything else at most once, on first use: the Parquet parts of a split,
its Merlin schema, its row count. The stages (training, evaluation, calibration, the replay)
take the handle, or a directory that they open into one (:meth:`ProcessedData.open`), so that a
command that trains, exports and evaluates reads the spec once (``tests/models/test_registry.py``
counts it).
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Union

import pandas as pd

from preprocessing import columns as C
from preprocessing.splits import read_parts_table, split_parts

SPLITS = ("train", "valid", "test")
WORKFLOW_DIR = "workflow"


class ProcessedData:
    """A processed dataset directory: its spec, and per split its parts, schema and rows.

    Args:
        root: the directory ``python -m preprocessing.run --out`` wrote.

    Raises:
        FileNotFoundError: ``root`` has no ``dataset_spec.json`` (the message says which
            command writes it).
    """

    def __init__(self, root: str):
        self.root = str(root)
        self.spec: C.DatasetSpec = C.DatasetSpec.load(self.root)
        self._parts: Dict[str, List[str]] = {}
        self._schemas: Dict[str, object] = {}
        self._rows: Dict[str, int] = {}

    @classmethod
    def open(cls, data: Union[str, os.PathLike, "ProcessedData"]) -> "ProcessedData":
        """``data`` itself when it is a handle already, else a new handle on that directory."""
        return data if isinstance(data, ProcessedData) else cls(os.fspath(data))

    def __repr__(self) -> str:
        return f"ProcessedData({self.root!r})"

    def __str__(self) -> str:  # error messages name the directory
        return self.root

    def __fspath__(self) -> str:
        return self.root

    @property
    def targets(self) -> tuple:
        """The label columns the data has (a subset of click, cart, purchase)."""
        return tuple(self.spec.targets)

    @property
    def columns(self) -> tuple:
        """Every column of the processed splits, by the spec."""
        return tuple(self.spec.all_columns)

    @property
    def workflow_dir(self) -> str:
        """The fitted NVTabular workflow (what the serving preprocess step loads)."""
        return os.path.join(self.root, WORKFLOW_DIR)

    def split_dir(self, split: str) -> str:
        """The directory of one split."""
        return os.path.join(self.root, split)

    def parts(self, split: str) -> List[str]:
        """The split's Parquet parts in part order (listed once)."""
        if split not in self._parts:
            self._parts[split] = split_parts(self.split_dir(split))
        return list(self._parts[split])

    def schema(self, split: str = "train"):
        """The split's Merlin schema (``schema.pbtxt`` written by the workflow), read once and
        on the CPU whatever the device: only metadata is read."""
        if split not in self._schemas:
            from preprocessing import merlin_patches
            merlin_patches.apply()
            from merlin.io import Dataset
            self._schemas[split] = Dataset(self.parts(split), engine="parquet",
                                           cpu=True).schema
        return self._schemas[split]

    def rows(self, split: str) -> int:
        """The split's row count, from the Parquet footers."""
        if split not in self._rows:
            import pyarrow.parquet as pq
            self._rows[split] = sum(pq.ParquetFile(p).metadata.num_rows
                                    for p in self.parts(split))
        return self._rows[split]

    def read(self, split: str, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
        """Columns of a split (all when None) as one pandas frame, in row order (list columns
        become object arrays)."""
        return read_parts_table(self.parts(split),
                                None if columns is None else list(columns)).to_pandas()
