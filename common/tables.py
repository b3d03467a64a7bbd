"""Small reporting helpers shared by the command-line tools: summary tables, peak RSS and
package versions."""

from __future__ import annotations

import importlib.metadata as md
import platform
import resource
import sys
from typing import Dict, Iterable, Optional, Sequence, Tuple


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
