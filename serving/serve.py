"""Start the real Triton Inference Server on a model repository (no container, no GPU).

Usage::

    python -m serving.serve --repo triton_repo/ [--http-port 8000] [--grpc-port 8001]
        [--metrics-port 8002] [--host 127.0.0.1] [--timeout 180] [--log FILE]

The binary is the Triton 2.51 ``tritonserver`` shipped in the ``nvidia-pytriton`` wheel
(stack.md, "Triton Inference Server on the CPU"): it is copied once to a writable folder
(``$EXTCVR_TRITON_HOME``, default ``~/.cache/extcvr/tritonserver-<version>``) with the Python 3.11
backend stub in ``backends/python/``, and runs with ``LD_LIBRARY_PATH`` on
``nvidia_pytriton.libs``. The server listens on loopback unless ``--host`` says otherwise.
``serve`` waits for readiness (``/v2/health/ready``) up to ``--timeout`` seconds and fails with
the tail of the server log; SIGINT / SIGTERM stop the server cleanly (SIGTERM, then SIGKILL after
40 s).

On a GPU machine with a GPU build of ``tritonserver`` (the NGC containers' ``/opt/tritonserver``,
or ``$EXTCVR_TRITON_GPU_HOME``), that server runs instead, with its own backends, when
``preprocessing.device`` decides ``KIND_GPU`` (``EXTCVR_FORCE_CPU=1`` keeps the wheel's): the same
decision that gave the exported ``predict`` step its ``KIND_GPU`` instances.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from typing import Dict, List, Optional, Tuple

from preprocessing.device import KIND_GPU, detect
from common.tables import print_table

PY_STUB = f"{sys.version_info.major}.{sys.version_info.minor}"


class ServerError(RuntimeError):
    """The server did not start or did not become ready."""


def _site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def triton_home() -> str:
    """A writable copy of the wheel's tritonserver folder with the Python backend stub."""
    import importlib.metadata as md
    src = os.path.join(_site_packages(), "pytriton", "tritonserver")
    if not os.path.isdir(src):
        raise ServerError(f"{src}: not found; nvidia-pytriton is not installed")
    version = md.version("nvidia-pytriton")
    home = os.environ.get("EXTCVR_TRITON_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "extcvr", f"tritonserver-{version}")
    stub = os.path.join(home, "backends", "python", "triton_python_backend_stub")
    if os.path.isfile(stub) and os.access(os.path.join(home, "bin", "tritonserver"), os.X_OK):
        return home
    os.makedirs(os.path.dirname(home), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".triton-", dir=os.path.dirname(home))
    try:
        dst = os.path.join(staging, "t")
        shutil.copytree(src, dst)
        shutil.copy2(os.path.join(src, "python_backend_stubs", PY_STUB,
                                  "triton_python_backend_stub"),
                     os.path.join(dst, "backends", "python", "triton_python_backend_stub"))
        if os.path.isdir(home):
            shutil.rmtree(home)
        os.rename(dst, home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now (the kernel's choice)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_home() -> Tuple[str, bool]:
    """(the tritonserver folder to run, whether it is the GPU build): the GPU build that
    ``preprocessing.device`` found when it decides ``KIND_GPU``, else the wheel's CPU build
    (:func:`triton_home`)."""
    devices = detect()
    if devices.triton_kind == KIND_GPU:
        return devices.triton_gpu_home, True
    return triton_home(), False


def server_env(gpu_build: bool = False) -> Dict[str, str]:
    """Environment of the server: the wheel's libraries (not for the GPU build, which has its
    own), and this environment's site-packages for the steps' ``model.py`` (the project code
    itself travels inside the repository)."""
    env = dict(os.environ)
    if not gpu_build:
        libs = os.path.join(_site_packages(), "nvidia_pytriton.libs")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libs,
                                                               env.get("LD_LIBRARY_PATH")]))
    env["EXTCVR_SITE_PACKAGES"] = _site_packages()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


class TritonServer:
    """A running ``tritonserver`` process on a model repository.

    Args:
        repo: the model repository (``python -m serving.export --out``).
        http_port, grpc_port, metrics_port: 0 picks a free port.
        host: the address to listen on (loopback by default).
        log_path: where the server's stdout/stderr go (a temp file by default).
    """

    def __init__(self, repo: str, http_port: int = 0, grpc_port: int = 0,
                 metrics_port: int = 0, host: str = "127.0.0.1",
                 log_path: Optional[str] = None):
        self.repo = os.path.abspath(repo)
        if not os.path.isdir(self.repo):
            raise ServerError(f"{self.repo}: no model repository")
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.log_path = log_path or tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1]
        self.process: Optional[subprocess.Popen] = None
        # Seconds Triton waits at shutdown for in-flight requests and for the Python-backend
        # stubs to finalize (a stub holding TensorFlow can take well over 10 s on a loaded host).
        self.exit_timeout = 60
        #: whether ``command`` picked the GPU build of tritonserver (``server_home``)
        self.gpu_build = False

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def command(self) -> List[str]:
        home, self.gpu_build = server_home()
        return [os.path.join(home, "bin", "tritonserver"),
                f"--model-repository={self.repo}",
                f"--backend-directory={os.path.join(home, 'backends')}",
                f"--http-address={self.host}", f"--http-port={self.http_port}",
                f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
                f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
                "--allow-gpu-metrics=false", "--exit-on-error=true", "--log-verbose=0",
                "--strict-readiness=true", f"--exit-timeout-secs={self.exit_timeout}"]

    def start(self, timeout: float = 180.0) -> "TritonServer":
        """Start the server and wait until it is ready; ``ServerError`` with the log tail."""
        log = open(self.log_path, "ab")
        # cwd = the repository: nothing of the working directory it was started from leaks in
        command = self.command()
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        env=server_env(self.gpu_build), cwd=self.repo,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode} "
                                  f"before it was ready.\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"tritonserver was not ready after {timeout:.0f} s.\n{self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready",
                                        timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as fh:
                tail = fh.readlines()[-lines:]
        except OSError:
            return "(no server log)"
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "".join(tail)

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    def stop(self, grace: float = 90.0) -> Optional[int]:
        """SIGTERM (Triton's graceful shutdown), then SIGKILL after ``grace`` seconds."""
        if not self.process or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m serving.serve``."""
    parser = argparse.ArgumentParser(prog="python -m serving.serve",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback)")
    parser.add_argument("--timeout", type=float, default=180.0, help="readiness timeout, s")
    parser.add_argument("--log", default=None, help="server log file (default: a temp file)")
    parser.add_argument("--ready-file", default=None,
                        help="write 'http_url grpc_url pid' here once ready (for scripts)")
    args = parser.parse_args(argv)
    server = TritonServer(args.repo, args.http_port, args.grpc_port, args.metrics_port,
                          args.host, args.log)
    stopping = {"flag": False}

    def on_signal(signum, _frame):
        stopping["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.monotonic()
    try:
        server.start(args.timeout)
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_table("serving.serve", [
        ("repository", server.repo), ("http", server.http_url), ("grpc", server.grpc_url),
        ("metrics", f"{server.host}:{server.metrics_port}"), ("pid", server.pid),
        ("tritonserver", "GPU build" if server.gpu_build else "CPU build (pip wheel)"),
        ("ready after", f"{time.monotonic() - t0:.1f} s"), ("log", server.log_path)])
    sys.stdout.flush()
    if args.ready_file:
        with open(args.ready_file, "w") as fh:
            fh.write(f"{server.http_url} {server.grpc_url} {server.pid}\n")
    while not stopping["flag"] and server.process.poll() is None:
        time.sleep(0.5)
    crashed = server.process.poll() is not None
    code = server.stop()
    if crashed:
        print(f"error: tritonserver exited with code {code}\n{server.log_tail()}",
              file=sys.stderr)
        return 1
    print(f"serving.serve: stopped (tritonserver exit code {code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
