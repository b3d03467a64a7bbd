"""Training on several replicas: which ``tf.distribute`` strategy, and how one global batch is
split across its replicas.

The loader yields one global batch per step (``TrainConfig.batch_size`` rows). With N replicas,
:func:`replica_slice` gives replica ``r`` rows ``[n*r/N, n*(r+1)/N)`` of it (the multi-hot
``name__values`` / ``name__offsets`` pairs cut at the same rows), and every model scales its
loss by its share of the global rows (``models.baselines.CVRModel.replica_share``), so that the
gradients the strategy sums over the replicas are those of the global batch's mean loss: one
step on N replicas moves the weights as one step on one replica with the same global batch
(``tests/models/test_distribute.py``, two logical CPU devices). The learning rate needs no
scaling.

Which strategy (:func:`choose_strategy`): ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG``
names a cluster of several workers (one process per machine; every worker reads the same global
batches in the same order and keeps its own replicas' rows of each, so the result is one
worker's up to float tolerance: ``tests/models/test_distribute.py`` runs two workers over
loopback), else ``MirroredStrategy`` over the GPUs when TensorFlow sees several
(``preprocessing.device``), else the default strategy. Every worker runs the whole loop,
checkpoints included (as ``tf.distribute`` requires); only the chief (task 0) writes the run
directory, worker ``i`` writes ``RUN/worker-i`` (:func:`worker_run_dir`).

Launch on N machines (same code and data path on each; ports open between them)::

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": I}}' \
        python -m models.train --model esmm --data PROC --out RUN    # on machine I
"""

from __future__ import annotations

import json
import os
from typing import Dict, Tuple

Batch = Tuple[Dict[str, object], Dict[str, object]]
_STRATEGY = None


def cluster_task() -> Tuple[int, int]:
    """``(workers, index)`` from ``TF_CONFIG`` (``(0, 0)`` without one)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0, 0
    try:
        config = json.loads(raw)
        workers = len(config["cluster"].get("worker", [])) + len(config["cluster"].get("chief", []))
        task = config["task"]
        index = int(task["index"]) + (len(config["cluster"].get("chief", []))
                                      if task["type"] == "worker" else 0)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG: expected {{'cluster': {{'worker': [...]}}, 'task': "
                         f"{{'type': 'worker', 'index': I}}}}, got {raw!r} ({e})") from None
    return workers, index


def choose_strategy():
    """The strategy this process trains under (see the module docstring); the multi-worker one
    is created once per process (TensorFlow wants it before any other op)."""
    import tensorflow as tf
    global _STRATEGY
    if _STRATEGY is not None:
        return _STRATEGY
    if cluster_task()[0] > 1:
        _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
        return _STRATEGY

    from preprocessing.device import detect
    if (detect().tensorflow_gpus or 0) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def worker_run_dir(run_dir: str) -> str:
    """Where this worker writes: ``run_dir`` for the chief (or without a cluster),
    ``run_dir/worker-<index>`` for the others."""
    workers, index = cluster_task()
    return run_dir if workers <= 1 or index == 0 else os.path.join(run_dir, f"worker-{index}")


def replica_slice(batch: Batch, replica, replicas: int) -> Batch:
    """Replica ``replica``'s contiguous rows of a global batch ``(features, labels)`` (of
    ``replicas``); multi-hot ``__values`` are cut where their ``__offsets`` say and the offsets
    rebased to 0. ``replica`` may be a tensor (the replica context's id)."""
    import tensorflow as tf
    x, y = batch
    n = tf.shape(tf.reshape(next(iter(y.values())), [-1]), out_type=tf.int64)[0]
    replica = tf.cast(replica, tf.int64)
    start, end = n * replica // replicas, n * (replica + 1) // replicas

    def rows(t):
        return t[start:end]

    out = {}
    for name, value in x.items():
        if name.endswith("__offsets"):
            continue
        if name.endswith("__values"):
            base = name[:-len("__values")]
            offsets = tf.cast(tf.reshape(x[f"{base}__offsets"], [-1]), tf.int64)
            lo, hi = offsets[start], offsets[end]
            out[name] = value[lo:hi]
            out[f"{base}__offsets"] = tf.cast(offsets[start:end + 1] - lo,
                                              x[f"{base}__offsets"].dtype)
        else:
            out[name] = rows(value)
    return out, {k: rows(v) for k, v in y.items()}


def distribute_batch(strategy, batch: Batch):
    """The global batch as per-replica values: each replica gets its :func:`replica_slice`."""
    replicas = strategy.num_replicas_in_sync
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: replica_slice(batch, ctx.replica_id_in_sync_group, replicas))
