"""What serving must know about requests, recorded beside the saved workflow when it is fitted.

A fitted NVTabular workflow holds the vocabularies and moments, but not two facts about its
training input that the Triton ``preprocess`` step needs:

- ``nullable``: the continuous columns that had missing values in the training input. There NaN
  means "missing" and gets ``FillMissing``'s value, as in training; in every other continuous
  column a NaN in a request is refused.
- ``max_list``: the longest list of each multi-hot column in the training split, the padded
  width of that input inside the ensemble.

``python -m preprocessing.run`` writes them to ``WF_DIR/request_facts.json`` together with
``WF_DIR/dataset_spec.json``, so that ``python -m serving.export`` needs the workflow directory
alone: not the processed splits, not the raw input, not the machine that produced them.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence

from preprocessing import columns as C
from common.atomic import atomic_write_text

FACTS_FILENAME = "request_facts.json"
FORMAT = "extcvr.request_facts"


def training_nulls(files: Sequence[str], spec: C.DatasetSpec) -> List[str]:
    """Continuous columns of ``spec`` with missing values in the Parquet ``files`` (from the
    row-group statistics; a column without statistics counts as nullable)."""
    import pyarrow.parquet as pq
    nulls = set()
    for f in files:
        meta = pq.ParquetFile(f).metadata
        names = meta.schema.names
        for rg in range(meta.num_row_groups):
            for c in spec.continuous:
                if c in names:
                    st = meta.row_group(rg).column(names.index(c)).statistics
                    if st is None or st.null_count is None or st.null_count > 0:
                        nulls.add(c)
    return [c for c in spec.continuous if c in nulls]


def max_list_lengths(split_dir: str, columns: Sequence[str]) -> Dict[str, int]:
    """The longest list of each list column in a processed split directory."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from preprocessing.splits import split_parts
    out = {c: 0 for c in columns}
    if not columns:
        return out
    for part in split_parts(split_dir):
        table = pq.read_table(part, columns=list(columns))
        for c in columns:
            longest = pc.max(pc.list_value_length(table.column(c))).as_py()
            out[c] = max(out[c], int(longest or 0))
    return out


def write_request_facts(workflow_dir: str, spec: C.DatasetSpec, train_files: Sequence[str],
                        train_split_dir: str) -> Dict:
    """Write ``dataset_spec.json`` and ``request_facts.json`` into ``workflow_dir``; returns the
    facts."""
    facts = {"format": FORMAT, "format_version": 1,
             "nullable": training_nulls(train_files, spec),
             "max_list": max_list_lengths(train_split_dir, spec.multihot)}
    spec.save(workflow_dir)
    atomic_write_text(os.path.join(workflow_dir, FACTS_FILENAME), json.dumps(facts, indent=2))
    return facts


def load_request_facts(workflow_dir: str) -> Dict:
    """The facts written by :func:`write_request_facts`.

    Raises:
        FileNotFoundError: the workflow was saved without them (by an older
            ``preprocessing.run``); the message says how to go on.
    """
    path = os.path.join(workflow_dir, FACTS_FILENAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: not found. The workflow was saved by an older `python -m preprocessing.run`"
            "; rerun it, or give `serving.export` --nullable and --max-list explicitly")
    with open(path) as fh:
        facts = json.load(fh)
    if facts.get("format") != FORMAT:
        raise ValueError(f"{path}: not a request-facts file (format {facts.get('format')!r})")
    return facts
