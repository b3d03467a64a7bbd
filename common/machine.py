"""Facts about the machine a result was measured on, for every results JSON (benchmarks,
federated runs): platform, CPU model, CPUs and memory, and the cgroup limits if any. The
device decision (GPUs, cuDF, Triton kind) is added one floor up, by
``preprocessing.device.machine_info``."""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Dict, Optional


def read_first(path: str) -> Optional[str]:
    """The stripped text of ``path``, or None when it cannot be read."""
    with contextlib.suppress(OSError):
        with open(path) as fh:
            return fh.read().strip()
    return None


def machine_facts() -> Dict[str, object]:
    """Platform, CPU model, CPUs and memory of this machine, and its cgroup limits if any."""
    cpu_model = None
    for line in (read_first("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kib = None
    for line in (read_first("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    info: Dict[str, object] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model or platform.processor() or None,
        "nproc": nproc,
        "cpu_count": os.cpu_count(),
        "mem_total_gb": round(mem_kib / 1024 ** 2, 2) if mem_kib else None,
    }
    cpu_max = read_first("/sys/fs/cgroup/cpu.max")
    if cpu_max and not cpu_max.startswith("max"):
        quota, period = cpu_max.split()
        info["cgroup_cpus"] = round(int(quota) / int(period), 2)
    mem_max = read_first("/sys/fs/cgroup/memory.max")
    if mem_max and mem_max.isdigit():
        info["cgroup_mem_gb"] = round(int(mem_max) / 1024 ** 3, 2)
    return info
