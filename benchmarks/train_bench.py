"""Training throughput benchmark: data loader, the baselines' train step, and a Merlin Models peer.

Usage::

    python -m benchmarks.train_bench --data PROC_DIR [--models naive esmm escm2_ips mmoe autoheri]
        [--autoheri-architecture RUN/autoheri_architecture.json]
        [--batch-size 4096] [--steps 60] [--out benchmarks/results] [--no-peer] [--no-progress]

On the training split of a processed dataset (output of ``preprocessing.run``), in one process:

1. loader: iterate ``models.data.batches`` (shuffled, seed 0) for up to ``--steps`` batches;
   the first batch is not timed (loader start-up); rows/s.
2. every model of ``--models``: ``build_model(name, features, ModelConfig(), targets)``,
   the trainer's default optimizer (``TrainConfig().optimizer``, LazyAdam) at 2e-3,
   ``tf.function(model.train_step, reduce_retracing=True)``; 5 warm-up steps, then
   ``--steps`` steps end to end (loader + step, samples/s) and the same number of steps on
   batches fetched beforehand and kept in memory (step-only samples/s). Peak RSS after each
   model (process-wide peak so far, so it only grows from model to model). ESMM is measured
   once more with Keras' dense ``Adam`` (row ``esmm[keras_adam]``), the reference for LazyAdam.
   ``autoheri`` gives two rows: ``autoheri[search]``, the searchable network (every candidate
   edge gated, edge logits on their own Adam), and ``autoheri``, the retrained network of
   ``--autoheri-architecture`` (without it: every candidate edge, the largest derived network,
   row ``autoheri[all edges]``). From them and ESMM's row, ``autoheri_wall_to_esmm`` estimates
   AutoHERI's search + retrain wall time over one ESMM run on the same data:
   ``autoheri_search_fraction x esmm/search + esmm/retrain`` (samples/s ratios, end to end).
3. peer (unless ``--no-peer``): Merlin Models' own ``MMOEBlock`` model on the same columns
   (targets click and purchase), ``model.compile(optimizer="adam")``, ``model.fit`` over
   ``--steps`` batches of a merlin-dataloader ``Loader`` (after a 5-step warm-up fit).

Results: ``OUT/training_<date>.json`` (atomic write), with ratios to ESMM's samples/s of the
same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import sys
import time
import traceback
from typing import Dict, List, Optional

from benchmarks.run import versions

from preprocessing.device import machine_info
from common.atomic import atomic_write_text
from common.tables import markdown_table, peak_rss_mb, print_table

DEFAULT_OUT = os.path.join("benchmarks", "results")
DEFAULT_MODELS = ("naive", "esmm", "escm2_ips", "mmoe", "autoheri")
WARMUP_STEPS = 5
LEARNING_RATE = 2e-3
PEER_TARGETS = ("click", "purchase")
PEER_NAME = "merlin_models_mmoe"


def _rows(x) -> int:
    """Rows of a feature batch (the first dense tensor's leading dimension)."""
    for name, t in x.items():
        if not name.endswith("__values") and not name.endswith("__offsets"):
            return int(t.shape[0])
    offs = next(t for n, t in x.items() if n.endswith("__offsets"))
    return int(offs.shape[0]) - 1


def bench_loader(train_ds, batch_size: int, steps: int) -> Dict[str, object]:
    """Loader alone: rows/s over up to ``steps`` batches, the first one excluded."""
    from models.data import batches
    it = batches(train_ds, batch_size, shuffle=True, seed=0)
    t_first = time.perf_counter()
    x, _ = next(it)
    first_s = time.perf_counter() - t_first
    rows, n = 0, 0
    t0 = time.perf_counter()
    for x, _ in it:
        rows += _rows(x)
        n += 1
        if n >= steps:
            break
    seconds = time.perf_counter() - t0
    it.close()
    return {"batches_timed": n, "rows_timed": rows, "seconds": round(seconds, 4),
            "first_batch_s": round(first_s, 4),
            "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None}


def bench_model(name: str, features, targets, train_ds, batch_size: int, steps: int,
                optimizer: Optional[str] = None, edges=None) -> Dict[str, object]:
    """End-to-end and step-only samples/s of one model, trained with ``optimizer`` (one of
    ``models.config.OPTIMIZER_NAMES``; default: the trainer's). ``autoheri`` with ``edges``
    is the derived network of those edges; without, the searchable one."""
    import tensorflow as tf

    from models.autoheri.config import AutoHERIConfig
    from models.autoheri.model import build_autoheri
    from models.config import ModelConfig, TrainConfig
    from models.data import batches
    from models.optimizers import make_optimizer
    from models.registry import build_model
    optimizer = optimizer or TrainConfig().optimizer
    tf.random.set_seed(0)
    if edges is not None:
        model = build_autoheri(name, features, ModelConfig(), targets, edges=edges)
    else:
        model = build_model(name, features, ModelConfig(), targets)
    model.optimizer = make_optimizer(optimizer, LEARNING_RATE)
    if getattr(model, "searchable", False):  # the AutoHERI search network's edge optimizer
        model.edge_optimizer = tf.keras.optimizers.Adam(AutoHERIConfig().edge_lr)
    step = tf.function(model.train_step, reduce_retracing=True)

    it = batches(train_ds, batch_size, shuffle=True, seed=0)
    t_w = time.perf_counter()
    cached = []
    for i in range(WARMUP_STEPS):
        x, y = next(it)
        if i == 0:  # every variable, the optimizers' slots included, before the first trace
            model(x)
            model.optimizer.build(model.trainable_variables)
            if getattr(model, "searchable", False):
                model.edge_optimizer.build([model.edge_logits])
        cached.append((x, y))
        float(step((x, y))["loss"])
    warmup_s = time.perf_counter() - t_w

    # End to end: loader + step, --steps batches.
    rows, n = 0, 0
    t0 = time.perf_counter()
    loss = None
    for x, y in it:
        loss = step((x, y))["loss"]
        rows += _rows(x)
        n += 1
        if len(cached) < steps:
            cached.append((x, y))
        if n >= steps:
            break
    if loss is not None:
        float(loss)  # wait for the last step
    e2e_s = time.perf_counter() - t0
    it.close()

    # Step only: the same number of steps on batches already in memory.
    k, s_rows = 0, 0
    t1 = time.perf_counter()
    while k < n:
        x, y = cached[k % len(cached)]
        loss = step((x, y))["loss"]
        s_rows += _rows(x)
        k += 1
    if loss is not None:
        float(loss)
    step_s = time.perf_counter() - t1
    return {
        "optimizer": optimizer, "steps_timed": n, "samples_timed": rows, "warmup_steps": WARMUP_STEPS,
        "warmup_s": round(warmup_s, 3),
        "seconds": round(e2e_s, 4),
        "samples_per_second": round(rows / e2e_s, 1) if e2e_s > 0 else None,
        "step_only_seconds": round(step_s, 4),
        "step_only_samples_per_second": round(s_rows / step_s, 1) if step_s > 0 else None,
        "cached_batches": len(cached),
        "trainable_params": int(sum(int(tf.size(v)) for v in model.trainable_variables)),
        "peak_rss_mb_so_far": round(peak_rss_mb(), 1),
    }


def bench_peer(data_dir: str, features, batch_size: int, steps: int) -> Dict[str, object]:
    """Merlin Models' MMoE (``mm.MMOEBlock``) trained with ``model.fit`` on the same columns."""
    import merlin.models.tf as mm
    import tensorflow as tf
    from merlin.dataloader.tensorflow import Loader
    from merlin.schema import Tags

    from models.config import ModelConfig
    from models.data import split_dataset
    cfg = ModelConfig()
    cols = [f.name for f in features] + list(PEER_TARGETS)
    tf.random.set_seed(0)

    def loader(seed):
        ds = split_dataset(data_dir, "train", cols)
        return ds, Loader(ds, batch_size=batch_size, shuffle=True,
                          seed_fn=lambda: seed).map(mm.ToTarget(ds.schema, *PEER_TARGETS))

    ds, warm_loader = loader(0)
    schema = ds.schema
    cat = schema.select_by_tag(Tags.CATEGORICAL)
    inputs = mm.InputBlockV2(
        schema.excluding_by_tag(Tags.TARGET),
        categorical=mm.Embeddings(cat, dim=cfg.embedding_dim, sequence_combiner="mean"))
    output_block = mm.OutputBlock(schema.select_by_name(list(PEER_TARGETS)),
                                  task_blocks=mm.MLPBlock(list(cfg.tower_units)))
    from models.baselines import MMoEConfig
    options = cfg.family(MMoEConfig)
    mmoe = mm.MMOEBlock(output_block, expert_block=mm.MLPBlock(list(options.expert_units)),
                        num_experts=options.experts)
    model = mm.Model(inputs, mmoe, output_block)
    model.compile(optimizer=tf.keras.optimizers.Adam(LEARNING_RATE))
    t_w = time.perf_counter()
    model.fit(warm_loader, epochs=1, steps_per_epoch=WARMUP_STEPS, verbose=0)
    warmup_s = time.perf_counter() - t_w
    warm_loader.stop()
    _, timed_loader = loader(1)
    n = min(steps, len(timed_loader))
    ends: List[float] = []
    stamp = tf.keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs=None: ends.append(time.perf_counter()))
    t0 = time.perf_counter()
    model.fit(timed_loader, epochs=1, steps_per_epoch=n, verbose=0, callbacks=[stamp])
    seconds = time.perf_counter() - t0
    # Steady state: from the end of the first timed batch to the end of the last one (the
    # fit call's own start-up, e.g. loader start and any retracing, excluded).
    steady = ((n - 1) * batch_size / (ends[-1] - ends[0])
              if len(ends) >= 2 and ends[-1] > ends[0] else None)
    timed_loader.stop()
    rows = n * batch_size if n < len(timed_loader) else None
    if rows is None:  # the whole split: the last batch may be short
        rows = ds.num_rows
    return {
        "status": "ok", "steps_timed": n, "samples_timed": rows,
        "warmup_steps": WARMUP_STEPS, "warmup_s": round(warmup_s, 3),
        "seconds": round(seconds, 4),
        "samples_per_second": round(rows / seconds, 1) if seconds > 0 else None,
        "steady_samples_per_second": round(steady, 1) if steady else None,
        "first_batch_s": round(ends[0] - t0, 4) if ends else None,
        "targets": list(PEER_TARGETS),
        "architecture": (f"InputBlockV2(Embeddings dim {cfg.embedding_dim}, mean-pooled "
                         f"lists) -> MMOEBlock({options.experts} x MLP"
                         f"{list(options.expert_units)}) -> task MLP{list(cfg.tower_units)} "
                         f"-> BinaryOutput"),
        "trainable_params": int(sum(int(tf.size(v)) for v in model.trainable_variables)),
        "peak_rss_mb_so_far": round(peak_rss_mb(), 1),
        "note": ("samples_per_second: the whole timed model.fit call (Keras callbacks and "
                 "metrics, loader start included), after a warm-up fit; "
                 "steady_samples_per_second: batches 2..n of that call; embedding tables are "
                 "not capped at max_embedding_rows as in the baselines"),
    }


def autoheri_rows(architecture: Optional[str], features, targets) -> Dict[str, object]:
    """The AutoHERI stages to benchmark: ``{label: edges}``, the searchable network
    (``None``) and the retrained one (the architecture file's kept edges, or every candidate)."""
    from models.autoheri.architecture import Architecture, candidate_edges, chain_tasks
    from models.config import ModelConfig
    if architecture:
        retrain = ("autoheri", Architecture.load(architecture).kept)
    else:
        retrain = ("autoheri[all edges]",
                   candidate_edges(chain_tasks(targets), len(ModelConfig().tower_units)))
    return {"autoheri[search]": None, retrain[0]: retrain[1]}


def autoheri_wall_ratio(models: Dict[str, Dict]) -> Optional[Dict[str, object]]:
    """AutoHERI's search + retrain time over one ESMM run of the same steps, from end-to-end
    samples/s: ``fraction x esmm / search + esmm / retrain``."""
    from models.autoheri.config import AutoHERIConfig
    esmm = models.get("esmm", {}).get("samples_per_second")
    search = models.get("autoheri[search]", {}).get("samples_per_second")
    retrain_label = next((k for k in models if k in ("autoheri", "autoheri[all edges]")), None)
    retrain = models.get(retrain_label, {}).get("samples_per_second")
    if not (esmm and search and retrain):
        return None
    fraction = AutoHERIConfig().search_fraction
    ratio = fraction * esmm / search + esmm / retrain
    return {"ratio": round(ratio, 3), "search_fraction": fraction,
            "retrain_row": retrain_label, "target": 3.0, "within_target": ratio <= 3.0}


def _versions() -> Dict[str, str]:
    out = dict(versions())
    for pkg in ("tensorflow", "merlin-models", "merlin-dataloader"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            try:
                out[pkg] = md.version(pkg + "-cpu") if pkg == "tensorflow" else "not installed"
            except md.PackageNotFoundError:
                out[pkg] = "not installed"
    return out


def _ratio(value, base):
    if value is None or not base:
        return None
    return round(value / base, 3)


def summary_rows(doc: dict) -> List[List[str]]:
    rows = [["loader", f"{doc['loader']['rows_per_second']:,.0f}", "", "", ""]]
    for name, r in doc["models"].items():
        rows.append([name, f"{r['samples_per_second']:,.0f}",
                     f"{r['step_only_samples_per_second']:,.0f}",
                     str(doc["ratios_to_esmm"].get(name, {}).get("samples_per_second")),
                     f"{r['peak_rss_mb_so_far']:,.0f}"])
    peer = doc.get("peer")
    if peer is not None:
        if peer.get("status") == "ok":
            rows.append([PEER_NAME, f"{peer['samples_per_second']:,.0f}", "",
                         str(doc["ratios_to_esmm"].get(PEER_NAME, {}).get(
                             "samples_per_second")), f"{peer['peak_rss_mb_so_far']:,.0f}"])
        else:
            rows.append([PEER_NAME, "failed", "", "", ""])
    return rows


SUMMARY_HEADER = ["stage", "samples/s (end to end)", "step-only samples/s",
                  "ratio to esmm", "peak RSS MB (so far)"]


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.train_bench``."""
    from common.quiet import quiet_tensorflow
    quiet_tensorflow()
    from models.registry import model_names
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="output directory of preprocessing.run")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        choices=model_names())
    parser.add_argument("--autoheri-architecture", default=None,
                        help="autoheri_architecture.json of a searched run: the retrained "
                        "network benchmarked (default: every candidate edge)")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default=DEFAULT_OUT, help="results directory")
    parser.add_argument("--no-peer", action="store_true",
                        help="skip the Merlin Models MMoE peer")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1:
        print("error: --batch-size and --steps must be >= 1", file=sys.stderr)
        return 2

    import tensorflow as tf
    from tqdm import tqdm

    from models.data import features_and_targets, model_columns, split_dataset
    features, targets, schema = features_and_targets(args.data)
    train_ds = split_dataset(args.data, "train", model_columns(schema, targets))
    date = dt.date.today().isoformat()
    from common.provenance import portable_path, recorded_command  # no machine paths recorded
    doc: Dict[str, object] = {
        "benchmark": "training", "date": date, "run_at": dt.datetime.now().isoformat(
            timespec="seconds"),
        "machine": machine_info(), "versions": _versions(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "command": recorded_command("benchmarks.train_bench",
                                    argv if argv is not None else sys.argv[1:]),
        "data": portable_path(args.data, "PROC"), "data_rows": {"train": int(train_ds.num_rows)},
        "targets": list(targets), "batch_size": args.batch_size, "steps": args.steps,
        "warmup_steps": WARMUP_STEPS, "learning_rate": LEARNING_RATE,
        "peak_rss_note": ("peak_rss_mb_so_far is the process-wide peak RSS (VmHWM) read after "
                          "each stage, so it includes every earlier stage and only grows"),
    }
    reference = ["esmm[keras_adam]"] if "esmm" in args.models else []
    autoheri_stages = autoheri_rows(args.autoheri_architecture, features, targets) if (
        "autoheri" in args.models) else {}
    stages = (["loader", *[m for m in args.models if m != "autoheri"], *autoheri_stages,
               *reference] + ([] if args.no_peer else ["peer"]))
    bar = tqdm(total=len(stages), unit="stage", disable=args.no_progress, file=sys.stderr)
    try:
        bar.set_description("loader")
        doc["loader"] = bench_loader(train_ds, args.batch_size, args.steps)
        doc["loader"]["peak_rss_mb_so_far"] = round(peak_rss_mb(), 1)
        bar.update(1)
        doc["models"] = {}
        for name in args.models:
            bar.set_description(name)
            doc["models"][name] = bench_model(name, features, targets, train_ds,
                                              args.batch_size, args.steps)
            bar.update(1)
        for label, edges in autoheri_stages.items():
            bar.set_description(label)
            doc["models"][label] = bench_model("autoheri", features, targets, train_ds,
                                               args.batch_size, args.steps, edges=edges)
            bar.update(1)
        for name in reference:
            bar.set_description(name)
            doc["models"][name] = bench_model("esmm", features, targets, train_ds,
                                              args.batch_size, args.steps, optimizer="adam")
            bar.update(1)
        if not args.no_peer:
            bar.set_description("peer")
            try:
                doc["peer"] = bench_peer(args.data, features, args.batch_size, args.steps)
            except Exception as e:  # recorded, not fatal: the peer is a yardstick
                msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                doc["peer"] = {"status": "failed", "error": msg,
                               "traceback_tail": traceback.format_exc()[-1500:]}
            bar.update(1)
    finally:
        bar.close()

    base = doc["models"].get("esmm", {}).get("samples_per_second")
    base_step = doc["models"].get("esmm", {}).get("step_only_samples_per_second")
    ratios: Dict[str, Dict[str, object]] = {}
    if base:
        for name, r in doc["models"].items():
            ratios[name] = {
                "samples_per_second": _ratio(r["samples_per_second"], base),
                "step_only_samples_per_second": _ratio(r["step_only_samples_per_second"],
                                                       base_step)}
        peer = doc.get("peer")
        if peer and peer.get("status") == "ok":
            ratios[PEER_NAME] = {"samples_per_second": _ratio(peer["samples_per_second"], base)}
    doc["ratios_to_esmm"] = ratios
    if autoheri_stages:
        doc["autoheri_architecture"] = args.autoheri_architecture
        doc["autoheri_wall_to_esmm"] = autoheri_wall_ratio(doc["models"])
    if not base:
        doc["ratios_note"] = "esmm was not among --models: no ratios"

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"training_{date}.json")
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    print(markdown_table(SUMMARY_HEADER, summary_rows(doc)))
    m = doc["machine"]
    print_table("benchmarks.train_bench", [
        ("results", os.path.abspath(path)),
        ("data", f"{args.data} ({doc['data_rows']['train']:,} train rows)"),
        ("batch size / steps", f"{args.batch_size} / {args.steps}"),
        ("machine", f"{m['cpu_model']}, {m['nproc']} CPUs, {m['mem_total_gb']} GB"),
        ("gpus", ", ".join(doc["gpus"]) or "none"),
        *([("autoheri search + retrain / esmm", f"{wall['ratio']:.2f}x (target <= 3x)")]
          if (wall := doc.get("autoheri_wall_to_esmm")) else []),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
