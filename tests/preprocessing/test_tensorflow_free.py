"""``python -m preprocessing.run`` keeps TensorFlow out of its process, and its output is the
output of a process that has TensorFlow loaded."""

import glob
import os
import subprocess
import sys

import pandas as pd

from preprocessing.tensorflow_free import ENV_FLAG, keep_tensorflow_out
from tests.conftest import REPO_ROOT

RUN_AS_COMMAND = """
import runpy, sys
sys.argv = ["preprocessing.run", "--input", sys.argv[1], "--out", sys.argv[2], "--no-progress"]
try:
    runpy.run_module("preprocessing.run", run_name="__main__")
except SystemExit as e:
    assert e.code == 0, e.code
print("TENSORFLOW_IMPORTED", sys.modules.get("tensorflow") is not None)
"""


def test_the_command_never_imports_tensorflow_and_writes_the_same_data(small_generated,
                                                                       small_processed,
                                                                       tmp_path):
    out = str(tmp_path / "processed")
    env = {k: v for k, v in os.environ.items() if k != ENV_FLAG}
    done = subprocess.run([sys.executable, "-c", RUN_AS_COMMAND, small_generated, out],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TENSORFLOW_IMPORTED False" in done.stdout
    assert "Tensorflow dtype mappings did not load" not in done.stderr
    # preprocessing.device decided the backend without TensorFlow, and said so once
    assert done.stderr.count("extcvr devices:") == 1, done.stderr[-3000:]
    assert "tensorflow=not loaded" in done.stderr
    for split in ("train", "valid", "test"):
        a = sorted(glob.glob(os.path.join(small_processed, split, "*.parquet")))
        b = sorted(glob.glob(os.path.join(out, split, "*.parquet")))
        assert [os.path.basename(p) for p in a] == [os.path.basename(p) for p in b]
        for pa_, pb in zip(a, b):
            pd.testing.assert_frame_equal(pd.read_parquet(pa_), pd.read_parquet(pb))
    vocab = sorted(os.listdir(os.path.join(small_processed, "workflow", "categories")))
    assert vocab == sorted(os.listdir(os.path.join(out, "workflow", "categories")))
    for name in vocab:
        pd.testing.assert_frame_equal(
            pd.read_parquet(os.path.join(small_processed, "workflow", "categories", name)),
            pd.read_parquet(os.path.join(out, "workflow", "categories", name)))


def test_a_process_with_tensorflow_or_the_flag_is_left_alone(monkeypatch):
    sentinel = object()
    monkeypatch.setitem(sys.modules, "tensorflow", sentinel)
    assert keep_tensorflow_out() is False and sys.modules["tensorflow"] is sentinel
    monkeypatch.delitem(sys.modules, "tensorflow")
    monkeypatch.setenv(ENV_FLAG, "1")
    assert keep_tensorflow_out() is False and "tensorflow" not in sys.modules
