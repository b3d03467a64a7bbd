"""Train every named model for K seeds on one dataset and write one report.

Usage::

    python -m models.compare --data PROC_DIR --out OUT_DIR [--models naive esmm escm2_ips mmoe]
        [--seeds 3] [--config FILE] [--split {test,valid}]

Runs go to ``OUT_DIR/runs/<model>_seed<k>``; a run whose ``metrics.json`` exists is reused and
an interrupted one is resumed from its checkpoint, so the command can be restarted after a crash.
The report (``models.evaluate``) goes to ``OUT_DIR/report``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from models.config import load_configs
from models.registry import model_names, pseudo_labelled_names
from models.metrics import format_mean_std
from common.tables import print_table


def compare(data_dir: str, out: str, models: List[str], seeds: int, config: Optional[str],
            progress: bool = True, split: str = "test") -> dict:
    """Train ``models`` x ``seeds`` runs (reusing finished ones) and evaluate them together on
    ``split``. A run directory left by a different configuration (or data) is an error, not
    silently reused."""
    from models.evaluate import evaluate_runs
    from models.train import has_checkpoint, run_identity, same_run, train
    from preprocessing.processed import ProcessedData
    mcfg, tcfg = load_configs(config)
    data = ProcessedData.open(data_dir)  # once for every run and the report
    run_dirs = []
    for model in models:
        for seed in range(seeds):
            run_dir = os.path.join(out, "runs", f"{model}_seed{seed}")
            run_dirs.append(run_dir)
            if os.path.exists(os.path.join(run_dir, "config.json")) and not same_run(
                    run_dir, run_identity(model, data.root, seed, mcfg, tcfg)):
                raise ValueError(f"{run_dir}: holds a run of another configuration or dataset "
                                 f"than {config or 'the defaults'} on {data_dir}; use a new --out")
            if os.path.exists(os.path.join(run_dir, "metrics.json")):
                continue
            resume = has_checkpoint(run_dir)
            train(model, data, run_dir, seed, mcfg, tcfg, resume=resume, progress=progress)
    return evaluate_runs(run_dirs, data, os.path.join(out, "report"), split)


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m models.compare``."""
    from common.quiet import quiet_tensorflow
    quiet_tensorflow()
    parser = argparse.ArgumentParser(prog="python -m models.compare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", nargs="+", choices=model_names(),
                        default=[m for m in model_names() if m not in pseudo_labelled_names()],
                        help="default: every model that needs no pseudo-labels")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--config", default=None)
    parser.add_argument("--split", default="test", choices=("valid", "test"),
                        help="the split the report is computed on")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        print("error: --seeds must be >= 1", file=sys.stderr)
        return 2
    try:
        report = compare(args.data, args.out, args.models, args.seeds, args.config,
                         progress=not args.no_progress, split=args.split)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(open(os.path.join(args.out, "report", "report.md")).read())
    rows = [(f"{m} entire_space_cvr_auc", format_mean_std(r["entire_space_cvr_auc"]["values"]))
            for m, r in report.items() if "entire_space_cvr_auc" in r]
    rows.append(("report", os.path.join(os.path.abspath(args.out), "report", "report.json")))
    print_table("models.compare", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
