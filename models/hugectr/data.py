"""The HugeCTR view of a processed directory, and the HugeCTR-ready copy of its splits.

``preprocessing.run`` writes, per split, Parquet parts with merlin's HugeCTR side files:
``_file_list.txt`` (a count line, then one part path per line) and ``_metadata.json``
(``file_stats``, and ``cats`` / ``conts`` / ``labels`` as ``{"col_name", "index"}``).
:func:`describe` reads them, checks them against the parts and against the saved workflow's
output schema, and derives the slot sizes (:class:`HugeCTRData`).

Why a copy (:func:`export_data`) instead of training on those files directly: HugeCTR 23.08's
Parquet reader takes each ``index`` as the column position in the file and copies the label and
dense columns as float32 (``dataframe_container.cu``, ``dump_table_data_to``: a column of another
type is only logged, then read as float32 memory), and its documentation says so ("the label and
dense feature columns should use the float format", "nested column types are not currently
supported"; ``docs/source/api/python_interface.md``, Parquet). Our splits hold the continuous
columns as float64 and the labels as int32, so HugeCTR would train on reinterpreted bytes. The
copy holds, per part and in the same row order:

- the slot columns: every categorical column of ``_metadata.json`` that is not a list, as int64
  Categorify codes (0-based per column; HugeCTR adds the per-slot offsets itself, from
  ``slot_size_array``);
- the dense columns as float32;
- two float32 labels, ``click`` and ``ctcvr = click * purchase`` (ESMM's two entire-space tasks),

with its own ``_file_list.txt`` (paths relative to the output directory, so the directory can be
mounted anywhere) and ``_metadata.json`` whose indices are the real column positions.

Multi-hot (list) columns are left out of the HugeCTR model: the 23.08 documentation lists nested
columns as unsupported by the Parquet reader. They stay in the serving signature (the predict
step still sends them) and the ONNX adapter ignores them (``models/hugectr/README.md``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing import columns as C

SPLITS = ("train", "valid", "test")
FILE_LIST = "_file_list.txt"
METADATA = "_metadata.json"
#: The HugeCTR label tensors, in the order HugeCTR slices its combined label: by name (the
#: ``Input`` keeps labels in a ``std::map``; ``Model::add(Input&)`` in ``model.cpp``), which
#: must equal the column order of ``_metadata.json``. ``click`` < ``ctcvr``, so it does.
LABELS = ("click", "ctcvr")
#: Where each HugeCTR label comes from.
LABEL_SOURCES = {"click": f"{C.CLICK}", "ctcvr": f"{C.CLICK} * {C.PURCHASE}"}
#: Rows per Parquet row group of the copy (HugeCTR's reader loads one row group at a time).
ROW_GROUP_ROWS = 262_144
EXPORT_FORMAT = "extcvr.hugectr_export"
DESCRIPTION_FILE = "hugectr_data.json"  # written by models.hugectr.cli, read here


@dataclass(frozen=True)
class HugeCTRData:
    """A processed directory as HugeCTR reads it.

    Args:
        proc_dir: the ``preprocessing.run`` output directory.
        workflow_dir: its saved workflow (``PROC_DIR/workflow``).
        file_lists: split -> path of the split's ``_file_list.txt``.
        parts: split -> the part paths named by the file list, in its order.
        rows: split -> rows (``_metadata.json`` ``file_stats``, checked against the parts).
        categorical: the ``cats`` of ``_metadata.json`` in index order (list columns included).
        dense: the ``conts`` in index order.
        labels: the ``labels`` in index order.
        multihot: the categorical columns that are lists (left out of the HugeCTR model).
        slot_sizes: categorical column -> cardinality (workflow schema ``int_domain.max + 1``).
        features: the model inputs in workflow-schema order as ``(name, kind)``, kind one of
            ``categorical``, ``multihot``, ``continuous``: what the serving predict step feeds.
    """

    proc_dir: str
    workflow_dir: str
    file_lists: Dict[str, str]
    parts: Dict[str, Tuple[str, ...]]
    rows: Dict[str, int]
    categorical: Tuple[str, ...]
    dense: Tuple[str, ...]
    labels: Tuple[str, ...]
    multihot: Tuple[str, ...]
    slot_sizes: Dict[str, int]
    features: Tuple[Tuple[str, str], ...] = field(default=())

    @property
    def slots(self) -> Tuple[str, ...]:
        """The HugeCTR slots: the non-list categorical columns, in ``_metadata.json`` order."""
        return tuple(c for c in self.categorical if c not in self.multihot)

    @property
    def slot_size_array(self) -> List[int]:
        """``slot_size_array`` of ``DataReaderParams`` / ``SparseEmbedding``, slot order."""
        return [int(self.slot_sizes[c]) for c in self.slots]

    @property
    def slot_offsets(self) -> List[int]:
        """The offset HugeCTR adds to each slot's codes: the sum of the earlier slot sizes."""
        return [int(v) for v in np.concatenate([[0], np.cumsum(self.slot_size_array)[:-1]])]

    def signature(self) -> Dict:
        """The predict step's input signature for these features (the shape of a TF run's
        ``signature.json``: ids and list values / offsets int64, continuous float32, all 1-D)."""
        inputs: Dict[str, Dict] = {}
        for name, kind in self.features:
            if kind == "multihot":
                for suffix in ("__values", "__offsets"):
                    inputs[name + suffix] = {"dtype": "int64", "shape": [None]}
            else:
                inputs[name] = {"dtype": "float32" if kind == "continuous" else "int64",
                                "shape": [None]}
        return {"inputs": inputs,
                "outputs": {k: {"dtype": "float32", "shape": [None]}
                            for k in ("pctr", "pcvr", "pctcvr")}}


def read_file_list(path: str) -> List[str]:
    """The part paths of a HugeCTR ``_file_list.txt`` (first line: their count).

    Raises:
        FileNotFoundError: no such file, or a listed part is missing (both named).
        ValueError: the count line is not an integer or disagrees with the lines.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: no HugeCTR file list. `python -m preprocessing.run` writes one per split "
            "(merlin's to_parquet with cats/conts/labels); rerun it on this data")
    with open(path) as fh:
        lines = [ln.strip() for ln in fh.read().splitlines()]
    if not lines or not lines[0].isdigit():
        raise ValueError(f"{path}: the first line must be the number of files, got "
                         f"{lines[0] if lines else '(empty file)'!r}")
    parts = [ln for ln in lines[1:] if ln]
    if int(lines[0]) != len(parts):
        raise ValueError(f"{path}: says {int(lines[0])} files but lists {len(parts)}")
    if not parts:
        raise ValueError(f"{path}: lists no Parquet parts")
    base = os.path.dirname(os.path.abspath(path))
    out = []
    for part in parts:
        full = part if os.path.isabs(part) else os.path.join(base, part)
        if not os.path.isfile(full):
            beside = os.path.join(base, os.path.basename(part))
            hint = (f"; a part of that name is beside the list ({beside}): the directory was "
                    "moved after preprocessing, rerun `python -m preprocessing.run`"
                    if os.path.isfile(beside) else "")
            raise FileNotFoundError(f"{path}: names {part}, which does not exist{hint}")
        out.append(full)
    return out


def read_metadata(path: str) -> Dict:
    """A HugeCTR ``_metadata.json``, checked for the keys HugeCTR reads.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or a missing / malformed ``file_stats``, ``cats``, ``conts`` or
            ``labels`` entry, or a column index used twice.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no HugeCTR metadata (written by "
                                "`python -m preprocessing.run` beside the parts)")
    with open(path) as fh:
        try:
            meta = json.load(fh)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    for key in ("file_stats", "cats", "conts", "labels"):
        if not isinstance(meta.get(key), list):
            raise ValueError(f"{path}: '{key}' must be a list")
    for stat in meta["file_stats"]:
        if not isinstance(stat, dict) or not {"file_name", "num_rows"} <= set(stat):
            raise ValueError(f"{path}: each file_stats entry needs file_name and num_rows; "
                             f"got {stat!r}")
    seen: Dict[int, str] = {}
    for role in ("cats", "conts", "labels"):
        for col in meta[role]:
            if (not isinstance(col, dict) or not isinstance(col.get("col_name"), str)
                    or not isinstance(col.get("index"), int)):
                raise ValueError(f"{path}: each '{role}' entry needs col_name (str) and index "
                                 f"(int); got {col!r}")
            if col["index"] in seen:
                raise ValueError(f"{path}: index {col['index']} is used by both "
                                 f"'{seen[col['index']]}' and '{col['col_name']}'")
            seen[col["index"]] = col["col_name"]
    return meta


def metadata_columns(meta: Mapping, role: str) -> List[str]:
    """The column names of one role (``cats``, ``conts``, ``labels``) in index order: the order
    in which HugeCTR maps them (it walks the indices as a sorted set)."""
    return [c["col_name"] for c in sorted(meta[role], key=lambda c: c["index"])]


def load_workflow_schema(proc_dir: str):
    """The output schema of the saved workflow ``PROC_DIR/workflow`` (NVTabular
    ``Workflow.load``; a cloudpickle file: load only what this project wrote)."""
    workflow_dir = os.path.join(proc_dir, "workflow")
    if not os.path.isfile(os.path.join(workflow_dir, "workflow.pkl")):
        raise FileNotFoundError(f"{workflow_dir}: no saved workflow (workflow.pkl); rerun "
                                "`python -m preprocessing.run`")
    from preprocessing import merlin_patches
    merlin_patches.apply()
    import nvtabular as nvt
    return nvt.Workflow.load(workflow_dir).output_schema


def _tags(col) -> set:
    return {str(getattr(t, "value", t)) for t in col.tags}


def slot_size(col) -> int:
    """A categorical column's cardinality from its schema: ``int_domain.max + 1`` (Categorify
    codes run from 0 to ``max``), checked against the ``embedding_sizes`` property when present.

    Raises:
        ValueError: no ``int_domain``, or the two disagree.
    """
    domain = getattr(col, "int_domain", None)
    if domain is None or domain.max is None:
        raise ValueError(f"column '{col.name}': the workflow schema has no int_domain.max, so "
                         "its cardinality is unknown")
    size = int(domain.max) + 1
    card = (col.properties or {}).get("embedding_sizes", {}).get("cardinality")
    if card is not None and int(card) != size:
        raise ValueError(f"column '{col.name}': int_domain.max + 1 = {size} but "
                         f"embedding_sizes.cardinality = {int(card)}")
    return size


def describe(proc_dir: str, schema=None) -> HugeCTRData:
    """Read and check the HugeCTR side files of ``proc_dir`` against its parts and workflow.

    Args:
        proc_dir: a ``preprocessing.run`` output directory.
        schema: the workflow's output schema (default: :func:`load_workflow_schema`).

    Raises:
        FileNotFoundError: a missing split, file list, listed part, metadata or workflow.
        ValueError: a file list or ``_metadata.json`` that disagrees with the parts, with the
            other splits or with the workflow schema (the message names the file and column).
    """
    proc_dir = os.path.abspath(proc_dir)
    if not os.path.isdir(proc_dir):
        raise FileNotFoundError(f"{proc_dir}: no such processed directory")
    file_lists, parts, rows, metas = {}, {}, {}, {}
    for split in SPLITS:
        split_dir = os.path.join(proc_dir, split)
        if not os.path.isdir(split_dir):
            raise FileNotFoundError(f"{split_dir}: missing split directory")
        file_lists[split] = os.path.join(split_dir, FILE_LIST)
        parts[split] = tuple(read_file_list(file_lists[split]))
        meta_path = os.path.join(split_dir, METADATA)
        metas[split] = meta = read_metadata(meta_path)
        stats = {s["file_name"]: int(s["num_rows"]) for s in meta["file_stats"]}
        names = [os.path.basename(p) for p in parts[split]]
        if sorted(stats) != sorted(names):
            raise ValueError(f"{meta_path}: file_stats names {sorted(stats)} but "
                             f"{file_lists[split]} lists {sorted(names)}")
        for path in parts[split]:
            actual = pq.ParquetFile(path).metadata.num_rows
            if actual != stats[os.path.basename(path)]:
                raise ValueError(f"{meta_path}: file_stats says {os.path.basename(path)} has "
                                 f"{stats[os.path.basename(path)]} rows; it has {actual}")
        rows[split] = sum(stats.values())
    roles = {r: metadata_columns(metas["train"], r) for r in ("cats", "conts", "labels")}
    for split in SPLITS[1:]:
        for role, cols in roles.items():
            other = metadata_columns(metas[split], role)
            if other != cols:
                raise ValueError(f"{os.path.join(proc_dir, split, METADATA)}: '{role}' is "
                                 f"{other} but train's is {cols}")
    if schema is None:
        schema = load_workflow_schema(proc_dir)
    workflow_dir = os.path.join(proc_dir, "workflow")
    train_meta = os.path.join(proc_dir, "train", METADATA)
    want = {"cats": "categorical", "conts": "continuous", "labels": "target"}
    for role, cols in roles.items():
        for col in cols:
            if col not in schema.column_names:
                raise ValueError(f"{train_meta}: column '{col}' ({role}) is not in the "
                                 f"workflow's output schema ({workflow_dir})")
            tags = _tags(schema[col])
            if want[role] not in tags or C.GROUND_TRUTH_TAG in tags:
                raise ValueError(f"{train_meta}: column '{col}' is listed under '{role}' but "
                                 f"the workflow tags it {sorted(tags)} ({workflow_dir})")
    from preprocessing.workflow import feature_columns
    features = feature_columns(schema)
    absent = [c for c in features if c not in roles["cats"] + roles["conts"]]
    if absent:
        raise ValueError(f"{train_meta}: the workflow's model features {absent} are not listed "
                         f"under cats / conts ({workflow_dir})")
    for label in (C.CLICK, C.PURCHASE):
        if label not in roles["labels"]:
            raise ValueError(f"{train_meta}: labels {roles['labels']} lack '{label}', which the "
                             "ESMM labels need (click, click * purchase)")
    multihot = tuple(c for c in roles["cats"] if schema[c].is_list)
    sizes = {}
    for col in roles["cats"]:
        try:
            sizes[col] = slot_size(schema[col])
        except ValueError as e:
            raise ValueError(f"{workflow_dir}: {e}") from None
    for split in SPLITS:
        _check_positions(metas[split], parts[split], os.path.join(proc_dir, split, METADATA),
                         set(multihot))
    kinds = [(c, "multihot" if c in multihot else
              "categorical" if c in roles["cats"] else "continuous") for c in features]
    return HugeCTRData(proc_dir=proc_dir, workflow_dir=workflow_dir, file_lists=file_lists,
                       parts=parts, rows=rows, categorical=tuple(roles["cats"]),
                       dense=tuple(roles["conts"]), labels=tuple(roles["labels"]),
                       multihot=multihot, slot_sizes=sizes, features=tuple(kinds))


def _check_positions(meta: Mapping, parts: Sequence[str], meta_path: str, lists: set) -> None:
    """HugeCTR reads column ``index`` of each part: check the name there and its type."""
    for path in parts:
        arrow = pq.read_schema(path)
        for role in ("cats", "conts", "labels"):
            for col in meta[role]:
                i, name = col["index"], col["col_name"]
                if i >= len(arrow.names) or arrow.names[i] != name:
                    found = arrow.names[i] if i < len(arrow.names) else "nothing"
                    raise ValueError(f"{meta_path}: '{name}' has index {i}, but column {i} of "
                                     f"{os.path.basename(path)} is {found}")
                t = arrow.field(i).type
                ok = (pa.types.is_list(t) and pa.types.is_integer(t.value_type) if name in lists
                      else pa.types.is_integer(t) if role == "cats"
                      else pa.types.is_floating(t) if role == "conts"
                      else pa.types.is_integer(t) or pa.types.is_floating(t))
                if not ok:
                    raise ValueError(f"{meta_path}: column '{name}' ({role}) of "
                                     f"{os.path.basename(path)} has type {t}")


def export_data(data: HugeCTRData, out_dir: str, row_group_rows: int = ROW_GROUP_ROWS) -> Dict:
    """Write the HugeCTR-ready copy of every split under ``out_dir/data/<split>/``.

    Per part of the file list (same file names, same row order): the slot columns as int64,
    the dense columns as float32 and the labels ``click`` and ``ctcvr = click * purchase`` as
    float32; then the split's ``_metadata.json`` (indices = column positions) and
    ``_file_list.txt`` (paths relative to ``out_dir``). Returns the description written to
    ``hugectr_data.json`` (without the model settings).

    Raises:
        ValueError: a null value in a copied column (HugeCTR's reader allows none), or a row
            with purchase but no click (ctcvr would exceed click).
    """
    columns = list(data.slots) + list(data.dense)
    source_labels = [C.CLICK, C.PURCHASE]
    splits = {}
    for split in SPLITS:
        rel_dir = os.path.join("data", split)
        os.makedirs(os.path.join(out_dir, rel_dir), exist_ok=True)
        stats, rel_parts, max_codes = [], [], {c: -1 for c in data.slots}
        for src in data.parts[split]:
            table = pq.read_table(src, columns=columns + source_labels)
            for name in table.column_names:
                if table.column(name).null_count:
                    raise ValueError(f"{src}: column '{name}' holds "
                                     f"{table.column(name).null_count} nulls; HugeCTR's Parquet "
                                     "reader allows none")
            click = table.column(C.CLICK).to_numpy().astype(np.float32)
            purchase = table.column(C.PURCHASE).to_numpy().astype(np.float32)
            if np.any(purchase > click):
                raise ValueError(f"{src}: {int(np.sum(purchase > click))} rows have a purchase "
                                 "without a click; ESMM's ctcvr label needs the funnel order")
            arrays, names = [], []
            for c in data.slots:
                codes = table.column(c).to_numpy().astype(np.int64)
                if len(codes):
                    max_codes[c] = max(max_codes[c], int(codes.max()))
                arrays.append(pa.array(codes, pa.int64()))
                names.append(c)
            for c in data.dense:
                arrays.append(pa.array(table.column(c).to_numpy().astype(np.float32)))
                names.append(c)
            arrays += [pa.array(click), pa.array(click * purchase)]
            names += list(LABELS)
            name = os.path.basename(src)
            pq.write_table(pa.Table.from_arrays(arrays, names=names),
                           os.path.join(out_dir, rel_dir, name),
                           row_group_size=max(1, row_group_rows))
            stats.append({"file_name": name, "num_rows": len(click)})
            rel_parts.append(os.path.join(rel_dir, name))
        for c, m in max_codes.items():
            if m >= data.slot_sizes[c]:
                raise ValueError(f"{split}: column '{c}' holds code {m} >= its slot size "
                                 f"{data.slot_sizes[c]} from the workflow; the split was not "
                                 "written by this workflow")
        n_slots, n_dense = len(data.slots), len(data.dense)
        meta = {"file_stats": stats,
                "cats": [{"col_name": c, "index": i} for i, c in enumerate(data.slots)],
                "conts": [{"col_name": c, "index": n_slots + i}
                          for i, c in enumerate(data.dense)],
                "labels": [{"col_name": c, "index": n_slots + n_dense + i}
                           for i, c in enumerate(LABELS)]}
        with open(os.path.join(out_dir, rel_dir, METADATA), "w") as fh:
            json.dump(meta, fh, indent=1)
        with open(os.path.join(out_dir, rel_dir, FILE_LIST), "w") as fh:
            fh.write("\n".join([str(len(rel_parts)), *rel_parts]) + "\n")
        splits[split] = {"rows": sum(s["num_rows"] for s in stats),
                         "file_list": os.path.join(rel_dir, FILE_LIST), "parts": rel_parts}
    return {
        "format": EXPORT_FORMAT,
        "format_version": 1,
        "source": data.proc_dir,
        "splits": splits,
        "slots": [{"name": c, "size": s, "offset": o} for c, s, o in
                  zip(data.slots, data.slot_size_array, data.slot_offsets)],
        "slot_size_array": data.slot_size_array,
        "dense": list(data.dense),
        "labels": {k: LABEL_SOURCES[k] for k in LABELS},
        "multihot_left_out": list(data.multihot),
        "signature": data.signature(),
    }


def load_export(out_dir: str) -> Dict:
    """``hugectr_data.json`` of a directory written by ``python -m models.hugectr``.

    Raises:
        FileNotFoundError / ValueError: absent, or not written by this package.
    """
    path = os.path.join(out_dir, DESCRIPTION_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found; write the directory with "
                                "`python -m models.hugectr --data PROC_DIR --out DIR`")
    with open(path) as fh:
        desc = json.load(fh)
    if desc.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: not a models.hugectr description (format "
                         f"{desc.get('format')!r})")
    return desc


def read_export_rows(out_dir: str, split: str, rows: int,
                     desc: Optional[Dict] = None) -> Dict[str, np.ndarray]:
    """The first ``rows`` rows of an exported split (file-list order) as column arrays."""
    desc = desc or load_export(out_dir)
    out: Dict[str, List[np.ndarray]] = {}
    left = rows
    for rel in desc["splits"][split]["parts"]:
        if left <= 0:
            break
        table = pq.read_table(os.path.join(out_dir, rel)).slice(0, left)
        for name in table.column_names:
            out.setdefault(name, []).append(table.column(name).to_numpy())
        left -= table.num_rows
    return {k: np.concatenate(v) for k, v in out.items()}
