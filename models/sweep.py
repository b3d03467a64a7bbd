"""Select one hyperparameter on the validation split, over several seeds.

Usage::

    python -m models.sweep --model esmm --data PROC_DIR --out OUT_DIR
        --param model.ctcvr_weight --values 1 2 3 5 10 [--seeds 3] [--config BASE.yaml]
        [--select ctcvr_auc]

For each value the base config (``--config``, or the defaults) gets ``section.key = value`` and
``models.compare`` trains the model for ``--seeds`` seeds under ``OUT_DIR/<key>=<value>/``
(finished runs are reused, interrupted ones resumed) and evaluates them on the **validation**
split. The value with the best validation mean of ``--select`` is chosen; the test metrics that
each run also records play no part in the choice, so the chosen value's test numbers stay an
honest estimate. ``OUT_DIR`` gets
``sweep.json``, ``sweep.md`` and ``sweep.png`` (the metric's mean ± std against the value).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

import yaml

from models import metrics as M
from models.config import MODEL_NAMES, ModelConfig, TrainConfig, load_configs
from preprocessing.atomic import atomic_output_dir, atomic_write_text
from preprocessing.params import check_param
from preprocessing.report import markdown_table, print_table

SECTIONS = {"model": ModelConfig, "train": TrainConfig}


def higher_is_better(metric: str) -> bool:
    """Direction of a selection metric: AUCs up; log loss, RCE and ECE down."""
    if "auc" in metric:
        return True
    if any(part in metric for part in ("logloss", "rce", "ece")):
        return False
    raise ValueError(f"--select {metric!r}: no known direction; use an AUC, log-loss, "
                     f"RCE or ECE metric of models.evaluate")


@dataclass(frozen=True)
class SweepSpec:
    """One hyperparameter sweep.

    Args:
        model: a name of ``models.baselines.MODELS``.
        param: ``section.key``, a field of ``ModelConfig`` (``model.``) or ``TrainConfig``
            (``train.``).
        values: the values to try (at least two, distinct).
        seeds: seeds per value.
        select: the validation metric that picks the value (``models.evaluate`` keys).
    """

    model: str
    param: str
    values: Tuple[Any, ...]
    seeds: int = 3
    select: str = "ctcvr_auc"

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(self.values))
        check_param(self.model in MODEL_NAMES, "model", f"one of {', '.join(MODEL_NAMES)}",
                    self.model)
        section, _, key = self.param.partition(".")
        known = {f.name for f in fields(SECTIONS[section])} if section in SECTIONS else set()
        check_param(key in known, "param", "section.key with a field of ModelConfig ('model.') "
                    "or TrainConfig ('train.')", self.param)
        check_param(len(self.values) >= 2 and len(set(map(str, self.values))) == len(self.values),
                    "values", "at least two distinct values", self.values)
        check_param(self.seeds >= 1, "seeds", ">= 1", self.seeds)
        higher_is_better(self.select)

    @property
    def section(self) -> str:
        """``model`` or ``train``."""
        return self.param.partition(".")[0]

    @property
    def key(self) -> str:
        """The config field being swept."""
        return self.param.partition(".")[2]

    def value_dir(self, out: str, value: Any) -> str:
        """Where the runs and the validation report of one value go."""
        return os.path.join(out, f"{self.key}={value}")


def config_with(base: Optional[str], section: str, key: str, value: Any) -> Dict:
    """The raw config of ``base`` (a YAML path, or the defaults when ``None``) with
    ``section.key`` set to ``value``."""
    raw = {}
    if base is not None:
        with open(base) as fh:
            raw = yaml.safe_load(fh) or {}
    raw = {s: dict(raw.get(s) or {}) for s in ("model", "train")}
    raw[section][key] = value
    return raw


def write_value_configs(spec: SweepSpec, base: Optional[str], out: str) -> List[str]:
    """Write and validate ``OUT/<key>=<value>/config.yaml`` for every value (all before any
    training, so that a bad value fails in seconds)."""
    paths = []
    for value in spec.values:
        path = os.path.join(spec.value_dir(out, value), "config.yaml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, yaml.safe_dump(config_with(base, spec.section, spec.key, value),
                                               sort_keys=False))
        load_configs(path)
        paths.append(path)
    return paths


def choose(spec: SweepSpec, reports: Dict[Any, Dict]) -> Dict:
    """Rows ``{value, mean, std, values}`` of ``spec.select`` per value, and the chosen value
    (the best mean; the first listed value wins a tie)."""
    rows = []
    for value in spec.values:
        entry = reports[value][spec.model][spec.select]
        rows.append({"value": value, "mean": entry["mean"], "std": entry["std"],
                     "values": entry["values"], "seeds": entry["seeds"]})
    sign = 1.0 if higher_is_better(spec.select) else -1.0
    best = max(rows, key=lambda r: sign * r["mean"])
    return {"rows": rows, "chosen": best["value"]}


def plot_sweep(spec: SweepSpec, result: Dict, path: str) -> None:
    """The selection metric's mean ± std (validation split) against the swept value."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["rows"]
    labels = [str(r["value"]) for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.errorbar(range(len(rows)), [r["mean"] for r in rows], yerr=[r["std"] for r in rows],
                marker="o", capsize=4)
    chosen = labels.index(str(result["chosen"]))
    ax.plot([chosen], [rows[chosen]["mean"]], marker="*", markersize=14, color="tab:red",
            label=f"chosen: {labels[chosen]}")
    ax.set_xticks(range(len(rows)), labels)
    ax.set_xlabel(spec.param)
    ax.set_ylabel(f"{spec.select} (validation, mean ± std)")
    ax.set_title(f"{spec.model}: {spec.param}, {spec.seeds} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(spec: SweepSpec, data_dir: str, out: str, base_config: Optional[str] = None,
          progress: bool = True) -> Dict:
    """Train and validate every value of ``spec``; write and return the selection."""
    from models.compare import compare
    paths = write_value_configs(spec, base_config, out)
    reports = {}
    for value, path in zip(spec.values, paths):
        reports[value] = compare(data_dir, spec.value_dir(out, value), [spec.model], spec.seeds,
                                 path, progress=progress, split="valid")
    result = {"model": spec.model, "param": spec.param, "select": spec.select,
              "split": "valid", "seeds": spec.seeds, "data": os.path.abspath(data_dir),
              "base_config": base_config, **choose(spec, reports)}
    table = markdown_table(
        [spec.param, f"{spec.select} (valid)", "per seed", ""],
        [[r["value"], M.format_mean_std(r["values"]),
          " / ".join(f"{v:.4f}" for v in r["values"]),
          "chosen" if r["value"] == result["chosen"] else ""] for r in result["rows"]])
    with atomic_output_dir(os.path.join(out, "summary")) as staging:
        with open(os.path.join(staging, "sweep.json"), "w") as fh:
            json.dump(result, fh, indent=2)
        with open(os.path.join(staging, "sweep.md"), "w") as fh:
            fh.write(f"# {spec.model}: {spec.param} on the validation split\n\n{table}\n")
        plot_sweep(spec, result, os.path.join(staging, "sweep.png"))
    return result


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m models.sweep``."""
    from models.train import quiet_tensorflow
    quiet_tensorflow()
    parser = argparse.ArgumentParser(prog="python -m models.sweep",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=MODEL_NAMES)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--param", required=True, help="section.key, e.g. model.ctcvr_weight")
    parser.add_argument("--values", nargs="+", required=True,
                        help="values to try (read as YAML scalars: 3, 0.002, cosine)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--config", default=None, help="base YAML config")
    parser.add_argument("--select", default="ctcvr_auc", help="validation metric to maximise "
                        "(AUCs) or minimise (log loss, RCE, ECE)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        spec = SweepSpec(args.model, args.param, [yaml.safe_load(v) for v in args.values],
                         args.seeds, args.select)
        result = sweep(spec, args.data, args.out, args.config, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = os.path.join(os.path.abspath(args.out), "summary")
    print(open(os.path.join(summary, "sweep.md")).read())
    rows = [(f"{spec.param}={r['value']}", M.format_mean_std(r["values"]))
            for r in result["rows"]]
    rows += [("chosen", result["chosen"]), ("summary", os.path.join(summary, "sweep.json"))]
    print_table(f"models.sweep ({spec.select}, validation)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
