"""The one place that decides CPU or GPU for every stage, once per process, logged once.

Every stage asks :func:`detect` and runs the same code with the answer plugged in:

- ``preprocessing.run`` (and ``preprocessing.read_once``): cuDF / dask-cuDF partitions
  (``Accelerators.dataframes == "cudf"``, merlin ``Dataset(cpu=False)``) or pandas / dask;
- ``models.data`` (the merlin TensorFlow loader; ``models.train``, ``models.pseudolabel``,
  the training benchmarks): batches on the GPU when cuDF is there *and* TensorFlow sees a GPU
  (``loader_cpu``); ``models.train`` builds under ``MirroredStrategy`` with several GPUs
  (``tensorflow_gpus``);
- ``serving.export``: the ``predict`` step's Triton ``instance_group`` kind (``triton_kind``:
  ``KIND_GPU`` needs a GPU and a GPU build of ``tritonserver``, e.g. ``/opt/tritonserver`` of
  the NGC containers); ``serving.steps.PredictStep`` then picks the ONNX Runtime execution
  provider from the kind of the instance Triton gave it (``onnx_providers``);
- ``serving.serve``: that GPU ``tritonserver`` when ``triton_kind`` is ``KIND_GPU``, else the
  CPU build of the ``nvidia-pytriton`` wheel;
- ``benchmarks.*``: every results JSON records the decision (``machine.devices``).

The probes are cheap and import nothing heavy: ``importlib.util.find_spec`` for cuDF,
dask-cuDF and ONNX Runtime (whose CUDA provider is a library file beside the package), device
files for the GPUs (``/proc/driver/nvidia/gpus``, ``/dev/nvidiaN``; ``nvidia-smi -L`` only when
neither exists and it is on the ``PATH``), ``CUDA_VISIBLE_DEVICES`` honoured. TensorFlow is
never imported here: its GPUs are counted only when the process has already imported it (the
training commands have; ``preprocessing.run`` keeps it out on purpose,
``preprocessing/tensorflow_free.py``), else ``tensorflow_gpus`` is None ("not loaded").

``EXTCVR_FORCE_CPU=1`` forces the CPU path everywhere (for debugging): no GPU is reported,
``CUDA_VISIBLE_DEVICES=-1`` is set for this process and its children, and TensorFlow, when
loaded, is told to see no GPU.

The answer is cached (one per "TensorFlow loaded or not" state of the process) and logged once
on the ``extcvr.devices`` logger at INFO, e.g.::

    extcvr devices: gpus=0 (no NVIDIA driver device and no nvidia-smi), dataframes=pandas (no
    GPU, cuDF not installed), tensorflow=not loaded (TensorFlow not imported by this process),
    triton=KIND_CPU (no GPU, no GPU build of tritonserver in /opt/tritonserver or
    $EXTCVR_TRITON_GPU_HOME), onnxruntime=CPUExecutionProvider (no GPU, onnxruntime without
    the CUDA provider)

(one line). ``python -m preprocessing.device [--json] [--tensorflow]`` prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple, Union

#: Set to 1 (or true / yes) to force the CPU path in every stage.
ENV_FORCE_CPU = "EXTCVR_FORCE_CPU"
#: Where a GPU build of ``tritonserver`` lives (the NGC containers' default when unset).
ENV_TRITON_GPU_HOME = "EXTCVR_TRITON_GPU_HOME"
NGC_TRITON_HOME = "/opt/tritonserver"
KIND_CPU, KIND_GPU = "KIND_CPU", "KIND_GPU"
CPU_PROVIDER, CUDA_PROVIDER = "CPUExecutionProvider", "CUDAExecutionProvider"
#: ONNX Runtime's CUDA execution provider (in ``onnxruntime-gpu`` only), beside the package.
ORT_CUDA_LIBRARY = os.path.join("capi", "libonnxruntime_providers_cuda.so")

log = logging.getLogger("extcvr.devices")
Provider = Union[str, Tuple[str, Dict[str, object]]]


@dataclasses.dataclass(frozen=True)
class Accelerators:
    """What this process may use, and the decision of each stage (the properties).

    Attributes:
        gpus: NVIDIA GPUs visible to this process (0 when forced to the CPU).
        gpu_source: how ``gpus`` was found (or why it is 0).
        cudf: cuDF is installed.
        dask_cudf: dask-cuDF is installed (NVTabular's GPU path needs both).
        tensorflow_gpus: GPUs TensorFlow sees; None when TensorFlow is not loaded in this
            process (not probed: importing it is not this module's business).
        triton_gpu_home: the folder of a GPU build of ``tritonserver`` (``bin/tritonserver``,
            ``backends/``), or None.
        onnxruntime_cuda: the installed ONNX Runtime has the CUDA execution provider.
        forced_cpu: ``EXTCVR_FORCE_CPU`` is set.
    """

    gpus: int
    gpu_source: str
    cudf: bool
    dask_cudf: bool
    tensorflow_gpus: Optional[int]
    triton_gpu_home: Optional[str]
    onnxruntime_cuda: bool
    forced_cpu: bool = False

    # -- decisions ------------------------------------------------------------------------------
    @property
    def dataframes(self) -> str:
        """``"cudf"`` (NVTabular on the GPU) or ``"pandas"``."""
        return "cudf" if self.gpus and self.cudf and self.dask_cudf else "pandas"

    @property
    def dataset_cpu(self) -> bool:
        """The ``cpu=`` of the merlin ``Dataset`` that preprocessing reads."""
        return self.dataframes != "cudf"

    @property
    def tensorflow(self) -> str:
        """``"GPU"``, ``"CPU"``, or ``"not loaded"`` (TensorFlow not imported here)."""
        if self.tensorflow_gpus is None:
            return "not loaded"
        return "GPU" if self.tensorflow_gpus else "CPU"

    @property
    def loader_cpu(self) -> bool:
        """The ``cpu=`` of the merlin ``Dataset`` that the TensorFlow loader reads: GPU batches
        need cuDF and a GPU that TensorFlow sees."""
        return not (self.dataframes == "cudf" and self.tensorflow_gpus)

    @property
    def triton_kind(self) -> str:
        """The ``instance_group`` kind of the ``predict`` step in an exported repository."""
        return KIND_GPU if self.gpus and self.triton_gpu_home else KIND_CPU

    @property
    def onnx_provider(self) -> str:
        """The ONNX Runtime execution provider of a GPU ``predict`` instance."""
        return CUDA_PROVIDER if self.gpus and self.onnxruntime_cuda else CPU_PROVIDER

    def onnx_providers(self, gpu: Optional[int] = None) -> List[Provider]:
        """The ``providers`` of an ONNX Runtime session: on GPU ``gpu`` (the device of a
        ``KIND_GPU`` Triton instance) CUDA first when available, CPU otherwise (and always
        for ``gpu=None``, a ``KIND_CPU`` instance)."""
        if gpu is not None and self.onnx_provider == CUDA_PROVIDER:
            return [(CUDA_PROVIDER, {"device_id": int(gpu)}), CPU_PROVIDER]
        return [CPU_PROVIDER]

    # -- reporting ------------------------------------------------------------------------------
    def reasons(self) -> Dict[str, str]:
        """Why each decision is what it is: what is missing for the GPU path, or what it runs
        on."""
        no_gpu = ["EXTCVR_FORCE_CPU=1" if self.forced_cpu else "no GPU"] if not self.gpus else []

        def why(missing: List[str], present: str) -> str:
            return ", ".join(no_gpu + missing) if (no_gpu or missing) else present

        frames = why(["cuDF not installed"] if not self.cudf else
                     ["dask-cuDF not installed"] if not self.dask_cudf else [],
                     f"{self.gpus} GPU(s)")
        if self.tensorflow_gpus is None:
            tf = "TensorFlow not imported by this process"
        else:
            tf = why([] if self.tensorflow_gpus else ["TensorFlow sees no GPU"],
                     f"TensorFlow sees {self.tensorflow_gpus} GPU(s)")
        triton = why([] if self.triton_gpu_home else
                     [f"no GPU build of tritonserver in {NGC_TRITON_HOME} or "
                      f"${ENV_TRITON_GPU_HOME}"], f"tritonserver of {self.triton_gpu_home}")
        ort = why([] if self.onnxruntime_cuda else
                  ["onnxruntime without the CUDA provider" if _installed("onnxruntime")
                   else "onnxruntime not installed"], "onnxruntime-gpu")
        return {"gpus": self.gpu_source, "dataframes": frames, "tensorflow": tf,
                "triton": triton, "onnxruntime": ort}

    def summary(self) -> str:
        """The one log line of the decision."""
        why = self.reasons()
        return ("extcvr devices: "
                f"gpus={self.gpus} ({why['gpus']}), "
                f"dataframes={self.dataframes} ({why['dataframes']}), "
                f"tensorflow={self.tensorflow} ({why['tensorflow']}), "
                f"triton={self.triton_kind} ({why['triton']}), "
                f"onnxruntime={self.onnx_provider} ({why['onnxruntime']})")

    def to_dict(self) -> Dict[str, object]:
        """The probes, the decisions and their reasons (what benchmark results record)."""
        return {**dataclasses.asdict(self), "dataframes": self.dataframes,
                "tensorflow": self.tensorflow, "loader_cpu": self.loader_cpu,
                "triton_kind": self.triton_kind, "onnx_provider": self.onnx_provider,
                "reasons": self.reasons()}


# -- probes (module functions so that tests can replace them) -----------------------------------
def force_cpu_requested() -> bool:
    """``EXTCVR_FORCE_CPU`` is set to something true."""
    return os.environ.get(ENV_FORCE_CPU, "").strip().lower() in ("1", "true", "yes", "on")


def _installed(name: str) -> bool:
    """The package is importable (found, not imported)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that fails, or sys.modules[name] is None
        return False


def _visible_limit() -> Optional[int]:
    """How many devices ``CUDA_VISIBLE_DEVICES`` lets through (None when unset): CUDA stops at
    the first entry that is not a device index or UUID, so ``""`` and ``"-1"`` hide all."""
    text = os.environ.get("CUDA_VISIBLE_DEVICES")
    if text is None:
        return None
    n = 0
    for part in text.split(","):
        part = part.strip()
        if re.fullmatch(r"\d+", part) or part.startswith(("GPU-", "MIG-")):
            n += 1
        else:
            break
    return n


def _probe_gpus() -> Tuple[int, str]:
    """(NVIDIA GPUs visible, how that was found)."""
    limit = _visible_limit()
    if limit == 0:
        return 0, f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}"
    found = len(glob.glob("/proc/driver/nvidia/gpus/*"))
    source = "/proc/driver/nvidia/gpus"
    if not found:
        found = len([p for p in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", p)])
        source = "/dev/nvidiaN"
    if not found:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return 0, "no NVIDIA driver device and no nvidia-smi"
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        found = sum(1 for line in out.splitlines() if line.startswith("GPU "))
        source = "nvidia-smi -L"
        if not found:
            return 0, "nvidia-smi lists no GPU"
    if limit is not None and limit < found:
        return limit, f"{source}, CUDA_VISIBLE_DEVICES"
    return found, source


def _tensorflow_gpus() -> Optional[int]:
    """GPUs TensorFlow sees, when this process has imported TensorFlow; else None."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "config"):
        return None
    try:
        return len(tf.config.get_visible_devices("GPU"))
    except Exception:  # a broken or partial TensorFlow: treat as CPU
        return 0


def _onnxruntime_cuda() -> bool:
    """The installed ONNX Runtime ships the CUDA execution provider (not imported)."""
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return False
    locations = list(getattr(spec, "submodule_search_locations", None) or []) if spec else []
    return any(os.path.isfile(os.path.join(d, ORT_CUDA_LIBRARY)) for d in locations)


def _triton_gpu_home() -> Optional[str]:
    """A folder with a GPU build of tritonserver (the NGC containers'), or None."""
    home = os.environ.get(ENV_TRITON_GPU_HOME) or NGC_TRITON_HOME
    binary = os.path.join(home, "bin", "tritonserver")
    return home if os.access(binary, os.X_OK) else None


def _hide_gpus() -> None:
    """For ``EXTCVR_FORCE_CPU``: no GPU for CUDA in this process and its children, none for
    TensorFlow when it is loaded (before it initialised its GPUs; else a warning)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "config"):
        try:
            tf.config.set_visible_devices([], "GPU")
        except Exception as e:  # already initialised: it keeps the GPUs it has
            log.warning("extcvr devices: %s=1 but TensorFlow has initialised its GPUs "
                        "already (%s); set it before the first TensorFlow call", ENV_FORCE_CPU, e)


# -- the decision -------------------------------------------------------------------------------
def probe() -> Accelerators:
    """Run the probes now (uncached, not logged); :func:`detect` is what stages call."""
    forced = force_cpu_requested()
    if forced:
        _hide_gpus()
        gpus, source = 0, f"{ENV_FORCE_CPU}=1"
    else:
        gpus, source = _probe_gpus()
    tf_gpus = _tensorflow_gpus()
    if forced and tf_gpus:  # hiding came too late (warned): the stages still act as on a CPU
        tf_gpus = 0
    return Accelerators(gpus=gpus, gpu_source=source,
                        cudf=_installed("cudf"), dask_cudf=_installed("dask_cudf"),
                        tensorflow_gpus=tf_gpus,
                        triton_gpu_home=_triton_gpu_home(),
                        onnxruntime_cuda=_onnxruntime_cuda(), forced_cpu=forced)


_LOGGED: List[str] = []


def _log_once(devices: Accelerators) -> None:
    line = devices.summary()
    if _LOGGED and _LOGGED[-1] == line:
        return
    _LOGGED.append(line)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if not log.hasHandlers():  # a command with no logging set up still shows the line
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.info(line)


@functools.lru_cache(maxsize=None)
def _detect(tensorflow_loaded: bool) -> Accelerators:
    devices = probe()
    _log_once(devices)
    return devices


def tensorflow_loaded() -> bool:
    """This process has imported TensorFlow (``keep_tensorflow_out``'s None does not count)."""
    return sys.modules.get("tensorflow") is not None


def detect() -> Accelerators:
    """The decision of this process: probed on the first call, then cached (once more after
    TensorFlow gets imported, to count its GPUs) and logged once."""
    return _detect(tensorflow_loaded())


def reset() -> None:
    """Forget the cached decision and what was logged (tests)."""
    _detect.cache_clear()
    _LOGGED.clear()


def machine_info() -> Dict[str, object]:
    """Platform, CPU model, CPUs and memory of this machine (``common.machine``), and
    ``devices``: this module's decision in this process (GPUs, cuDF, TensorFlow's GPUs when it
    is loaded, Triton kind, ONNX Runtime provider), so that every results JSON says whether it
    ran on a GPU."""
    from common.machine import machine_facts
    info = machine_facts()
    info["devices"] = detect().to_dict()
    return info


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m preprocessing.device``."""
    parser = argparse.ArgumentParser(prog="python -m preprocessing.device",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    parser.add_argument("--tensorflow", action="store_true",
                        help="import TensorFlow first, so that its GPUs are counted")
    args = parser.parse_args(argv)
    log.addHandler(logging.NullHandler())  # the line goes to stdout below, not twice
    if args.tensorflow:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow  # noqa: F401
    devices = detect()
    if args.json:
        print(json.dumps(devices.to_dict(), indent=2))
    else:
        print(devices.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
