"""The settings of a Triton repository export: one frozen, validated object shared by
``serving.export`` (the ``extcvr`` ensemble) and ``serving.federated_export`` (the media and
the advertiser repositories).

Everything that says *how* a repository is written lives here: target, runtime, instances,
batching, request columns, the ONNX probe. *What* it is written from (the run, the workflow, the
calibrator) and *where* (the output directory) stay the export functions' own arguments::

    from serving.export import export
    from serving.settings import ExportSettings

    export(run_dir, workflow_dir, "triton_repo/cpu", calibrator=cal_dir,
           settings=ExportSettings(max_batch_size=256, instances={"predict": 2}))

The command lines build it once from their options (:meth:`ExportSettings.from_args`; the
options both share: :func:`add_repository_options`).
"""

from __future__ import annotations

import argparse
import dataclasses
import numbers
from typing import Dict, Mapping, Optional, Sequence, Union

from common.params import check_param
from preprocessing.device import KIND_CPU, KIND_GPU

TARGETS = ("cpu", "ngc")
RUNTIMES = ("onnx", "tf")
EXECUTORS = ("lean", "merlin")
STEPS = ("preprocess", "predict", "calibrate")
INSTANCE_KINDS = (KIND_CPU, KIND_GPU)
#: Raw rows of the batch that checks an ONNX model against TensorFlow.
PROBE_ROWS = 2000


def parse_instances(text: str) -> Dict[str, int]:
    """``"preprocess=2,predict=1"`` -> counts per step (unnamed steps get 1)."""
    out = {s: 1 for s in STEPS}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, n = part.partition("=")
        if name not in STEPS or not n.isdigit() or int(n) < 1:
            raise ValueError(f"--instances: expected STEP=N with STEP in {STEPS} and N >= 1; "
                             f"got '{part}'")
        out[name] = int(n)
    return out


def _is_int(value, low: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """How a Triton repository is written (every field has the command line's default).

    Attributes:
        target: ``cpu`` (Python-backend steps; the CPU tritonserver or any GPU build) or
            ``ngc`` (``predict`` on Triton's TensorFlow backend, for the NGC container).
            ``serving.export`` only: the federated repositories are ``cpu``.
        runtime: what runs the networks in the model steps of the ``cpu`` target: ``onnx``
            (converted and checked against TensorFlow on the probe batch) or ``tf``.
        instance_kind: the model steps' Triton instances: ``auto`` (``None`` too; see
            ``serving.export.resolve_instance_kind``), ``KIND_CPU`` or ``KIND_GPU``.
        instances: instance count per step (``preprocess``, ``predict``, ``calibrate``);
            a step left out gets 1. Stored complete, in that order.
        max_batch_size: every model's and ensemble's ``max_batch_size``.
        queue_delay_us: the dynamic batcher's ``max_queue_delay_microseconds``.
        nullable: the continuous request columns that may be NaN (missing): ``auto`` (those
            with missing values in the training input, ``request_facts.json``), ``none``, or
            the columns (a comma-separated string or a sequence).
        max_list: the width of a multi-hot request input; ``None``: the longest training list.
        executor: what runs the workflow in the preprocess steps: ``lean`` or ``merlin``.
        tf_threads: intra/inter-op threads per model instance (0 = the runtime's).
        probe: a raw Parquet file whose rows check the ONNX models (``None``: rows synthesised
            from the workflow's fitted state).
        probe_rows: how many raw rows the probe batch has.
        spec_dir: where ``dataset_spec.json`` is, when not beside the workflow.

    Raises:
        ValueError: a value outside its rule (``common.params.check_param``'s message).
    """

    target: str = "cpu"
    runtime: str = "onnx"
    instance_kind: Optional[str] = "auto"
    instances: Mapping[str, int] = dataclasses.field(default_factory=dict)
    max_batch_size: int = 1024
    queue_delay_us: int = 100
    nullable: Union[str, Sequence[str], None] = "auto"
    max_list: Optional[int] = None
    executor: str = "lean"
    tf_threads: int = 1
    probe: Optional[str] = None
    probe_rows: int = PROBE_ROWS
    spec_dir: Optional[str] = None

    def __post_init__(self) -> None:
        check_param(self.target in TARGETS, "target", f"one of {TARGETS}", self.target)
        check_param(self.runtime in RUNTIMES, "runtime", f"one of {RUNTIMES}", self.runtime)
        check_param(self.instance_kind in (None, "auto", *INSTANCE_KINDS), "instance_kind",
                    f"'auto' or one of {INSTANCE_KINDS}", self.instance_kind)
        self._check_instances()
        for name, low in (("max_batch_size", 1), ("queue_delay_us", 0), ("tf_threads", 0),
                          ("probe_rows", 1)):
            value = getattr(self, name)
            check_param(_is_int(value, low), name, f"an int >= {low}", value)
            object.__setattr__(self, name, int(value))
        check_param(self.max_list is None or _is_int(self.max_list, 1), "max_list",
                    "None or an int >= 1", self.max_list)
        if self.max_list is not None:
            object.__setattr__(self, "max_list", int(self.max_list))
        self._check_nullable()
        check_param(self.executor in EXECUTORS, "executor", f"one of {EXECUTORS}",
                    self.executor)
        for name in ("probe", "spec_dir"):
            value = getattr(self, name)
            check_param(value is None or (isinstance(value, str) and value), name,
                        "None or a path", value)

    def _check_instances(self) -> None:
        given = {} if self.instances is None else self.instances
        rule = f"a mapping of steps in {STEPS} to counts >= 1"
        check_param(isinstance(given, Mapping) and set(given) <= set(STEPS)
                    and all(_is_int(n, 1) for n in given.values()), "instances", rule, given)
        object.__setattr__(self, "instances", {s: int(given.get(s, 1)) for s in STEPS})

    def _check_nullable(self) -> None:
        value = self.nullable
        ok = value is None or isinstance(value, str) or (
            isinstance(value, (list, tuple)) and all(isinstance(c, str) for c in value))
        check_param(ok, "nullable", "'auto', 'none', or column names (a comma-separated "
                                    "string or a sequence)", value)
        if isinstance(value, list):
            object.__setattr__(self, "nullable", tuple(value))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ExportSettings":
        """The settings of a parsed command line: each option named like a field (``--instances``
        parsed by :func:`parse_instances`); a field without an option keeps its default.

        Raises:
            ValueError: a value outside its rule.
        """
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                 if hasattr(args, f.name)}
        if isinstance(given.get("instances"), str):
            given["instances"] = parse_instances(given["instances"])
        return cls(**given)


def add_repository_options(parser: argparse.ArgumentParser) -> None:
    """The options every repository export shares: batching, instances, nullable columns,
    list width and the preprocessing executor (read back by :meth:`ExportSettings.from_args`)."""
    parser.add_argument("--max-batch-size", type=int, default=1024)
    parser.add_argument("--instances", default="", help="e.g. preprocess=2,predict=1")
    parser.add_argument("--queue-delay-us", type=int, default=100)
    parser.add_argument("--nullable", default="auto")
    parser.add_argument("--max-list", type=int, default=None)
    parser.add_argument("--executor", default="lean", choices=EXECUTORS)
