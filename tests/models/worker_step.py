"""Run by ``test_distribute.py`` as each worker of a two-worker cluster over loopback (its
``TF_CONFIG`` set by the test): one ``Trainer`` step under ``MultiWorkerMirroredStrategy`` on
the global batch every worker reads; the chief then takes the same step on one replica from
the same starting weights and prints the largest differences as JSON.

Usage: TF_CONFIG=... python tests/models/worker_step.py PROC
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from models.distribute import choose_strategy, cluster_task  # noqa: E402

strategy = choose_strategy()  # before any other TensorFlow op

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models.config import ModelConfig, TrainConfig  # noqa: E402
from models.data import batches  # noqa: E402
from models.trainer import Trainer  # noqa: E402

data = sys.argv[1]
model_config = ModelConfig(embedding_dim=4, tower_units=(8,))
train_config = TrainConfig(batch_size=999, optimizer="adam", lr_schedule="constant",
                           learning_rate=0.01)
many = Trainer("esmm", data, None, 0, model_config, train_config, progress=False)
many._build()
start = [w.numpy() for w in many.model.weights]
x, y = next(iter(batches(many.train_ds, 999, shuffle=False)))
loss_many = many.train_batch(x, y)
workers, index = cluster_task()
if index == 0:
    one = Trainer("esmm", data, None, 0, model_config, train_config, progress=False,
                  strategy=tf.distribute.get_strategy())
    one._build()
    for w, s in zip(one.model.weights, start):
        w.assign(s)
    loss_one = one.train_batch(x, y)

    def largest(a, b):
        return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))
    print(json.dumps({
        "multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
        "workers": workers,
        "replicas": strategy.num_replicas_in_sync, "losses": [loss_many, loss_one],
        "moved": largest([w.numpy() for w in one.model.weights], start),
        "weights": largest([w.numpy() for w in one.model.weights],
                           [w.numpy() for w in many.model.weights])}))
