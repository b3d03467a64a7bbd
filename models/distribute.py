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

Which strategy (:func:`choose_strategy`): ``MirroredStrategy`` over the GPUs when TensorFlow
sees several (``preprocessing.device``), else the default strategy. Training on several
machines is not built yet (issue 35: ``MultiWorkerMirroredStrategy`` needs the loop's
checkpoints written by every worker).
"""

from __future__ import annotations

from typing import Dict, Tuple

Batch = Tuple[Dict[str, object], Dict[str, object]]


def choose_strategy():
    """The strategy this process trains under (see the module docstring)."""
    import tensorflow as tf

    from preprocessing.device import detect
    if (detect().tensorflow_gpus or 0) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


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
