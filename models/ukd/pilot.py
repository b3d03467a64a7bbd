"""The uncertainty premise of UKD, measured: do noisy labels show a larger head disagreement?

Usage::

    python -m models.ukd.pilot --data PROC --out DIR [--flip 0.2] [--epochs 2] [--seed 0]

The paper's pilot (Xu et al., WWW 2022, Section 3.4): flip a fraction ``--flip`` of the purchase
labels of the clicked training rows (seeded), train the UKD student's network (two CVR heads
behind independent dropout) on the clicked rows only, with ``CE`` against the flipped labels on
both heads, then measure each clicked row's uncertainty ``u = KL(p || p')`` with dropout on
(the mean over ``--draws`` dropout draws). If the premise holds, the flipped rows' mean ``u`` is
larger than the clean rows'. Rows are read in file order, so the flipped set is the same in every
epoch. Writes ``DIR/pilot.json`` and ``DIR/pilot.png`` (the two ``u`` distributions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np

from preprocessing import columns as C
from common.atomic import atomic_write_text
from common.tables import print_table
from preprocessing.splits import read_split


def _clicked_ce(model, x, purchase, click):
    import tensorflow as tf

    from models.baselines import bce
    out = model(x, training=True)
    per_row = 0.5 * (bce(purchase, out["pcvr_a"]) + bce(purchase, out["pcvr_b"]))
    return tf.reduce_sum(click * per_row) / tf.maximum(tf.reduce_sum(click), 1.0)


def run_pilot(data_dir: str, flip: float, epochs: int = 2, seed: int = 0, draws: int = 8,
              batch_size: int = 4096, learning_rate: float = 2e-3, model_config=None,
              progress: bool = True) -> Dict:
    """Train on clicked rows with ``flip`` of their purchase labels flipped; the mean
    uncertainty of the flipped and of the clean clicked rows (see the module docstring)."""
    import tensorflow as tf
    from tqdm import tqdm

    from models.config import ModelConfig
    from models.data import batches, features_and_targets, model_columns, split_dataset
    from models.ukd.disagreement import head_disagreement
    from models.ukd.student import UKDBaseStudent
    if not 0.0 < flip < 1.0:
        raise ValueError(f"The 'flip' parameter must be in (0, 1). Got {flip!r} instead.")
    tf.random.set_seed(seed)
    np.random.seed(seed)
    features, targets, schema = features_and_targets(data_dir)
    ds = split_dataset(data_dir, "train", model_columns(schema, targets))
    # the loader reads the parts in file order (shuffle off), as read_split does
    click_all = read_split(os.path.join(data_dir, "train"), [C.CLICK])[C.CLICK].to_numpy(
        np.float32)
    clicked_idx = np.flatnonzero(click_all)
    if not len(clicked_idx):
        raise ValueError(f"{data_dir}: the train split has no clicked rows")
    rng = np.random.default_rng(seed)
    flipped = np.zeros(len(click_all), bool)
    flipped[rng.choice(clicked_idx, size=max(1, int(round(flip * len(clicked_idx)))),
                       replace=False)] = True
    model = UKDBaseStudent(features, model_config or ModelConfig())
    optimizer = tf.keras.optimizers.Adam(learning_rate)
    step = tf.function(lambda x, z, c: _train_step(model, optimizer, x, z, c),
                       reduce_retracing=True)
    for epoch in range(epochs):
        start = 0
        for x, y in tqdm(batches(ds, batch_size, shuffle=False), desc=f"pilot epoch {epoch}",
                         unit="batch", disable=not progress, file=sys.stderr):
            n = int(y[C.CLICK].shape[0])
            z = np.asarray(y[C.PURCHASE]).reshape(-1).astype(np.float32)
            z = np.where(flipped[start:start + n], 1.0 - z, z)
            step(x, tf.constant(z), tf.constant(click_all[start:start + n]))
            start += n
    u, _ = head_disagreement(model, ds, batch_size, draws)
    clean = (click_all > 0) & ~flipped
    return {"data": os.path.abspath(data_dir), "flip": flip, "epochs": epochs, "seed": seed,
            "draws": draws, "clicked_rows": int(len(clicked_idx)),
            "flipped_rows": int(flipped.sum()),
            "mean_kl_flipped": float(u[flipped].mean()), "mean_kl_clean": float(u[clean].mean()),
            "median_kl_flipped": float(np.median(u[flipped])),
            "median_kl_clean": float(np.median(u[clean])),
            "ratio_flipped_to_clean": float(u[flipped].mean() / max(u[clean].mean(), 1e-30)),
            "_u_flipped": u[flipped], "_u_clean": u[clean]}


def _train_step(model, optimizer, x, purchase, click):
    import tensorflow as tf
    with tf.GradientTape() as tape:
        loss = _clicked_ce(model, x, purchase, click)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables)
                               if g is not None])
    return loss


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m models.ukd.pilot``."""
    from common.quiet import quiet_tensorflow
    from models.ukd.disagreement import plot_disagreement
    quiet_tensorflow()
    parser = argparse.ArgumentParser(prog="python -m models.ukd.pilot",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="processed dataset (preprocessing.run)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--flip", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--config", default=None, help="YAML with a 'model:' section")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        from models.config import load_configs
        model_config, _ = load_configs(args.config)
        result = run_pilot(args.data, args.flip, args.epochs, args.seed, args.draws,
                           model_config=model_config, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    plot_disagreement({"clean": result["_u_clean"], "flipped": result["_u_flipped"]},
                      f"UKD pilot: {result['flip']:.0%} of clicked labels flipped",
                      os.path.join(args.out, "pilot.png"))
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    atomic_write_text(os.path.join(args.out, "pilot.json"), json.dumps(public, indent=2) + "\n")
    print_table("models.ukd.pilot", [
        ("clicked rows / flipped", f"{public['clicked_rows']:,} / {public['flipped_rows']:,}"),
        ("mean KL flipped / clean", f"{public['mean_kl_flipped']:.3e} / "
                                    f"{public['mean_kl_clean']:.3e}"),
        ("ratio flipped / clean", f"{public['ratio_flipped_to_clean']:.2f}"),
        ("written", os.path.abspath(args.out)),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
