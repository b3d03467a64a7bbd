"""Serving asks ``preprocessing.device``: the exported ``predict`` instances (``KIND_GPU`` /
``KIND_CPU``), the ONNX Runtime providers of a GPU instance, and which tritonserver runs. No
server is started here."""

import dataclasses
import os
import re

import pytest

from preprocessing import device
from preprocessing.device import CPU_PROVIDER, CUDA_PROVIDER, KIND_CPU, KIND_GPU

WORKFLOW = "workflow"


def _answer(**kw) -> device.Accelerators:
    base = dict(gpus=1, gpu_source="fake", cudf=True, dask_cudf=True, tensorflow_gpus=None,
                triton_gpu_home="/opt/tritonserver", onnxruntime_cuda=False)
    return device.Accelerators(**{**base, **kw})


def _kinds(repo) -> dict:
    out = {}
    for step in ("preprocess", "predict", "calibrate"):
        text = open(os.path.join(repo, step, "config.pbtxt")).read()
        out[step] = re.findall(r"kind: (KIND_\w+)", text)
    return out


def test_the_exported_predict_instances_follow_the_decision(monkeypatch, tmp_path, tiny_run,
                                                            small_processed):
    import serving.export as ex
    from serving.settings import ExportSettings
    workflow = os.path.join(small_processed, WORKFLOW)
    monkeypatch.setattr(ex, "detect", lambda: _answer())  # a GPU machine with the NGC server
    ex.export(tiny_run, workflow, str(tmp_path / "gpu"), settings=ExportSettings(runtime="tf"))
    assert _kinds(tmp_path / "gpu") == {"preprocess": [KIND_CPU], "predict": [KIND_GPU],
                                        "calibrate": [KIND_CPU]}
    monkeypatch.setattr(ex, "detect", lambda: _answer(gpus=0))
    ex.export(tiny_run, workflow, str(tmp_path / "cpu"), settings=ExportSettings(runtime="tf"))
    assert _kinds(tmp_path / "cpu") == {s: [KIND_CPU] for s in ("preprocess", "predict",
                                                                 "calibrate")}
    # the same files but for the kind: nothing else of the export depends on the decision
    for step in ("preprocess", "predict", "calibrate", "extcvr"):
        a = open(tmp_path / "gpu" / step / "config.pbtxt").read()
        b = open(tmp_path / "cpu" / step / "config.pbtxt").read()
        assert a.replace(KIND_GPU, KIND_CPU) == b, step


def test_the_instance_kind_can_be_given_and_ngc_defaults_to_the_gpu(monkeypatch):
    import serving.export as ex
    monkeypatch.setattr(ex, "detect", lambda: _answer(gpus=0))
    assert ex.resolve_instance_kind(None, "cpu") == KIND_CPU
    assert ex.resolve_instance_kind("auto", "ngc") == KIND_GPU
    assert ex.resolve_instance_kind(KIND_GPU, "cpu") == KIND_GPU
    assert ex.resolve_instance_kind(KIND_CPU, "ngc") == KIND_CPU
    with pytest.raises(ValueError, match="instance-kind"):
        ex.resolve_instance_kind("KIND_TPU", "cpu")


def test_this_machine_exports_kind_cpu_python_configs_as_before():
    import serving.export as ex
    assert device.detect().triton_kind == KIND_CPU  # no GPU here
    text = ex._python_config("predict", 8, [ex._tensor("a", "int64", [1])],
                             [ex._tensor("pctr", "float32", [1])], 2, 100)
    assert text.endswith("dynamic_batching { max_queue_delay_microseconds: 100 }\n"
                         "instance_group [ { count: 2 kind: KIND_CPU } ]\n")


def test_a_gpu_predict_instance_asks_for_the_cuda_provider_on_its_device(monkeypatch,
                                                                        exported):
    import serving.onnx_export
    from serving.steps import PredictStep
    seen = []

    class Recorder:
        def __init__(self, path, threads=1, providers=None, outputs=None):
            seen.append(providers)

    monkeypatch.setattr(serving.onnx_export, "OnnxModel", Recorder)
    version = os.path.join(exported, "predict", "1")
    monkeypatch.setattr(device, "detect", lambda: _answer(onnxruntime_cuda=True))
    PredictStep(version, gpu=1)
    PredictStep(version)  # a KIND_CPU instance, or an in-process call
    monkeypatch.setattr(device, "detect", lambda: _answer(onnxruntime_cuda=False))
    PredictStep(version, gpu=0)  # onnxruntime without CUDA: the CPU provider
    assert seen == [[(CUDA_PROVIDER, {"device_id": 1}), CPU_PROVIDER], [CPU_PROVIDER],
                    [CPU_PROVIDER]]


def test_the_server_is_the_gpu_build_when_the_decision_is_kind_gpu(monkeypatch, tmp_path):
    import serving.serve as serve
    home = tmp_path / "tritonserver"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "tritonserver").write_text("#!/bin/sh\n")
    (home / "bin" / "tritonserver").chmod(0o755)
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setattr(serve, "detect", lambda: _answer(triton_gpu_home=str(home)))
    server = serve.TritonServer(str(repo))
    cmd = server.command()
    assert server.gpu_build and cmd[0] == str(home / "bin" / "tritonserver")
    assert f"--backend-directory={home / 'backends'}" in cmd
    assert "nvidia_pytriton.libs" not in serve.server_env(True).get("LD_LIBRARY_PATH", "")
    monkeypatch.setattr(serve, "detect", lambda: dataclasses.replace(_answer(), gpus=0))
    monkeypatch.setattr(serve, "triton_home", lambda: str(tmp_path / "wheel"))
    cmd = serve.TritonServer(str(repo)).command()
    assert cmd[0] == str(tmp_path / "wheel" / "bin" / "tritonserver")
    assert "nvidia_pytriton.libs" in serve.server_env(False)["LD_LIBRARY_PATH"]
