"""Per-request preprocessing: the fitted NVTabular workflow applied to the features of a request.

A bid request carries the raw feature columns of the dataset spec (categorical ids, multi-hot
lists, continuous values), never labels nor ground truth. ``RequestTransformer`` loads the
*same* saved workflow that produced the training data, removes the label / ground-truth / split
inputs (``Workflow.remove_inputs``, as Merlin Systems' ``TransformWorkflow`` does) and runs it on
one in-memory pandas DataFrame per request. Two executors, same graph, same fitted state:

- ``merlin``: Merlin's per-request ``LocalExecutor`` (no dask), the reference. On this CPU it
  costs ~40-50 ms per call whatever the batch size (pandas overhead of ~26 graph nodes and
  one ``merge`` per Categorify), too slow for a 20 ms p99.
- ``lean`` (default): walks the same graph nodes in the same order and calls each fitted op's
  own ``transform``, except Categorify, whose encoding becomes a hash-table lookup built *from
  the real op* (every vocabulary value encoded once by ``Categorify.transform`` at load). Values
  outside the vocabulary follow Categorify's own rule: the hashed tail bucket
  (``merlin.core.dispatch.hash_series`` % ``num_buckets`` + 2, the patched stable hash of
  ``preprocessing.merlin_patches``) or the single OOV id 2. At load, both executors run on a
  probe batch (vocabulary values, unseen values, missing continuous values, lists of every
  length) and the lean one is refused unless it matches exactly (``verify``).

Security: ``workflow.pkl`` is a cloudpickle file, and loading it runs code. Only load workflows
that this project produced (``python -m preprocessing.run``); never one from an untrusted source.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from preprocessing import columns as C
from preprocessing import merlin_patches

#: Suffix of the lengths tensor that accompanies a padded multi-hot request input.
LENGTHS_SUFFIX = "__lengths"
#: Categorify's reserved ids (NVTabular 23.08): 0 padding, 1 null, 2.. OOV / hash buckets.
PAD_ID, NULL_ID, OOV_OFFSET = 0, 1, 2
EXECUTORS = ("lean", "merlin")


class RequestError(ValueError):
    """A request that cannot be served (bad values, bad shapes); the message goes to the client."""


def load_request_workflow(workflow_dir: str, drop: Sequence[str],
                          keep: Optional[Sequence[str]] = None):
    """The saved NVTabular workflow with the inputs in ``drop`` (labels, ground truth, split)
    removed, and with ``keep`` also every input not in ``keep``: the sub-workflow of one
    party's columns (``Workflow.remove_inputs`` drops the removed inputs' branches, and the
    training workflow never mixes ``media_*`` and other columns in one op,
    ``preprocessing.workflow.build_workflow``). Calls ``merlin_patches.apply()`` first (stable
    hashing of the Categorify tail).

    Raises:
        ValueError: a column of ``keep`` is not an input of the workflow (after ``drop``).
    """
    merlin_patches.apply()
    import nvtabular as nvt
    wf = nvt.Workflow.load(workflow_dir)
    names = wf.input_schema.column_names
    present = [c for c in drop if c in names]
    if keep is not None:
        unknown = [c for c in keep if c not in names or c in present]
        if unknown:
            raise ValueError(f"{workflow_dir}: {unknown} are not request inputs of the "
                             f"workflow (its inputs: {names})")
        present += [c for c in names if c not in set(keep) and c not in present]
    if present:
        wf.remove_inputs(present)
    return wf


def _walk(node, seen, order):
    """Post-order (parents first) list of the graph's nodes."""
    for parent in node.parents_with_dependencies:
        if id(parent) not in seen:
            seen.add(id(parent))
            _walk(parent, seen, order)
    order.append(node)


class _Lookup:
    """Categorify encoding of one column as a hash-table lookup (see the module docstring)."""

    def __init__(self, values: np.ndarray, labels: np.ndarray, buckets: Optional[int]):
        order = np.argsort(values, kind="stable")
        self.values = np.asarray(values)[order]
        self.labels = np.asarray(labels, dtype=np.int64)[order]
        self.buckets = buckets

    def encode(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.values.dtype)
        if not len(self.values):
            pos, found = np.zeros(len(x), np.int64), np.zeros(len(x), bool)
        else:
            pos = np.minimum(np.searchsorted(self.values, x), len(self.values) - 1)
            found = self.values[pos] == x
        out = np.where(found, self.labels[pos] if len(self.values) else 0, OOV_OFFSET)
        unseen = ~found
        if self.buckets and unseen.any():
            from merlin.core import dispatch
            h = dispatch.hash_series(pd.Series(x[unseen])) % self.buckets
            out[unseen] = np.asarray(h, dtype=np.int64) + OOV_OFFSET
        return out.astype(np.int64, copy=False)

    def __call__(self, col):
        if isinstance(col, ListColumn):
            return ListColumn(self.encode(col.values), col.lengths)
        return self.encode(np.asarray(col))


def _categorify_lookups(node, input_dtypes: Mapping[str, np.dtype]) -> Dict[str, _Lookup]:
    """One ``_Lookup`` per column of a Categorify node, built by the real op's transform."""
    from merlin.dag import ColumnSelector
    op = node.op
    if getattr(op, "encode_type", "joint") != "joint" or getattr(op, "single_table", False):
        raise NotImplementedError("lean executor: only joint, per-column Categorify is supported")
    out = {}
    selection = node.input_columns.resolve(node.input_schema)
    for name in selection.names:
        storage = op.storage_name.get(name, name)
        vocab = pd.read_parquet(op.categories[storage])
        col = storage if storage in vocab.columns else vocab.columns[0]
        values = vocab[col].dropna().to_numpy().astype(input_dtypes[name])
        labels = op.transform(ColumnSelector([name]), pd.DataFrame({name: values}))[name]
        buckets = op.num_buckets
        if isinstance(buckets, dict):
            buckets = buckets.get(storage)
        out[name] = _Lookup(values, np.asarray(labels), buckets or None)
    return out


class RequestTransformer:
    """The training workflow as a per-request function: raw request columns -> model inputs.

    Args:
        workflow_dir: the saved workflow (``PROC_DIR/workflow``).
        spec: the dataset spec; its targets, ground truth and split column are removed from the
            workflow's inputs.
        executor: ``"lean"`` (default) or ``"merlin"``; see the module docstring.
        verify: with ``"lean"``, check it against Merlin's executor on a probe batch at load.
        columns: the raw inputs to keep (default: every feature): the sub-workflow of one
            party's columns (``load_request_workflow``), e.g. the media party's ``media_*``.

    Raises:
        RuntimeError: the lean executor disagrees with Merlin's on the probe batch.
    """

    def __init__(self, workflow_dir: str, spec: C.DatasetSpec, executor: str = "lean",
                 verify: bool = True, columns: Optional[Sequence[str]] = None):
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}; got {executor!r}")
        self.spec = spec
        self.executor = executor
        drop = [*spec.targets, *spec.ground_truth, spec.split]
        self.workflow = load_request_workflow(workflow_dir, drop, columns)
        in_schema = self.workflow.input_schema
        self.input_dtypes = {c.name: np.dtype(c.dtype.to_numpy) for c in in_schema}
        self.multihot = [c.name for c in in_schema if c.is_list]
        self.inputs = list(in_schema.column_names)
        self.continuous = [c for c in self.inputs
                           if np.issubdtype(self.input_dtypes[c], np.floating)]
        self.outputs = list(self.workflow.output_schema.column_names)
        self._order: List = []
        _walk(self.workflow.output_node, set(), self._order)
        self._lookups: Dict[int, Dict[str, _Lookup]] = {}
        if executor == "lean":
            from nvtabular.ops import Categorify
            for node in self._order:
                if isinstance(node.op, Categorify):
                    self._lookups[id(node)] = _categorify_lookups(node, self.input_dtypes)
            if verify:
                self.verify()

    # -- execution ------------------------------------------------------------------------------
    def transform(self, cols: Mapping[str, object]) -> Dict[str, object]:
        """Processed model-input columns of raw request columns.

        Args:
            cols: raw column -> 1-D numpy array, or ``ListColumn`` for a multi-hot column.

        Returns:
            processed column -> 1-D numpy array (ids int64, continuous in the workflow's output
            dtype) or ``ListColumn`` (encoded ids), in workflow output order.
        """
        if self.executor == "merlin":
            from merlin.dag.executors import LocalExecutor
            df = LocalExecutor().transform(to_frame(cols), self.workflow.graph)
            return from_frame(df[self.outputs], self.multihot)
        return self._lean(cols)

    def transform_frame(self, df: pd.DataFrame) -> Dict[str, object]:
        """``transform`` of a raw DataFrame (list columns as arrays or lists)."""
        return self.transform(from_frame(df[self.inputs], self.multihot))

    def _plan(self) -> List[Tuple]:
        """Per node, in execution order: (id, parent ids, needed columns, selected columns,
        output columns, kind, function); built once."""
        if getattr(self, "_steps", None) is not None:
            return self._steps
        from merlin.dag.ops.concat_columns import ConcatColumns
        from merlin.dag.ops.selection import SelectionOp
        from nvtabular.ops import AddTags
        passthrough = (SelectionOp, ConcatColumns, AddTags)
        steps = []
        for node in self._order:
            op = node.op
            selected = node.input_columns.resolve(node.input_schema).names
            if op is None or isinstance(op, passthrough):
                kind, fn = "pass", None
            elif id(node) in self._lookups:
                kind, fn = "lookup", self._lookups[id(node)]
            elif _numpy_kernel(op) is not None:
                kind, fn = "kernel", _numpy_kernel(op)
            else:
                kind, fn = "op", node
            steps.append((id(node), [id(p) for p in node.parents_with_dependencies],
                          list(node.input_schema.column_names), selected,
                          list(node.output_schema.column_names), kind, fn))
        self._steps = steps
        return steps

    def _lean(self, raw: Mapping[str, object]) -> Dict[str, object]:
        results: Dict[int, Dict[str, object]] = {}
        for key, parents, needed, selected, outputs, kind, fn in self._plan():
            cols: Dict[str, object] = {}
            for parent in parents:
                cols.update(results[parent])
            for c in needed:
                if c not in cols:
                    cols[c] = raw[c]
            if kind == "pass":
                out = cols
            elif kind == "lookup":
                out = {c: lk(cols[c]) for c, lk in fn.items()}
            elif kind == "kernel" and not any(isinstance(cols[c], ListColumn) for c in selected):
                out = {c: fn(c, cols[c]) for c in selected}
            else:  # any other op: its own transform on a DataFrame
                node = fn if kind == "op" else next(n for n in self._order if id(n) == key)
                frame = to_frame({c: cols[c] for c in needed})
                res = node.op.transform(node.input_columns.resolve(node.input_schema), frame)
                out = from_frame(res[outputs], self.multihot)
            results[key] = {c: out[c] for c in outputs}
        final = results[self._plan()[-1][0]]
        return {c: final[c] for c in self.outputs}

    # -- verification ---------------------------------------------------------------------------
    def probe_frame(self, rows: int = 257, seed: int = 0) -> pd.DataFrame:
        """Raw request rows that exercise every encoding path: vocabulary values, unseen values,
        missing continuous values and lists of lengths 1-5."""
        rng = np.random.default_rng(seed)
        lookups = {c: lk for per_node in self._lookups.values() for c, lk in per_node.items()}
        data: Dict[str, object] = {}
        for c in self.inputs:
            dtype = self.input_dtypes[c]
            if c in lookups:
                known = lookups[c].values
                unseen = known.max() + 1 + rng.integers(0, 10_000, rows)
                pick = known[rng.integers(0, len(known), rows)]
                vals = np.where(rng.random(rows) < 0.7, pick, unseen).astype(dtype)
                if c in self.multihot:
                    lens = rng.integers(1, 6, rows)
                    flat = np.resize(vals, int(lens.sum()))
                    data[c] = pd.Series(np.split(flat, np.cumsum(lens)[:-1]))
                else:
                    data[c] = vals
            elif np.issubdtype(dtype, np.floating):
                v = rng.lognormal(1.0, 1.5, rows).astype(dtype)
                v[rng.random(rows) < 0.1] = np.nan
                data[c] = v
            else:
                data[c] = rng.integers(0, 100, rows).astype(dtype)
        return pd.DataFrame(data)

    def verify(self, df: Optional[pd.DataFrame] = None) -> float:
        """Compare the lean executor with Merlin's ``LocalExecutor`` on ``df`` (default:
        ``probe_frame()``); returns the max abs difference of continuous outputs.

        Raises:
            RuntimeError: an encoded id differs, or a continuous value by more than 1e-6.
        """
        from merlin.dag.executors import LocalExecutor
        df = self.probe_frame() if df is None else df[self.inputs].reset_index(drop=True)
        ref = LocalExecutor().transform(df.copy(), self.workflow.graph)
        ref = from_frame(ref[self.outputs], self.multihot)
        got = self._lean(from_frame(df, self.multihot))
        return compare_processed(ref, got)


class ListColumn:
    """A multi-hot column: flat values and per-row lengths."""

    __slots__ = ("values", "lengths")

    def __init__(self, values: np.ndarray, lengths: np.ndarray):
        self.values = np.asarray(values)
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def offsets(self) -> np.ndarray:
        """Row splits (``B + 1`` entries, starting at 0)."""
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def to_lists(self) -> List[np.ndarray]:
        return np.split(self.values, np.cumsum(self.lengths)[:-1]) if len(self) else []

    @classmethod
    def from_lists(cls, lists) -> "ListColumn":
        lengths = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
        values = (np.concatenate([np.asarray(v) for v in lists]) if len(lists)
                  else np.zeros(0, np.int64))
        return cls(values, lengths)

    @classmethod
    def from_padded(cls, padded: np.ndarray, lengths: np.ndarray) -> "ListColumn":
        """From a ``[B, W]`` array whose row ``i`` holds ``lengths[i]`` leading values."""
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        mask = np.arange(padded.shape[1])[None, :] < lengths[:, None]
        return cls(padded[mask], lengths)

    def to_padded(self, width: Optional[int] = None, pad=0) -> np.ndarray:
        """``[B, W]`` array, ``pad`` after each row's values (W = the longest row by default)."""
        w = max(int(self.lengths.max(initial=1)), 1) if width is None else width
        out = np.full((len(self), w), pad, dtype=self.values.dtype)
        mask = np.arange(w)[None, :] < self.lengths[:, None]
        out[mask] = self.values
        return out


def to_frame(cols: Mapping[str, object]) -> pd.DataFrame:
    """A pandas DataFrame of columns (``ListColumn`` -> a Series of arrays)."""
    return pd.DataFrame({c: pd.Series(v.to_lists(), dtype=object) if isinstance(v, ListColumn)
                         else np.asarray(v) for c, v in cols.items()})


def from_frame(df: pd.DataFrame, multihot: Sequence[str]) -> Dict[str, object]:
    """Columns of a DataFrame (list columns -> ``ListColumn``)."""
    return {c: ListColumn.from_lists(df[c].values) if c in multihot else df[c].to_numpy()
            for c in df.columns}


def compare_processed(ref: Mapping[str, object], got: Mapping[str, object]) -> float:
    """Max abs difference of continuous columns; raises ``RuntimeError`` when an id or list
    differs, or a continuous value by more than 1e-6 (NaN must match NaN)."""
    worst = 0.0
    for c, a in ref.items():
        b = got[c]
        if isinstance(a, ListColumn):
            if not (np.array_equal(a.lengths, b.lengths) and np.array_equal(a.values, b.values)):
                raise RuntimeError(f"processed column '{c}' differs")
        elif np.issubdtype(np.asarray(a).dtype, np.floating):
            a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
            d = float(np.nanmax(np.abs(a64 - b64), initial=0.0))
            if d > 1e-6 or not np.array_equal(np.isnan(a64), np.isnan(b64)):
                raise RuntimeError(f"processed column '{c}' differs (max abs diff {d})")
            worst = max(worst, d)
        elif not np.array_equal(np.asarray(a), np.asarray(b)):
            raise RuntimeError(f"processed column '{c}' differs")
    return worst


def _np_dtype(dtype, default) -> np.dtype:
    """A numpy dtype from a Merlin / numpy dtype (``default`` for None)."""
    if dtype is None:
        return np.dtype(default)
    return np.dtype(getattr(dtype, "to_numpy", dtype))


def _numpy_kernel(op):
    """A numpy version of a fitted scalar op's ``transform`` (the formulas of NVTabular 23.08's
    ``FillMissing``, ``LogOp`` and ``Normalize``), or None for any other op."""
    from nvtabular.ops import FillMissing, LogOp, Normalize
    if isinstance(op, FillMissing) and not op.add_binary_cols:
        def fill(name, x):
            x = np.asarray(x)
            if not np.issubdtype(x.dtype, np.floating):
                return x
            return np.where(np.isnan(x), x.dtype.type(op.fill_val), x)
        return fill
    if isinstance(op, LogOp):
        dtype = _np_dtype(op.output_dtype, np.float32)
        return lambda name, x: np.log(np.asarray(x).astype(dtype) + 1)
    if isinstance(op, Normalize):
        dtype = _np_dtype(op.output_dtype, np.float64)

        def normalize(name, x):
            x = np.asarray(x)
            if op.stds[name] > 0:
                y = (x - op.means[name]) / op.stds[name]
            else:
                y = x - op.means[name]
            return y.astype(dtype)
        return normalize
    return None


# -- wire format ----------------------------------------------------------------------------------
def request_tensors(raw: pd.DataFrame, inputs: Sequence[str], multihot: Sequence[str],
                    input_dtypes: Mapping[str, np.dtype]) -> Dict[str, np.ndarray]:
    """Triton input tensors of raw request rows: a scalar column as ``[B, 1]``, a multi-hot
    column as ``[B, W]`` (padded with 0) plus ``name__lengths`` ``[B, 1]``."""
    out = {}
    for c in inputs:
        if c in multihot:
            lc = ListColumn.from_lists(raw[c].values)
            out[c] = lc.to_padded().astype(input_dtypes[c])
            out[c + LENGTHS_SUFFIX] = lc.lengths.reshape(-1, 1)
        else:
            out[c] = raw[c].to_numpy().astype(input_dtypes[c]).reshape(-1, 1)
    return out


def columns_from_tensors(tensors: Mapping[str, np.ndarray], inputs: Sequence[str],
                         multihot: Sequence[str], nullable: Sequence[str] = (),
                         max_list: int = 0) -> Dict[str, object]:
    """Validate request tensors and turn them into the raw columns of ``transform``.

    Raises:
        RequestError: an empty batch, inputs whose row counts differ, a non-finite continuous
            value (NaN is allowed, as "missing", only in ``nullable`` columns), list lengths
            outside ``[1, W]`` or above ``max_list``.
    """
    cols: Dict[str, object] = {}
    batch = None
    for c in inputs:
        x = np.asarray(tensors[c])
        rows = x.shape[0] if x.ndim else 0
        if rows == 0:
            raise RequestError("empty batch: a request must hold at least one row")
        if batch is None:
            batch = rows
        elif rows != batch:
            raise RequestError(f"input '{c}' has {rows} rows, other inputs have {batch}")
        if c in multihot:
            lengths = np.asarray(tensors[c + LENGTHS_SUFFIX]).reshape(-1)
            if len(lengths) != rows:
                raise RequestError(f"input '{c}{LENGTHS_SUFFIX}' has {len(lengths)} rows, "
                                   f"'{c}' has {rows}")
            x = x.reshape(rows, -1)
            width = x.shape[1]
            if rows and (lengths.min() < 1 or lengths.max() > width):
                raise RequestError(f"input '{c}{LENGTHS_SUFFIX}' must be in [1, {width}] (the "
                                   f"padded width of '{c}'); got values in [{lengths.min()}, "
                                   f"{lengths.max()}]")
            if max_list and rows and lengths.max() > max_list:
                raise RequestError(f"input '{c}' holds a list of {lengths.max()} values; at "
                                   f"most {max_list} are supported")
            cols[c] = ListColumn.from_padded(x, lengths)
        else:
            v = x.reshape(-1)
            if len(v) != rows:
                raise RequestError(f"input '{c}' must hold one value per row; got shape "
                                   f"{list(x.shape)}")
            if np.issubdtype(v.dtype, np.floating):
                bad = np.isinf(v) if c in nullable else ~np.isfinite(v)
                if bad.any():
                    hint = ("NaN (missing) is allowed here, inf is not" if c in nullable else
                            "this feature must be finite (it is not exported as nullable)")
                    raise RequestError(f"input '{c}' holds {int(bad.sum())} non-finite "
                                       f"value(s), first at row {int(np.argmax(bad))}: {hint}")
            cols[c] = v
    if not batch:
        raise RequestError("empty batch: a request must hold at least one row")
    return cols


def signature_inputs(processed: Mapping[str, object], signature: Mapping[str, Mapping]
                     ) -> Dict[str, np.ndarray]:
    """SavedModel ``serving_default`` inputs of processed columns: ``[B]`` each, a multi-hot
    column as ``name__values`` + ``name__offsets`` (row splits)."""
    out: Dict[str, np.ndarray] = {}
    for c, v in processed.items():
        if isinstance(v, ListColumn):
            out[f"{c}__values"] = v.values.astype(np.int64)
            out[f"{c}__offsets"] = v.offsets
        elif c in signature:
            out[c] = np.asarray(v).astype(signature[c]["dtype"]).reshape(-1)
    return out

