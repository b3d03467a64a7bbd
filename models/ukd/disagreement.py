"""How much a trained UKD student's two CVR heads disagree, so how much its weight can vary.

Usage::

    python -m models.ukd.disagreement --run RUN --data PROC_PL --out DIR
        [--split valid] [--draws 4] [--max-rows 200000]

The student (``--model ukd``) weights each unclicked row's distillation by ``exp(-lambda u)``,
``u = KL(p || p')`` the disagreement of its two dropout heads (Xu et al., WWW 2022).
The weighting can only select rows if ``lambda u`` varies over them. This restores the
weights ``RUN`` exported, measures ``u`` (dropout on, the mean of ``--draws`` draws) on the first
``--max-rows`` rows of ``--split`` in file order, and reports, for the clicked and the
unclicked rows, its mean, median and 90th percentile and the mean weight at several lambdas.
Writes ``DIR/disagreement.json`` and ``DIR/disagreement.png`` (the two ``u`` distributions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from preprocessing import columns as C
from common.atomic import atomic_write_text
from common.tables import print_table

#: The lambdas at which the mean weight is reported (besides the run's own).
LAMBDAS = (30.0, 100.0, 300.0, 1000.0, 10000.0)


def head_disagreement(model, dataset, batch_size: int, draws: int,
                      max_rows: Optional[int] = None, kind: str = "kl"
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Per row of ``dataset`` (file order, at most ``max_rows``): the mean over ``draws``
    dropout draws of the heads' disagreement ``u`` (``kind``: ``kl``, the paper's
    ``KL(pcvr_a || pcvr_b)``, or ``logit``, the level-free squared logit gap; ``UKDConfig``),
    and the row's click label."""
    from models.data import batches
    from models.ukd.student import UNCERTAINTY
    measure_u = UNCERTAINTY[kind]
    us, clicks, seen = [], [], 0
    for x, y in batches(dataset, batch_size, shuffle=False):
        total = 0.0
        for _ in range(draws):
            out = model(x, training=True)
            total = total + measure_u(out["pcvr_a"], out["pcvr_b"]).numpy().reshape(-1)
        us.append(total / draws)
        clicks.append(np.asarray(y[C.CLICK]).reshape(-1))
        seen += len(us[-1])
        if max_rows is not None and seen >= max_rows:
            break
    u, click = np.concatenate(us), np.concatenate(clicks)
    return (u, click) if max_rows is None else (u[:max_rows], click[:max_rows])


def load_student(run_dir: str, data_dir: str):
    """The student of ``run_dir`` (``ukd`` or ``ukd_base``) with the weights it exported
    restored (its best epoch's, or its last checkpoint's), and its recorded model config."""
    import tensorflow as tf

    from models.config import model_config_from_flat, with_added_defaults
    from models.registry import build_model
    from models.data import batches, features_and_targets, model_columns, split_dataset
    from models.trainer import exported_weights
    recorded = with_added_defaults(json.load(open(os.path.join(run_dir, "config.json"))))
    if recorded["model"] not in ("ukd", "ukd_base"):
        raise ValueError(f"{run_dir}: a {recorded['model']!r} run; the disagreement needs a "
                         f"UKD student (--model ukd or ukd_base)")
    config = model_config_from_flat(recorded["model_config"])
    features, targets, schema = features_and_targets(data_dir)
    model = build_model(recorded["model"], features, config, targets)
    x, _ = next(iter(batches(split_dataset(data_dir, "valid", model_columns(schema, targets)),
                             64, shuffle=False)))
    model(x)  # build the variables before restoring into them
    # the weights the run exported: its best epoch's, else (a run cut by max_steps) its last
    tf.train.Checkpoint(model=model).restore(exported_weights(run_dir)).expect_partial()
    return model, config


def summarise(u: np.ndarray, lambdas: Sequence[float]) -> Dict:
    """Rows, mean, median and 90th percentile of ``u`` and the mean ``exp(-lambda u)``."""
    return {"rows": int(len(u)), "mean": float(u.mean()), "median": float(np.median(u)),
            "p90": float(np.quantile(u, 0.9)),
            "mean_weight": {f"{lam:g}": float(np.exp(-lam * u).mean()) for lam in lambdas}}


def measure(run_dir: str, data_dir: str, split: str = "valid", draws: int = 4,
            max_rows: int = 200_000, batch_size: int = 4096) -> Dict:
    """The disagreement of ``run_dir``'s heads on ``split`` (see the module docstring)."""
    from models.data import features_and_targets, model_columns, split_dataset
    from models.ukd.config import UKDConfig
    model, config = load_student(run_dir, data_dir)
    _, targets, schema = features_and_targets(data_dir)
    dataset = split_dataset(data_dir, split, model_columns(schema, targets))
    u, click = head_disagreement(model, dataset, batch_size, draws, max_rows)
    lambdas = sorted({config.family(UKDConfig).lam, *LAMBDAS})
    clicked = click > 0
    return {"run": os.path.abspath(run_dir), "data": os.path.abspath(data_dir), "split": split,
            "draws": draws, "run_lambda": config.family(UKDConfig).lam,
            "clicked": summarise(u[clicked], lambdas),
            "unclicked": summarise(u[~clicked], lambdas),
            "_u": {"clicked": u[clicked], "unclicked": u[~clicked]}}


def plot_disagreement(samples: Dict[str, np.ndarray], title: str, path: str,
                      lambdas: Sequence[float] = ()) -> None:
    """Histograms of ``log10 u`` per named sample; a dotted line at ``u = 1 / lambda`` for each
    of ``lambdas`` (where the weight ``exp(-lambda u)`` has fallen to 0.37)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    logs = {label: np.log10(np.maximum(u, 1e-12)) for label, u in samples.items()}
    pooled = np.concatenate(list(logs.values()))
    marks = [np.log10(1.0 / lam) for lam in lambdas]
    low, high = np.quantile(pooled, [0.001, 1.0])  # a few exact ties (u = 0) stay off the axis
    bins = np.linspace(low, high, 61)
    for label, u in samples.items():
        ax.hist(np.clip(logs[label], low, high), bins=bins, density=True, alpha=0.55,
                label=f"{label} (mean {u.mean():.2e})")
    ax.set_xlim(min([low, *marks]) - 0.3, max([high, *marks]) + 0.3)
    for lam in lambdas:
        ax.axvline(np.log10(1.0 / lam), color="grey", linestyle=":", linewidth=1)
        ax.text(np.log10(1.0 / lam), ax.get_ylim()[1] * 0.95, f" 1/{lam:g}", fontsize=7,
                color="grey", va="top")
    ax.set_xlabel("log10 KL(p || p')  (dropout on)")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path + ".partial.png", dpi=110)
    plt.close(fig)
    os.replace(path + ".partial.png", path)


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m models.ukd.disagreement``."""
    from common.quiet import quiet_tensorflow
    quiet_tensorflow()
    parser = argparse.ArgumentParser(prog="python -m models.ukd.disagreement",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a ukd or ukd_base run directory")
    parser.add_argument("--data", required=True, help="its pseudo-labelled dataset")
    parser.add_argument("--out", required=True)
    parser.add_argument("--split", default="valid", choices=("train", "valid", "test"))
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--max-rows", type=int, default=200_000)
    args = parser.parse_args(argv)
    if args.draws < 1 or args.max_rows < 1:
        print("error: --draws and --max-rows must be >= 1", file=sys.stderr)
        return 2
    try:
        result = measure(args.run, args.data, args.split, args.draws, args.max_rows)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    plot_disagreement(result["_u"], f"UKD head disagreement, {args.split} split "
                      f"(lines: 1/lambda)", os.path.join(args.out, "disagreement.png"),
                      sorted({result["run_lambda"], 300.0, 10000.0}))
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    atomic_write_text(os.path.join(args.out, "disagreement.json"),
                      json.dumps(public, indent=2) + "\n")
    rows = []
    for part in ("clicked", "unclicked"):
        s = public[part]
        rows.append((f"{part}: rows / mean / median / p90 u",
                     f"{s['rows']:,} / {s['mean']:.2e} / {s['median']:.2e} / {s['p90']:.2e}"))
        rows.append((f"{part}: mean exp(-lambda u)",
                     ", ".join(f"{lam}: {w:.3f}" for lam, w in s["mean_weight"].items())))
    rows.append(("written", os.path.abspath(args.out)))
    print_table("models.ukd.disagreement", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
