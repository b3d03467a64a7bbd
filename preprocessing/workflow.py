"""The NVTabular workflow graph, built from a dataset spec (statistics here, I/O in ``run.py``).

Per role of ``DatasetSpec``:
- categorical -> ``Categorify``. Columns in ``WorkflowConfig.tail_hashed`` (huge-cardinality ids)
  keep values seen at least ``freq_threshold`` times in training and hash the long tail into
  ``tail_buckets`` buckets; the others get the full vocabulary. Encoding (NVTabular 23.08):
  0 = padding, 1 = null, then the out-of-vocabulary / hash buckets, then the vocabulary, so a
  value never seen in training maps to an OOV bucket, never to an error.
- multi-hot -> ``Categorify`` on the list column (ragged list<int64> out).
- continuous -> ``FillMissing`` -> ``LogOp`` (the heavy-tailed, non-negative ones) -> ``Normalize``.
- targets -> tagged ``TARGET`` and ``BINARY_CLASSIFICATION``.
- ground truth -> passed through, tagged ``ground_truth`` and nothing else, so that no
  tag-based feature selection (CATEGORICAL / CONTINUOUS) can ever pick it up.
- media-private features (``media_*``) carry the extra tag ``media_private``; ``user_id`` and
  ``item_id`` carry ``USER_ID`` / ``ITEM_ID``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple

import yaml

from preprocessing import columns as C
from preprocessing import merlin_patches
from common.params import check_param

SPLIT_TAG = "time_split"


@dataclass(frozen=True)
class WorkflowConfig:
    """Options of the preprocessing workflow.

    Args:
        tail_hashed: categorical columns whose rare values are hashed into buckets.
        freq_threshold: minimum training count for a value of a ``tail_hashed`` column to get its
            own id.
        tail_buckets: hash buckets for the rare values of a ``tail_hashed`` column.
        valid_days: the last-but-``test_days`` days used for validation.
        test_days: the last days used for testing.
        part_size: dask partition size of the input (e.g. "256MB").
    """

    tail_hashed: Tuple[str, ...] = (C.USER_ID, C.ITEM_ID)
    freq_threshold: int = 2
    tail_buckets: int = 1000
    valid_days: int = 1
    test_days: int = 1
    part_size: str = "256MB"

    def __post_init__(self):
        object.__setattr__(self, "tail_hashed", tuple(self.tail_hashed))
        check_param(self.freq_threshold >= 1, "freq_threshold", ">= 1", self.freq_threshold)
        check_param(self.tail_buckets >= 1, "tail_buckets", ">= 1", self.tail_buckets)
        check_param(self.valid_days >= 1, "valid_days", ">= 1", self.valid_days)
        check_param(self.test_days >= 1, "test_days", ">= 1", self.test_days)

    def to_dict(self) -> dict:
        """Plain-data form, written next to the output."""
        return asdict(self)


def load_workflow_config(path: Optional[str]) -> WorkflowConfig:
    """Read a YAML file of ``WorkflowConfig`` fields; ``None`` gives the defaults."""
    if path is None:
        return WorkflowConfig()
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    unknown = sorted(set(raw) - set(WorkflowConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known keys are "
                         f"{sorted(WorkflowConfig.__dataclass_fields__)}")
    return WorkflowConfig(**raw)


def build_workflow(spec: C.DatasetSpec, config: WorkflowConfig, categories_path: str):
    """The (unfitted) NVTabular workflow for ``spec``.

    Args:
        spec: column roles of the input.
        config: workflow options.
        categories_path: where Categorify writes its vocabularies while fitting
            (``Workflow.save`` copies them next to the saved workflow).
    """
    merlin_patches.apply()
    import nvtabular as nvt
    from merlin.schema import Tags
    from nvtabular import ops

    def extra_tags(cols: List[str]) -> List:
        tags: List = []
        if cols[0].startswith(C.MEDIA_PREFIX):
            tags.append(C.MEDIA_PRIVATE_TAG)
        if cols == [C.USER_ID]:
            tags += [Tags.USER_ID, Tags.USER]
        if cols == [C.ITEM_ID]:
            tags += [Tags.ITEM_ID, Tags.ITEM]
        return tags

    def groups(cols, key):
        """Columns grouped by (media-private, id tag, key): one op per group is far cheaper
        on the pandas path than one op per column."""
        out: dict = {}
        for col in cols:
            special = col if col in (C.USER_ID, C.ITEM_ID) else ""
            out.setdefault((col.startswith(C.MEDIA_PREFIX), special, key(col)), []).append(col)
        return list(out.items())

    def tagged(node, cols):
        tags = extra_tags(cols)
        return node >> ops.AddTags(tags) if tags else node

    branches = []
    for (_, _, hashed), cols in groups(spec.categorical, lambda c: c in config.tail_hashed):
        if hashed:
            op = ops.Categorify(freq_threshold=config.freq_threshold,
                                num_buckets=config.tail_buckets, out_path=categories_path)
        else:
            op = ops.Categorify(out_path=categories_path)
        branches.append(tagged(cols >> op, cols))
    for col in spec.multihot:  # NVTabular encodes one list column per Categorify
        branches.append(tagged([col] >> ops.Categorify(out_path=categories_path), [col]))
    for (_, _, logged), cols in groups(spec.continuous, lambda c: c in spec.log_continuous):
        node = cols >> ops.FillMissing()
        if logged:
            node = node >> ops.LogOp()
        branches.append(tagged(node >> ops.Normalize(), cols))
    branches.append(list(spec.targets) >> ops.AddTags([Tags.TARGET, Tags.BINARY_CLASSIFICATION]))
    if spec.ground_truth:
        branches.append(list(spec.ground_truth) >> ops.AddTags([C.GROUND_TRUTH_TAG]))
    branches.append([spec.split] >> ops.AddTags([SPLIT_TAG]))
    output = branches[0]
    for b in branches[1:]:
        output = output + b
    return nvt.Workflow(output)


def feature_columns(schema) -> List[str]:
    """Model-input columns of a processed Merlin schema: tagged CATEGORICAL or CONTINUOUS and
    never tagged ground truth, target, split or pseudo-label."""
    from merlin.schema import Tags
    out = []
    for col in schema:
        tags = {str(getattr(t, "value", t)) for t in col.tags}
        if tags & {C.GROUND_TRUTH_TAG, Tags.TARGET.value, SPLIT_TAG, C.PSEUDO_LABEL_TAG}:
            continue
        if tags & {Tags.CATEGORICAL.value, Tags.CONTINUOUS.value}:
            out.append(col.name)
    return out
