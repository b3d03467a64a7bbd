"""Select hyperparameters on the validation split, over several seeds.

Usage::

    python -m models.sweep --model esmm --data PROC_DIR --out OUT_DIR
        --param model.ctcvr_weight --values 1 2 3 5 10
        [--param train.learning_rate --values 0.001 0.002 ...]
        [--seeds 3] [--config BASE.yaml] [--select ctcvr_auc] [--rule {best,beat-first-by-std}]

Each ``--param`` has its own ``--values``; several make a grid (every combination). For each
setting the base config (``--config``, or the defaults) gets ``section.key = value`` for every
param and ``models.compare`` trains the model for ``--seeds`` seeds under
``OUT_DIR/<key>=<value>[,<key>=<value>...]/`` (finished runs are reused, interrupted ones
resumed) and evaluates them on the **validation** split. The setting with the best validation
mean of ``--select`` is chosen (``--rule best``), or, with ``--rule beat-first-by-std``, the
first setting (every param's first value: list the incumbent first) is kept unless the best
beats it by more than the larger of their two seed standard deviations. The test metrics that
each run also records play no part in the choice, so the chosen setting's test numbers stay an
honest estimate. ``OUT_DIR/summary`` gets ``sweep.json``, ``sweep.md`` and ``sweep.png`` (the
metric's mean ± std per setting).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

import yaml

from models import metrics as M
from models.config import TrainConfig, common_keys, legacy_keys, load_configs
from models.registry import model_names
from common.provenance import portable_path
from common.atomic import atomic_output_dir, atomic_write_text
from common.params import check_param
from common.tables import markdown_table, print_table

#: The keys a sweep may set, per config section: the model's common fields and every family's
#: flat name (``model.autoheri_sparsity``), the loop's fields.
SECTIONS = {"model": lambda: (*common_keys(), *legacy_keys()),
            "train": lambda: tuple(f.name for f in fields(TrainConfig))}
RULES = ("best", "beat-first-by-std")


def higher_is_better(metric: str) -> bool:
    """Direction of a selection metric: AUCs up; log loss, RCE and ECE down."""
    if "auc" in metric:
        return True
    if any(part in metric for part in ("logloss", "rce", "ece")):
        return False
    raise ValueError(f"--select {metric!r}: no known direction; use an AUC, log-loss, "
                     f"RCE or ECE metric of models.evaluate")


def setting_label(setting: Dict[str, Any]) -> str:
    """``key=value[,key=value...]`` of one setting (its directory name and table label)."""
    return ",".join(f"{param.partition('.')[2]}={value}" for param, value in setting.items())


@dataclass(frozen=True)
class SweepSpec:
    """One hyperparameter sweep: a grid over one or more config fields.

    Args:
        model: a name of ``models.baselines.MODELS``.
        params: ``section.key`` names, each a field of ``ModelConfig`` (``model.``) or
            ``TrainConfig`` (``train.``).
        values: one tuple of distinct values per param; the grid must have two settings or more.
        seeds: seeds per setting.
        select: the validation metric that picks the setting (``models.evaluate`` keys).
        rule: ``best`` (the best mean) or ``beat-first-by-std`` (the first setting unless the
            best beats it by more than the larger of their seed standard deviations).
    """

    model: str
    params: Tuple[str, ...]
    values: Tuple[Tuple[Any, ...], ...]
    seeds: int = 3
    select: str = "ctcvr_auc"
    rule: str = "best"

    def __post_init__(self):
        object.__setattr__(self, "params", tuple(self.params))
        object.__setattr__(self, "values", tuple(tuple(v) for v in self.values))
        check_param(self.model in model_names(), "model", f"one of {', '.join(model_names())}",
                    self.model)
        for param in self.params:
            section, _, key = param.partition(".")
            known = set(SECTIONS[section]()) if section in SECTIONS else set()
            check_param(key in known, "params", "section.key names with a field of ModelConfig "
                        "('model.') or TrainConfig ('train.')", param)
        check_param(len(self.params) >= 1 and len(set(self.params)) == len(self.params),
                    "params", "one or more distinct names", self.params)
        check_param(len(self.values) == len(self.params), "values", "one tuple per param",
                    self.values)
        for vals in self.values:
            check_param(len(vals) >= 1 and len(set(map(str, vals))) == len(vals), "values",
                        "distinct values for each param", vals)
        check_param(len(self.settings()) >= 2, "values", "a grid of at least two settings",
                    self.values)
        check_param(self.seeds >= 1, "seeds", ">= 1", self.seeds)
        check_param(self.rule in RULES, "rule", f"one of {', '.join(RULES)}", self.rule)
        higher_is_better(self.select)

    def settings(self) -> List[Dict[str, Any]]:
        """Every combination of the values, ``{param: value}``, the first values first."""
        return [dict(zip(self.params, combo)) for combo in itertools.product(*self.values)]

    def setting_dir(self, out: str, setting: Dict[str, Any]) -> str:
        """Where the runs and the validation report of one setting go."""
        return os.path.join(out, setting_label(setting))


def seeds_phrase(seeds: int) -> str:
    """``"1 seed"`` or ``"N seeds"``."""
    return f"{seeds} seed" if seeds == 1 else f"{seeds} seeds"


def config_with(base: Optional[str], setting: Dict[str, Any]) -> Dict:
    """The raw config of ``base`` (a YAML path, or the defaults when ``None``) with each
    ``section.key`` of ``setting`` set to its value."""
    raw = {}
    if base is not None:
        with open(base) as fh:
            raw = yaml.safe_load(fh) or {}
    raw = {s: dict(raw.get(s) or {}) for s in ("model", "train")}
    for param, value in setting.items():
        section, _, key = param.partition(".")
        raw[section][key] = value
    return raw


def write_setting_configs(spec: SweepSpec, base: Optional[str], out: str) -> List[str]:
    """Write and validate ``OUT/<setting>/config.yaml`` for every setting (all before any
    training, so that a bad value fails in seconds)."""
    paths = []
    for setting in spec.settings():
        path = os.path.join(spec.setting_dir(out, setting), "config.yaml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, yaml.safe_dump(config_with(base, setting), sort_keys=False))
        load_configs(path)
        paths.append(path)
    return paths


def choose(spec: SweepSpec, reports: Dict[str, Dict]) -> Dict:
    """Rows ``{setting, label, mean, std, values, seeds}`` of ``spec.select`` per setting
    (``reports`` keyed by :func:`setting_label`), the chosen setting and its label. ``best``:
    the best mean, the first setting on a tie; ``beat-first-by-std``: the first setting unless
    the best mean beats it by more than ``max(std_best, std_first)``."""
    rows = []
    for setting in spec.settings():
        label = setting_label(setting)
        entry = reports[label][spec.model][spec.select]
        rows.append({"setting": setting, "label": label, "mean": entry["mean"],
                     "std": entry["std"], "values": entry["values"], "seeds": entry["seeds"]})
    sign = 1.0 if higher_is_better(spec.select) else -1.0
    best = max(rows, key=lambda r: sign * r["mean"])
    first = rows[0]
    if spec.rule == "beat-first-by-std" and (
            sign * (best["mean"] - first["mean"]) <= max(best["std"], first["std"])):
        best = first
    return {"rows": rows, "chosen": best["setting"], "chosen_label": best["label"]}


def plot_sweep(spec: SweepSpec, result: Dict, path: str) -> None:
    """The selection metric's mean ± std (validation split) per setting, the chosen one starred."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["rows"]
    labels = [r["label"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * len(rows)), 3.8))
    ax.errorbar(range(len(rows)), [r["mean"] for r in rows], yerr=[r["std"] for r in rows],
                marker="o", capsize=4, linestyle="none" if len(spec.params) > 1 else "-")
    chosen = labels.index(result["chosen_label"])
    ax.plot([chosen], [rows[chosen]["mean"]], marker="*", markersize=14, color="tab:red",
            linestyle="none")
    ax.set_xticks(range(len(rows)), [label.replace(",", "\n") for label in labels],
                  fontsize=8)
    ax.set_xlabel(" x ".join(spec.params))
    ax.set_ylabel(f"{spec.select} (validation)")
    ax.set_title(f"{spec.model}: mean ± std over {seeds_phrase(spec.seeds)}\n"
                 f"chosen ({spec.rule}, red star): {labels[chosen]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(spec: SweepSpec, data_dir: str, out: str, base_config: Optional[str] = None,
          progress: bool = True) -> Dict:
    """Train and validate every setting of ``spec``; write and return the selection."""
    from models.compare import compare
    paths = write_setting_configs(spec, base_config, out)
    reports = {}
    for setting, path in zip(spec.settings(), paths):
        reports[setting_label(setting)] = compare(
            data_dir, spec.setting_dir(out, setting), [spec.model], spec.seeds, path,
            progress=progress, split="valid")
    result = {"model": spec.model, "params": list(spec.params), "select": spec.select,
              "rule": spec.rule, "split": "valid", "seeds": spec.seeds,
              "data": portable_path(data_dir, "PROC"), "base_config": base_config,
              **choose(spec, reports)}
    table = markdown_table(
        [*spec.params, f"{spec.select} (valid)", "per seed", ""],
        [[*r["setting"].values(), M.format_mean_std(r["values"]),
          " / ".join(f"{v:.4f}" for v in r["values"]),
          "chosen" if r["label"] == result["chosen_label"] else ""] for r in result["rows"]])
    with atomic_output_dir(os.path.join(out, "summary")) as staging:
        with open(os.path.join(staging, "sweep.json"), "w") as fh:
            json.dump(result, fh, indent=2)
        with open(os.path.join(staging, "sweep.md"), "w") as fh:
            fh.write(f"# {spec.model}: {' x '.join(spec.params)} on the validation split\n\n"
                     f"Selection: `{spec.select}`, rule `{spec.rule}`, "
                     f"{seeds_phrase(spec.seeds)}.\n\n"
                     f"{table}\n")
        plot_sweep(spec, result, os.path.join(staging, "sweep.png"))
    return result


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m models.sweep``."""
    from common.quiet import quiet_tensorflow
    quiet_tensorflow()
    parser = argparse.ArgumentParser(prog="python -m models.sweep",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=model_names())
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--param", required=True, action="append",
                        help="section.key, e.g. model.ctcvr_weight; repeat for a grid")
    parser.add_argument("--values", nargs="+", required=True, action="append",
                        help="values of the preceding --param (read as YAML scalars: 3, "
                        "0.002, cosine)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--config", default=None, help="base YAML config")
    parser.add_argument("--select", default="ctcvr_auc", help="validation metric to maximise "
                        "(AUCs) or minimise (log loss, RCE, ECE)")
    parser.add_argument("--rule", default="best", choices=RULES,
                        help="best mean, or keep the first setting unless beaten by more than "
                        "a seed standard deviation")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if len(args.param) != len(args.values):
        parser.error(f"each --param needs its --values: {len(args.param)} --param, "
                     f"{len(args.values)} --values")
    try:
        spec = SweepSpec(args.model, args.param,
                         [[yaml.safe_load(v) for v in vals] for vals in args.values],
                         args.seeds, args.select, args.rule)
        result = sweep(spec, args.data, args.out, args.config, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = os.path.join(os.path.abspath(args.out), "summary")
    print(open(os.path.join(summary, "sweep.md")).read())
    rows = [(r["label"], M.format_mean_std(r["values"])) for r in result["rows"]]
    rows += [(f"chosen ({spec.rule})", result["chosen_label"]),
             ("summary", os.path.join(summary, "sweep.json"))]
    print_table(f"models.sweep ({spec.select}, validation)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
