"""Fail an image build early when the base image is not the stack this project was written for.

Usage (a Dockerfile ``RUN`` step; the system Python of the image, no project import)::

    python docker/check_versions.py tensorflow=2.12 nvtabular=23.08 [hugectr=23.08]
        [--imports MODULE [MODULE ...]]

Each ``PACKAGE=VERSION`` asks for a version prefix, compared number by number with leading
zeros ignored: ``2.12`` accepts ``2.12.0`` and ``2.12.0+nv23.06`` and refuses ``2.13.0``;
``23.08`` accepts NVTabular's ``23.8.0`` and ``23.08.00``. The installed version is the
distribution's metadata, or the module's ``__version__`` when there is none (HugeCTR's
``hugectr.so`` on ``PYTHONPATH``). ``--imports`` names modules the project takes from the image
or was just given: each must import. Every problem is one line, e.g.
``expected TensorFlow 2.12.x, found 2.13.0``, and the exit status is 1; 0 when all is well.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import sys
from typing import List, Optional, Sequence, Tuple

#: How the message names a package; others by their distribution name.
DISPLAY = {"tensorflow": "TensorFlow", "nvtabular": "NVTabular", "hugectr": "HugeCTR"}


def release(version: str) -> Tuple[int, ...]:
    """The leading numbers of ``version``: ``"2.12.0+nv23.06"`` -> ``(2, 12, 0)``."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def installed_version(package: str) -> str:
    """The installed version of ``package``: its metadata, else its module's ``__version__``.

    Raises:
        LookupError: not installed, or the module does not import or has no ``__version__``
            (the message says which).
    """
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        pass
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an ImportError, or a shared library that fails to load
        raise LookupError(f"no distribution metadata and `import {module_name}` failed: "
                          f"{type(exc).__name__}: {exc}") from exc
    version = getattr(module, "__version__", None)
    if not isinstance(version, str):
        raise LookupError(f"no distribution metadata and {module_name} has no __version__")
    return version


def version_problem(package: str, expected: str) -> Optional[str]:
    """``None`` when ``package``'s version starts with ``expected``, else the message."""
    name = DISPLAY.get(package, package)
    try:
        found = installed_version(package)
    except LookupError as exc:
        return f"expected {name} {expected}.x, found none ({exc})"
    want = release(expected)
    if release(found)[:len(want)] != want:
        return f"expected {name} {expected}.x, found {found}"
    return None


def import_problem(module: str) -> Optional[str]:
    """``None`` when ``module`` imports, else the message."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # report every failure, not only ImportError
        return f"cannot import {module}: {type(exc).__name__}: {exc}"
    return None


def parse_expectation(text: str) -> Tuple[str, str]:
    """``"tensorflow=2.12"`` -> ``("tensorflow", "2.12")``; argparse's type for the pins."""
    package, sep, version = text.partition("=")
    if not sep or not package or not release(version):
        raise argparse.ArgumentTypeError(f"{text!r}: expected PACKAGE=VERSION, e.g. "
                                         "tensorflow=2.12")
    return package, version


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: check the pins and the imports, print the problems; 1 if any."""
    parser = argparse.ArgumentParser(prog="python docker/check_versions.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("expect", nargs="*", type=parse_expectation,
                        metavar="PACKAGE=VERSION", help="e.g. tensorflow=2.12")
    parser.add_argument("--imports", nargs="+", default=[], metavar="MODULE",
                        help="modules that must import")
    args = parser.parse_args(argv)
    problems: List[str] = [p for p in (version_problem(pkg, ver) for pkg, ver in args.expect)
                           if p]
    problems += [p for p in map(import_problem, args.imports) if p]
    for problem in problems:
        print(f"check_versions: {problem}", file=sys.stderr)
    if problems:
        print("check_versions: this image is not the stack extcvr was written for; "
              "see the comments at the top of the Dockerfile", file=sys.stderr)
        return 1
    checked = [f"{DISPLAY.get(p, p)} {v}.x" for p, v in args.expect] + \
        ([f"{len(args.imports)} imports"] if args.imports else [])
    print("check_versions: ok: " + ", ".join(checked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
