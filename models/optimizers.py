"""Optimizers for models whose parameters are mostly embedding rows.

Keras' ``Adam`` treats a sparse gradient (``tf.IndexedSlices``, what an embedding lookup
produces) densely: every step it decays the first and second moments of *every* row of the
table and moves every row by its stale momentum, although a batch touches a few thousand of
the table's rows. On our models that update is 40% of a training step
(``benchmarks/train_profile.py``), and rows of ids absent from the batch keep drifting.

:class:`LazyAdam` updates only the rows in the batch (the moments and the variable), and is
exactly Adam on dense gradients. This is the update of TensorFlow Addons' ``LazyAdam`` and of
the sparse embedding optimizers in HugeCTR and TorchRec, written for the Keras 2.12 optimizer
API. It keeps Adam's slot variables, so checkpoints have the same layout.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from models.config import LR_SCHEDULE_NAMES, OPTIMIZER_NAMES


class LazyAdam(tf.keras.optimizers.Adam):
    """Adam whose sparse updates touch only the rows present in the gradient.

    For a row ``i`` in the batch, with the (de-duplicated) gradient row ``g_i``::

        m_i <- beta_1 * m_i + (1 - beta_1) * g_i
        v_i <- beta_2 * v_i + (1 - beta_2) * g_i**2
        w_i <- w_i - lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m_i / (sqrt(v_i) + eps)

    and rows outside the batch keep their ``w``, ``m`` and ``v``. Dense gradients get the plain
    Adam update (Kingma & Ba, 2015). ``amsgrad`` is not supported.

    ``sparse_learning_rate`` (a float), when given, is the ``lr`` of the row updates instead of
    ``learning_rate``: the dense weights can then follow a decaying schedule while the
    embedding rows keep a constant rate (the split of dense and sparse optimizers in HugeCTR
    and TorchRec).
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 name="LazyAdam", sparse_learning_rate=None, **kwargs):
        if kwargs.get("amsgrad"):
            raise ValueError("LazyAdam does not support amsgrad")
        if sparse_learning_rate is not None and not sparse_learning_rate > 0:
            raise ValueError(f"sparse_learning_rate must be > 0, got {sparse_learning_rate!r}")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, name=name, **kwargs)
        self.sparse_learning_rate = sparse_learning_rate

    def get_config(self):
        """The Keras optimizer config plus ``sparse_learning_rate``."""
        return {**super().get_config(), "sparse_learning_rate": self.sparse_learning_rate}

    def update_step(self, gradient, variable):
        """Apply one update; sparse gradients update only their rows."""
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate if self.sparse_learning_rate is None
                     else self.sparse_learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1.0 - tf.pow(beta_2, step)) / (1.0 - tf.pow(beta_1, step))
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]
        rows, grad = gradient.indices, gradient.values
        m_rows = beta_1 * tf.gather(m, rows) + (1.0 - beta_1) * grad
        v_rows = beta_2 * tf.gather(v, rows) + (1.0 - beta_2) * tf.square(grad)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon),
                                              rows))


def _check_schedule_name(name: str) -> None:
    if name not in LR_SCHEDULE_NAMES:
        raise ValueError(f"unknown lr_schedule {name!r}; known: {', '.join(LR_SCHEDULE_NAMES)}")


def learning_rate_schedule(name: str, learning_rate: float, total_steps: int):
    """The learning rate of a run's dense weights: the constant ``learning_rate``, or
    (``cosine``, ``cosine_dense``) a half cosine from ``learning_rate`` at step 0 to 0 at
    ``total_steps`` (Loshchilov & Hutter, ICLR 2017). :func:`sparse_learning_rate` says what
    the embedding rows get."""
    _check_schedule_name(name)
    if name == "constant":
        return learning_rate
    if total_steps < 1:
        raise ValueError(f"a cosine schedule needs total_steps >= 1, got {total_steps}")
    return tf.keras.optimizers.schedules.CosineDecay(learning_rate, total_steps, alpha=0.0)


def sparse_learning_rate(name: str, learning_rate: float) -> Optional[float]:
    """The constant rate of the embedding rows under schedule ``name`` (``cosine_dense``: the
    undecayed ``learning_rate``), or None where the rows follow the dense schedule."""
    _check_schedule_name(name)
    return learning_rate if name == "cosine_dense" else None


def make_optimizer(name: str, learning_rate,
                   sparse_rate: Optional[float] = None) -> tf.keras.optimizers.Optimizer:
    """The training optimizer ``name`` (one of :data:`OPTIMIZER_NAMES`) with the ESMM paper's
    Adam constants (beta 0.9 / 0.999, epsilon 1e-8). ``learning_rate`` is a float or a Keras
    schedule (:func:`learning_rate_schedule`); ``sparse_rate`` (``lazy_adam`` only) is the
    constant rate of the embedding rows (:func:`sparse_learning_rate`)."""
    kwargs = dict(beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    if name == "adam":
        if sparse_rate is not None:
            raise ValueError("a separate sparse learning rate needs optimizer lazy_adam")
        return tf.keras.optimizers.Adam(learning_rate, **kwargs)
    if name == "lazy_adam":
        return LazyAdam(learning_rate, sparse_learning_rate=sparse_rate, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZER_NAMES)}")
