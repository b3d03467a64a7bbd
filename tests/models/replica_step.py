"""Run by ``test_distribute.py`` in its own process (logical devices must be set before
TensorFlow starts): one ``Trainer`` step on one replica and on two logical CPU replicas from the
same weights and global batch; prints the largest differences as JSON.

Usage: python tests/models/replica_step.py PROC MODEL OPTIMIZER [--unscaled]
(``--unscaled``: replicas do not weight their losses by their share of the rows, the defect the
weighting fixes; the test expects that to differ.)
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from models.baselines import CVRModel  # noqa: E402
from models.config import ModelConfig, TrainConfig  # noqa: E402
from models.data import batches  # noqa: E402
from models.trainer import Trainer  # noqa: E402

data, model_name, optimizer = sys.argv[1:4]
if "--unscaled" in sys.argv:
    CVRModel.replica_share = staticmethod(lambda labels: tf.constant(1.0))
model_config = ModelConfig(embedding_dim=4, tower_units=(8,))
train_config = TrainConfig(batch_size=999, optimizer=optimizer, lr_schedule="constant",
                           learning_rate=0.01)
one = Trainer(model_name, data, None, 0, model_config, train_config, progress=False)
two = Trainer(model_name, data, None, 0, model_config, train_config, progress=False,
              strategy=tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
one._build()
two._build()
for a, b in zip(one.model.weights, two.model.weights):
    b.assign(a.numpy())
start = [w.numpy() for w in one.model.weights]
x, y = next(iter(batches(one.train_ds, 999, shuffle=False)))
losses = [one.train_batch(x, y), two.train_batch(x, y)]


def largest(a, b):
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))


print(json.dumps({
    "replicas": two.strategy.num_replicas_in_sync, "losses": losses,
    "moved": largest([w.numpy() for w in one.model.weights], start),
    "weights": largest([w.numpy() for w in one.model.weights],
                       [w.numpy() for w in two.model.weights]),
    "optimizer": largest([v.numpy() for v in one.model.optimizer.variables],
                         [v.numpy() for v in two.model.optimizer.variables]),
    "optimizer_scale": max(float(np.max(np.abs(v.numpy())))
                           for v in one.model.optimizer.variables[1:])}))
