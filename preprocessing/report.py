"""Small reporting helpers shared by the command-line tools: summary tables, peak RSS and the
console's known-noise filter."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import resource
import sys
import warnings
from typing import Dict, Iterable, Optional, Sequence, Tuple

#: Warnings that NVTabular 23.08 emits on every CPU run and that say nothing actionable here:
#: the CPU mode is the documented default off-GPU, and hashing the id tail is configured.
KNOWN_WARNINGS = ("Initializing an NVTabular Dataset in CPU mode",
                  "Performing a hash-based transformation",
                  "PyTorch dtype mappings did not load")


def silence_known_warnings() -> None:
    """Hide :data:`KNOWN_WARNINGS` (once per dataset they would flood a command's console) and
    TensorFlow's start-up INFO lines (oneDNN, CPU instruction sets): ``TF_CPP_MIN_LOG_LEVEL=1``
    unless already set, so TensorFlow's own warnings and errors still print.

    Every package of the project calls it when imported (``preprocessing/__init__.py``,
    ``models``, ``serving``, ``benchmarks``), so every command starts quiet before merlin or
    TensorFlow is imported; other warnings are left alone."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    Reads ``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` is inherited across ``fork`` on
    Linux, so a child started from a large process would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def print_table(title: str, rows: Iterable[Tuple[str, object]], file=None) -> None:
    """Print a two-column summary table, the closing output of every command."""
    file = file or sys.stdout
    rows = [(str(k), str(v)) for k, v in rows]
    width = max([len(k) for k, _ in rows] + [10])
    vwidth = max([len(v) for _, v in rows] + [10])
    line = "+" + "-" * (width + 2) + "+" + "-" * (vwidth + 2) + "+"
    print(line, file=file)
    print(f"| {title:<{width + vwidth + 3}} |", file=file)
    print(line, file=file)
    for k, v in rows:
        print(f"| {k:<{width}} | {v:<{vwidth}} |", file=file)
    print(line, file=file)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def package_versions(packages: Sequence[str], missing: Optional[str] = None) -> Dict[str, str]:
    """Python's and the packages' versions from installed metadata (nothing is imported).

    A package that is not installed maps to ``missing``, or is left out when that is None.
    """
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            if missing is not None:
                out[pkg] = missing
    return out
