"""LazyAdam: only the rows of a sparse gradient move; dense gradients get plain Adam; the
learning-rate schedules."""

import numpy as np
import pytest
import tensorflow as tf

from models.config import TrainConfig
from models.optimizers import (LazyAdam, learning_rate_schedule, make_optimizer,
                               sparse_learning_rate)


def _numpy_adam_rows(w, m, v, g, t, lr=0.01, b1=0.9, b2=0.999, eps=1e-8):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    return w - alpha * m / (np.sqrt(v) + eps), m, v


def test_lazy_adam_moves_only_the_rows_in_the_sparse_gradient_and_matches_adam_on_them():
    rng = np.random.default_rng(0)
    table0 = rng.normal(size=(10, 3)).astype(np.float32)
    table = tf.Variable(table0)
    opt = LazyAdam(0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    w, m, v = table0.astype(np.float64), np.zeros((10, 3)), np.zeros((10, 3))
    for t, rows in enumerate(([1, 4, 4, 7], [4, 2]), start=1):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(table, rows) ** 2)
        grad = tape.gradient(loss, table)
        assert isinstance(grad, tf.IndexedSlices)
        opt.apply_gradients([(grad, table)])
        dense = np.zeros((10, 3))
        np.add.at(dense, rows, 2 * w[rows])  # duplicate ids sum, as the optimizer de-duplicates
        touched = sorted(set(rows))
        w[touched], m[touched], v[touched] = _numpy_adam_rows(
            w[touched], m[touched], v[touched], dense[touched], t)
    np.testing.assert_allclose(table.numpy(), w, rtol=1e-5, atol=1e-6)
    untouched = [0, 3, 5, 6, 8, 9]
    np.testing.assert_array_equal(table.numpy()[untouched], table0[untouched])
    # Row 1 was in step 1 only: Keras Adam would keep moving it by its momentum in step 2.
    adam_table = tf.Variable(table0)
    adam = tf.keras.optimizers.Adam(0.01, epsilon=1e-8)
    for rows in ([1, 4, 4, 7], [4, 2]):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(adam_table, rows) ** 2)
        adam.apply_gradients([(tape.gradient(loss, adam_table), adam_table)])
    assert not np.allclose(adam_table.numpy()[1], table.numpy()[1])


def test_lazy_adam_equals_keras_adam_on_dense_gradients():
    rng = np.random.default_rng(1)
    init = rng.normal(size=(4, 2)).astype(np.float32)
    a, b = tf.Variable(init), tf.Variable(init)
    lazy, adam = LazyAdam(0.05, epsilon=1e-8), tf.keras.optimizers.Adam(0.05, epsilon=1e-8)
    for _ in range(3):
        for var, opt in ((a, lazy), (b, adam)):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.sin(var) * var)
            opt.apply_gradients([(tape.gradient(loss, var), var)])
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_make_optimizer_names_and_unknown_name_is_a_clear_error():
    assert isinstance(make_optimizer("lazy_adam", 1e-3), LazyAdam)
    adam = make_optimizer("adam", 1e-3)
    assert isinstance(adam, tf.keras.optimizers.Adam) and not isinstance(adam, LazyAdam)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        make_optimizer("sgd", 1e-3)


def _sparse_step(opt, var):
    grad = tf.IndexedSlices(tf.ones([1, 2]), tf.constant([1]), tf.constant([4, 2]))
    opt.apply_gradients([(grad, var)])


def test_cosine_schedule_decays_the_rate_along_a_half_cosine_to_zero_at_the_planned_steps():
    total = 8
    opt = make_optimizer("lazy_adam", learning_rate_schedule("cosine", 0.1, total))
    var = tf.Variable(tf.zeros([4, 2]))
    for k in range(total):
        _sparse_step(opt, var)  # the update of step k uses the rate at k
        np.testing.assert_allclose(float(opt.learning_rate),
                                   0.05 * (1 + np.cos(np.pi * k / total)), rtol=1e-5)
    before = var.numpy().copy()
    _sparse_step(opt, var)
    assert float(opt.learning_rate) == 0.0
    np.testing.assert_array_equal(var.numpy(), before)  # past the plan the rate stays 0


def test_a_restored_optimizer_continues_the_schedule_where_the_checkpoint_left_it(tmp_path):
    var = tf.Variable(tf.zeros([4, 2]))
    opt = make_optimizer("lazy_adam", learning_rate_schedule("cosine", 0.1, 10))
    for _ in range(4):
        _sparse_step(opt, var)
    path = tf.train.Checkpoint(optimizer=opt, var=var).write(str(tmp_path / "ckpt"))
    var2 = tf.Variable(tf.zeros([4, 2]))
    opt2 = make_optimizer("lazy_adam", learning_rate_schedule("cosine", 0.1, 10))
    opt2.build([var2])
    tf.train.Checkpoint(optimizer=opt2, var=var2).read(path).assert_consumed()
    _sparse_step(opt2, var2)
    np.testing.assert_allclose(float(opt2.learning_rate), 0.05 * (1 + np.cos(np.pi * 4 / 10)),
                               rtol=1e-5)


def test_constant_schedule_is_the_rate_and_unknown_schedules_are_clear_errors():
    assert learning_rate_schedule("constant", 0.01, 5) == 0.01
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        learning_rate_schedule("step", 0.01, 5)
    with pytest.raises(ValueError, match="total_steps >= 1"):
        learning_rate_schedule("cosine", 0.01, 0)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")


def test_cosine_dense_decays_dense_weights_to_zero_while_embedding_rows_keep_the_peak_rate():
    total = 4
    opt = make_optimizer("lazy_adam", learning_rate_schedule("cosine_dense", 0.1, total),
                         sparse_learning_rate("cosine_dense", 0.1))
    peak = make_optimizer("lazy_adam", 0.1)  # the rows' reference: a constant rate
    table, table_ref = tf.Variable(tf.zeros([4, 2])), tf.Variable(tf.zeros([4, 2]))
    dense = tf.Variable(tf.ones([3]))
    row_grad = tf.IndexedSlices(tf.ones([1, 2]), tf.constant([1]), tf.constant([4, 2]))
    for _ in range(total + 2):
        before = dense.numpy().copy()
        opt.apply_gradients([(row_grad, table), (tf.ones([3]), dense)])
        _sparse_step(peak, table_ref)
    np.testing.assert_allclose(table.numpy(), table_ref.numpy(), rtol=1e-6)
    assert float(opt.learning_rate) == 0.0
    np.testing.assert_array_equal(dense.numpy(), before)  # the dense step past the plan is 0
    assert table.numpy()[1, 0] < -0.5  # the row kept moving by ~0.1 a step


def test_sparse_rate_is_set_only_by_cosine_dense_and_needs_lazy_adam():
    assert sparse_learning_rate("cosine_dense", 0.01) == 0.01
    assert sparse_learning_rate("cosine", 0.01) is None
    assert sparse_learning_rate("constant", 0.01) is None
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        sparse_learning_rate("step", 0.01)
    with pytest.raises(ValueError, match="needs optimizer lazy_adam"):
        make_optimizer("adam", 0.01, 0.01)
    with pytest.raises(ValueError, match="sparse_learning_rate must be > 0"):
        LazyAdam(0.01, sparse_learning_rate=0.0)
    with pytest.raises(ValueError, match="unless optimizer is lazy_adam"):
        TrainConfig(lr_schedule="cosine_dense", optimizer="adam")
    assert TrainConfig(lr_schedule="cosine_dense").optimizer == "lazy_adam"
