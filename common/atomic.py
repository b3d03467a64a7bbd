"""Atomic outputs: a command either leaves a complete output directory or none at all.

Work goes into a hidden sibling staging directory (same filesystem), which is renamed over the
target only when everything succeeded. On any exception the staging directory is removed and the
previous content of the target, if any, is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output_dir(target: str, overwrite: bool = True) -> Iterator[str]:
    """Yield a staging directory that replaces ``target`` atomically on success.

    Args:
        target: the final output directory.
        overwrite: when False, an existing non-empty ``target`` is an error.

    Raises:
        FileExistsError: ``target`` exists, is not empty, and ``overwrite`` is False.
    """
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    if os.path.isdir(target) and os.listdir(target) and not overwrite:
        raise FileExistsError(f"{target}: output directory exists and is not empty")
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.partial-", dir=parent)
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = None
    if os.path.lexists(target):
        backup = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=parent)
        os.rmdir(backup)
        os.rename(target, backup)
    os.rename(staging, target)
    if backup:
        shutil.rmtree(backup, ignore_errors=True)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def check_replaceable(out: str, marker: str, fmt: str, writer: str, hint: str = "") -> None:
    """Refuse to replace ``out`` unless it is absent, empty, or an earlier output of ``writer``:
    a directory whose ``marker`` JSON file has ``"format": fmt``.

    Raises:
        FileExistsError: ``out`` is a file, or holds files that ``writer`` did not write.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--out {out}: exists and is not a directory")
    if not os.path.isdir(out) or not os.listdir(out):
        return
    try:
        with open(os.path.join(out, marker)) as fh:
            ours = json.load(fh).get("format") == fmt
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise FileExistsError(
            f"--out {out}: not empty and not written by {writer} (no {marker} of format "
            f"{fmt!r}); refusing to replace it{'. ' + hint if hint else ''}")
