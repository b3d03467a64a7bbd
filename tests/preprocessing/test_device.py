"""``preprocessing.device``: one decision per process from cheap probes, logged once, with
``EXTCVR_FORCE_CPU`` forcing the CPU path; preprocessing asks it and never loads TensorFlow."""

import logging
import os
import subprocess
import sys

import pytest

from preprocessing import device
from preprocessing.device import (CPU_PROVIDER, CUDA_PROVIDER, ENV_FORCE_CPU, KIND_CPU, KIND_GPU,
                                  Accelerators)
from tests.conftest import REPO_ROOT

GPU_BOX = dict(gpus=2, cudf=True, dask_cudf=True, tensorflow_gpus=2,
               triton_home="/opt/tritonserver", ort_cuda=True)


@pytest.fixture
def fake(monkeypatch):
    """Replace the probes with fixed answers; ``fake(**kw)`` sets them (GPU box by default)."""
    monkeypatch.delenv(ENV_FORCE_CPU, raising=False)
    # _hide_gpus writes CUDA_VISIBLE_DEVICES: let monkeypatch restore it
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "0,1"))
    hidden = []
    monkeypatch.setattr(device, "_hide_gpus", lambda: hidden.append(True))
    device.reset()

    def set_probes(**kw):
        p = {**GPU_BOX, **kw}
        installed = {"cudf": p["cudf"], "dask_cudf": p["dask_cudf"], "onnxruntime": True}
        monkeypatch.setattr(device, "_probe_gpus", lambda: (p["gpus"], "fake probe"))
        monkeypatch.setattr(device, "_installed", lambda name: installed.get(name, False))
        monkeypatch.setattr(device, "_tensorflow_gpus", lambda: p["tensorflow_gpus"])
        monkeypatch.setattr(device, "_triton_gpu_home", lambda: p["triton_home"])
        monkeypatch.setattr(device, "_onnxruntime_cuda", lambda: p["ort_cuda"])
        device.reset()
        return hidden

    yield set_probes
    device.reset()


def test_a_gpu_machine_gets_cudf_gpu_tensorflow_kind_gpu_and_the_cuda_provider(fake):
    fake()
    d = device.probe()
    assert d.dataframes == "cudf" and d.dataset_cpu is False
    assert d.tensorflow == "GPU" and d.loader_cpu is False
    assert d.triton_kind == KIND_GPU and d.onnx_provider == CUDA_PROVIDER
    assert d.onnx_providers(1) == [(CUDA_PROVIDER, {"device_id": 1}), CPU_PROVIDER]
    assert d.onnx_providers(None) == [CPU_PROVIDER]  # a KIND_CPU instance stays on the CPU
    assert "dataframes=cudf" in d.summary() and "triton=KIND_GPU" in d.summary()


@pytest.mark.parametrize("missing, reason", [("cudf", "cuDF not installed"),
                                             ("dask_cudf", "dask-cuDF not installed")])
def test_without_cudf_or_dask_cudf_the_dataframes_are_pandas(fake, missing, reason):
    fake(**{missing: False})
    d = device.probe()
    assert d.dataframes == "pandas" and d.dataset_cpu is True
    assert d.loader_cpu is True  # the loader's GPU batches need cuDF too
    assert d.triton_kind == KIND_GPU  # the rest still uses the GPU
    assert f"dataframes=pandas ({reason})" in d.summary()


def test_no_gpu_means_cpu_everywhere_even_with_the_gpu_packages(fake):
    fake(gpus=0, tensorflow_gpus=0)
    d = device.probe()
    assert (d.dataframes, d.tensorflow, d.triton_kind, d.onnx_provider) == (
        "pandas", "CPU", KIND_CPU, CPU_PROVIDER)
    assert d.onnx_providers(0) == [CPU_PROVIDER]


def test_a_gpu_without_a_gpu_tritonserver_exports_kind_cpu(fake):
    fake(triton_home=None)
    d = device.probe()
    assert d.triton_kind == KIND_CPU and "no GPU build of tritonserver" in d.reasons()["triton"]
    assert d.dataframes == "cudf"


def test_tensorflow_not_loaded_is_reported_and_the_loader_stays_on_the_cpu(fake):
    fake(tensorflow_gpus=None)
    d = device.probe()
    assert d.tensorflow == "not loaded" and d.loader_cpu is True and d.dataframes == "cudf"


def test_force_cpu_overrides_every_probe_and_hides_the_gpus(fake, monkeypatch):
    hidden = fake()
    monkeypatch.setenv(ENV_FORCE_CPU, "1")
    d = device.detect()
    assert hidden == [True]
    assert d.forced_cpu and d.gpus == 0 and d.tensorflow_gpus == 0
    assert (d.dataframes, d.dataset_cpu, d.loader_cpu, d.triton_kind, d.onnx_provider) == (
        "pandas", True, True, KIND_CPU, CPU_PROVIDER)
    assert f"{ENV_FORCE_CPU}=1" in d.summary()


def test_hiding_the_gpus_sets_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # not loaded: nothing else to tell
    device._hide_gpus()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "-1"


@pytest.mark.parametrize("value, limit", [(None, None), ("", 0), ("-1", 0), ("0", 1),
                                          ("0,1", 2), ("1,-1,0", 1), ("GPU-abc,MIG-x", 2)])
def test_cuda_visible_devices_limits_the_gpus(monkeypatch, value, limit):
    if value is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert device._visible_limit() == limit
    if limit == 0:
        assert device._probe_gpus()[0] == 0


def test_the_probes_import_neither_tensorflow_nor_cudf():
    code = ("import sys; from preprocessing import device; d = device.detect(); "
            "print(sorted(m for m in ('tensorflow', 'cudf', 'onnxruntime', 'nvtabular') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_the_decision_is_cached_and_logged_once(fake, caplog):
    fake()
    caplog.set_level(logging.INFO, logger="extcvr.devices")
    first = device.detect()
    assert device.detect() is first and device.detect() is first
    lines = [r.getMessage() for r in caplog.records if r.name == "extcvr.devices"]
    assert lines == [first.summary()]


def test_a_process_logs_the_line_once_without_any_logging_set_up():
    code = ("from preprocessing import device\n"
            "for _ in range(3):\n"
            "    device.detect()\n")
    env = {k: v for k, v in os.environ.items() if k != ENV_FORCE_CPU}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.count("extcvr devices:") == 1, out.stderr


def test_the_cli_prints_the_decision_as_json():
    env = {**os.environ, ENV_FORCE_CPU: "1"}
    out = subprocess.run([sys.executable, "-m", "preprocessing.device", "--json"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    import json
    doc = json.loads(out.stdout)
    assert doc["forced_cpu"] is True and doc["triton_kind"] == KIND_CPU
    assert doc["dataframes"] == "pandas" and "extcvr devices:" not in out.stderr


def test_preprocessing_run_reads_with_the_decided_backend(fake, monkeypatch, small_generated,
                                                          tmp_path):
    """The same ``run`` with the GPU answer plugged in asks for cuDF partitions (stopped there:
    this machine has no cuDF)."""
    import preprocessing.run as run_module
    fake()
    seen = []

    class Stop(Exception):
        pass

    def reader(files, part_size, cpu, funnel=()):
        seen.append(cpu)
        raise Stop

    monkeypatch.setattr(run_module, "read_once_dataset", reader)
    with pytest.raises(Stop):
        run_module.run(small_generated, str(tmp_path / "out"), progress=False)
    assert seen == [False]
    assert not (tmp_path / "out").exists()


def test_accelerators_is_frozen():
    d = Accelerators(gpus=0, gpu_source="x", cudf=False, dask_cudf=False, tensorflow_gpus=None,
                     triton_gpu_home=None, onnxruntime_cuda=False)
    with pytest.raises(Exception):
        d.gpus = 1  # type: ignore[misc]
    assert d.to_dict()["reasons"]["dataframes"] == "no GPU, cuDF not installed"
