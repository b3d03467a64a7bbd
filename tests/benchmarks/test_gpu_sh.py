"""``benchmarks/gpu.sh`` checked statically (it needs a GPU and the NGC container to run): bash
syntax, executable, strict mode, the UNVERIFIED note with its verification command, every
module it runs exists and accepts the options given, and it refuses to run without a GPU."""

import os
import re
import shutil
import subprocess

import pytest

from serving.code_bundle import module_file
from tests.conftest import REPO_ROOT

SCRIPT = os.path.join(str(REPO_ROOT), "benchmarks", "gpu.sh")


def _text() -> str:
    with open(SCRIPT) as fh:
        return fh.read()


def _invocations():
    """(module, [options]) of every ``python -m`` the script runs (``step NAME MODULE ...`` and
    ``"$PY" -m MODULE ...``), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", _text())
    out = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        m = (re.match(r'step \S+ ([\w.]+)(.*)', line)
             or re.match(r'"\$PY" -m ([\w.]+)(.*)', line))
        if m:
            out.append((m.group(1), re.findall(r"(--[\w-]+)", m.group(2))))
    return out


def test_the_script_parses_is_executable_and_strict():
    assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0
    assert os.access(SCRIPT, os.X_OK)
    text = _text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert "UNVERIFIED" in text and "docker run --gpus all" in text
    assert "merlin-tensorflow:23.08" in text


def test_every_module_it_runs_exists_and_takes_the_options_given():
    calls = _invocations()
    modules = {m for m, _ in calls}
    assert {"preprocessing.device", "benchmarks.run", "benchmarks.train_bench",
            "benchmarks.train_profile", "benchmarks.pseudolabel_bench",
            "benchmarks.serving_bench"} <= modules
    for module, options in calls:
        path = module_file(module)
        assert path, f"{module}: no such module"
        with open(os.path.join(str(REPO_ROOT), path)) as fh:
            source = fh.read()
        for opt in options:
            assert f'"{opt}"' in source, f"{module} has no option {opt}"


def test_the_results_get_the_gpu_prefix_in_benchmarks_results():
    text = _text()
    assert "OUT=benchmarks/results" in text and "PREFIX=gpu_" in text
    assert "suite_{date}.json" in text


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_without_a_gpu_it_stops_with_a_clear_message_unless_allow_cpu(tmp_path):
    env = {**os.environ, "PYTHON": "false"}  # nothing would run anyway
    out = subprocess.run(["bash", SCRIPT, "--work", str(tmp_path / "w")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "error: no GPU" in out.stderr and "--allow-cpu" in out.stderr
    assert not (tmp_path / "w").exists()
    help_ = subprocess.run(["bash", SCRIPT, "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "--allow-cpu" in help_.stdout
