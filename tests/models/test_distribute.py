"""Training on several replicas: one step on two logical CPU replicas equals one step on one
replica with the same global batch (weights and optimizer moments), and the check fails without
the per-replica loss weighting (the defect: N replicas, N times the gradient)."""

import json
import os
import subprocess
import sys

import pytest

from models.distribute import replica_slice

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "replica_step.py")
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_step.py")


def _run(small_processed, model, optimizer, *extra):
    out = subprocess.run([sys.executable, SCRIPT, small_processed, model, optimizer, *extra],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model, optimizer", [("esmm", "lazy_adam"), ("mmoe", "adam")])
def test_two_replicas_take_the_step_one_replica_takes(small_processed, model, optimizer):
    result = _run(small_processed, model, optimizer)
    assert result["replicas"] == 2 and result["moved"] > 1e-3
    assert result["losses"][0] == pytest.approx(result["losses"][1], rel=1e-5)
    assert result["weights"] < 1e-5
    assert result["optimizer"] < 1e-5 * max(1.0, result["optimizer_scale"])


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_over_loopback_take_the_step_one_worker_takes(small_processed):
    cluster = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    procs = []
    for index in (1, 0):
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([sys.executable, WORKER, small_processed], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    result = json.loads(outs[1][0].strip().splitlines()[-1])  # the chief's
    assert result["multi_worker"] and result["workers"] == 2 and result["replicas"] == 2
    assert result["moved"] > 1e-3
    assert result["losses"][0] == pytest.approx(result["losses"][1], rel=1e-5)
    assert result["weights"] < 1e-5


def test_tf_config_gives_the_worker_count_and_each_workers_run_directory(monkeypatch):
    from models.distribute import cluster_task, worker_run_dir
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster_task() == (0, 0) and worker_run_dir("RUN") == "RUN"
    config = {"cluster": {"worker": ["a:1", "b:1", "c:1"]}, "task": {"type": "worker", "index": 2}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert cluster_task() == (3, 2) and worker_run_dir("RUN") == os.path.join("RUN", "worker-2")
    config["task"]["index"] = 0
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert worker_run_dir("RUN") == "RUN"
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        cluster_task()


def test_unweighted_replica_losses_would_double_the_gradient(small_processed):
    result = _run(small_processed, "esmm", "adam", "--unscaled")
    assert result["optimizer"] > 1e-4 * result["optimizer_scale"]


def test_a_replica_slice_cuts_multihot_lists_at_its_rows():
    import numpy as np
    import tensorflow as tf
    x = {"tags__values": tf.constant([1, 2, 3, 4, 5, 6]),
         "tags__offsets": tf.constant([0, 2, 3, 3, 6], dtype=tf.int32),
         "age": tf.constant([10.0, 11.0, 12.0, 13.0])}
    y = {"click": tf.constant([1, 0, 1, 0])}
    parts = [replica_slice((x, y), r, 2) for r in range(2)]
    assert [p[0]["tags__values"].numpy().tolist() for p in parts] == [[1, 2, 3], [4, 5, 6]]
    assert [p[0]["tags__offsets"].numpy().tolist() for p in parts] == [[0, 2, 3], [0, 0, 3]]
    assert parts[1][0]["tags__offsets"].dtype == tf.int32
    assert np.concatenate([p[0]["age"].numpy() for p in parts]).tolist() == [10, 11, 12, 13]
    assert [p[1]["click"].numpy().tolist() for p in parts] == [[1, 0], [1, 0]]
    # an odd batch: the rows still cover it once
    odd = [replica_slice(({"age": x["age"][:3]}, {"click": y["click"][:3]}), r, 2)
           for r in range(2)]
    assert sum(len(p[1]["click"]) for p in odd) == 3
