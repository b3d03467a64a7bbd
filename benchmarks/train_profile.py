"""Where an ESMM training step spends its time: a breakdown by ablation.

Usage::

    python -m benchmarks.train_profile --data PROC_DIR [--model esmm] [--batch-size 4096]
        [--steps 40] [--optimizer lazy_adam|adam] [--out benchmarks/results]

On batches of the training split already in memory (so the loader is out of the picture; its
own rate is in ``benchmarks.train_bench``), each part is timed over ``--steps`` steps after a
warm-up, every part compiled with ``tf.function``:

- ``full_step``: the model's ``train_step`` (forward, loss, backward, optimizer update);
- ``forward``: the model's forward pass and loss only;
- ``forward_backward``: forward, loss and gradients, no optimizer update;
- ``input_layer_forward_backward``: the shared input layer alone (embedding lookups, multi-hot
  pooling, concatenation) and the gradient of its output sum with respect to its tables;
- ``optimizer_update``: ``apply_gradients`` alone, with the gradients of one real step held
  fixed. Embedding gradients are sparse (``IndexedSlices``), but Keras' ``Adam``
  (``--optimizer adam``) decays the first and second moments of *every* row of a table on each
  step, so its cost grows with table size; ``lazy_adam`` (the trainer's default,
  ``models/optimizers.py``) touches only the rows in the batch.

Each part's share is its seconds over ``full_step``'s; the parts overlap (the backward pass of
the input layer is inside ``forward_backward``), so the shares do not sum to 1. Results:
``OUT/train_profile_<optimizer>_<date>.json`` with machine, versions, date and load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from typing import Callable, Dict, List, Optional

from benchmarks.run import versions

from preprocessing.device import machine_info
from common.atomic import atomic_write_text
from common.tables import markdown_table, print_table

WARMUP = 3


def _time(fn: Callable[[], object], steps: int) -> float:
    """Seconds per call of ``fn`` (its result forced) over ``steps`` calls after a warm-up."""
    import tensorflow as tf
    for _ in range(WARMUP):
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, fn())
    t0 = time.perf_counter()
    out = None
    for _ in range(steps):
        out = fn()
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
    return (time.perf_counter() - t0) / steps


def profile(data_dir: str, model_name: str, batch_size: int, steps: int,
            optimizer: Optional[str] = None) -> Dict[str, object]:
    """Seconds per step of each part of a training step (see the module docstring), with
    ``optimizer`` (default: the trainer's, ``TrainConfig().optimizer``)."""
    import tensorflow as tf

    from models.registry import build_model
    from models.config import ModelConfig, TrainConfig
    from models.data import batches, features_and_targets, model_columns, split_dataset
    from models.optimizers import make_optimizer
    optimizer = optimizer or TrainConfig().optimizer
    features, targets, schema = features_and_targets(data_dir)
    ds = split_dataset(data_dir, "train", model_columns(schema, targets))
    it = batches(ds, batch_size, shuffle=True, seed=0)
    x, y = next(it)
    it.close()
    tf.random.set_seed(0)
    model = build_model(model_name, features, ModelConfig(), targets)
    model.optimizer = make_optimizer(optimizer, 2e-3)
    model((x, y)[0])
    tables = model.embed.trainable_variables

    full = tf.function(lambda: model.train_step((x, y))["loss"])
    forward = tf.function(lambda: model.compute_loss(model(x, training=True), y))

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = model.compute_loss(model(x, training=True), y)
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def input_layer():
        with tf.GradientTape() as tape:
            out = tf.reduce_sum(model.embed(x))
        return tape.gradient(out, tables)

    grads = forward_backward()
    update = tf.function(lambda: model.optimizer.apply_gradients(
        zip(grads, model.trainable_variables)))
    parts = {"full_step": full, "forward": forward, "forward_backward": forward_backward,
             "input_layer_forward_backward": input_layer, "optimizer_update": update}
    seconds = {name: _time(fn, steps) for name, fn in parts.items()}
    table_rows = {v.name: int(v.shape[0]) for v in tables}
    return {
        "model": model_name, "optimizer": optimizer, "batch_size": batch_size, "steps": steps,
        "seconds_per_step": {k: round(v, 5) for k, v in seconds.items()},
        "samples_per_second": {k: round(batch_size / v, 1) for k, v in seconds.items()},
        "share_of_full_step": {k: round(v / seconds["full_step"], 3) for k, v in seconds.items()},
        "embedding_rows_total": int(sum(table_rows.values())),
        "embedding_tables": table_rows,
        "trainable_params": int(sum(int(tf.size(v)) for v in model.trainable_variables)),
    }


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.train_profile``."""
    from common.quiet import quiet_tensorflow
    quiet_tensorflow()
    from models.config import OPTIMIZER_NAMES
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_profile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="output directory of preprocessing.run")
    parser.add_argument("--model", default="esmm")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--optimizer", default=None, choices=OPTIMIZER_NAMES,
                        help="default: the trainer's (TrainConfig().optimizer)")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"))
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1:
        print("error: --batch-size and --steps must be >= 1", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    result = profile(args.data, args.model, args.batch_size, args.steps, args.optimizer)
    date = dt.date.today().isoformat()
    from common.provenance import portable_path  # recorded without this machine's paths
    doc = {"benchmark": "train_profile", "date": date,
           "run_at": dt.datetime.now().isoformat(timespec="seconds"),
           "machine": machine_info(), "versions": versions(),
           "loadavg_1min": {"before": round(load_before, 2),
                            "after": round(os.getloadavg()[0], 2)},
           "data": portable_path(args.data, "PROC"), **result}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"train_profile_{result['optimizer']}_{date}.json")
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    rows = [(part, f"{1000 * s:.1f} ms", f"{result['samples_per_second'][part]:,.0f}",
             f"{result['share_of_full_step'][part]:.2f}")
            for part, s in result["seconds_per_step"].items()]
    print(markdown_table(["part", "ms/step", "samples/s", "share of full step"], rows))
    print_table("benchmarks.train_profile", [
        ("model / batch / optimizer", f"{args.model} / {args.batch_size} / "
                                      f"{result['optimizer']}"),
        ("full step samples/s", f"{result['samples_per_second']['full_step']:,.0f}"),
        ("load average before/after", f"{doc['loadavg_1min']['before']} / "
                                      f"{doc['loadavg_1min']['after']}"),
        ("results", os.path.abspath(path))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
