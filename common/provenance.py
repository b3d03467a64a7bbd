"""Commands and paths as a results file records them: without the paths of the machine that
ran them.

A committed result names what produced it (``"command"``, ``"data"``, ``"run"``, ...), but an
absolute path such as ``/data/alice/exp/proc4m`` says nothing to a reader and leaks the
layout of one machine. What is recorded instead:

- a path inside the repository: the repository-relative path (``models/configs/demo.yaml``);
- a path under a named root the caller gives (``roots={"/data/exp/proc4m": "PROC"}``):
  ``PROC/train``;
- any other absolute path: a placeholder named for its argument (:data:`PLACEHOLDERS`:
  ``--data`` -> ``PROC``, ``--run`` -> ``RUN``, ``--out`` -> ``OUT``, otherwise the flag in
  upper case: ``--psi-cache`` -> ``PSI_CACHE``; a positional path -> ``PATH``). Distinct values
  of one placeholder in one command are numbered (``OUT``, ``OUT_2``, ...), a path under an
  earlier one keeps its tail (``--data /x/proc --workflow /x/proc/workflow`` ->
  ``--data PROC --workflow PROC/workflow``).

Relative paths and other arguments are kept as given. ``benchmarks.report`` renders the commands
of older results files through :func:`portable_command` too, so the generated pages hold no
machine path either way.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Dict, Mapping, Optional, Sequence, Union

#: The repository root (``common/`` is one level below it).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Placeholder per argument name (without the leading ``--``); other flags give their name in
#: upper case with ``-`` as ``_``.
PLACEHOLDERS: Dict[str, str] = {
    "data": "PROC", "proc": "PROC", "input": "INPUT", "run": "RUN", "runs": "RUN",
    "out": "OUT", "work": "WORK", "workdir": "WORK", "calibrator": "CAL", "calibrators": "CAL",
    "teacher": "TEACHER", "workflow": "WORKFLOW", "repo": "REPO",
}
#: The placeholder of an absolute path that follows no flag.
POSITIONAL = "PATH"

# An absolute path token: starts with "/" at the start of the text or after a blank, "=" or
# an opening quote or bracket, and runs to the next blank, quote, ";" or closing bracket.
_ABS = re.compile(r"(?:(?<=^)|(?<=[\s=('\"\[]))/[^\s'\";)\]]*")
_FLAG = re.compile(r"--([A-Za-z0-9][A-Za-z0-9_-]*)")


def placeholder_for(flag: Optional[str]) -> str:
    """The placeholder of a path given to ``--flag`` (``flag`` without the dashes; None:
    positional)."""
    if not flag:
        return POSITIONAL
    return PLACEHOLDERS.get(flag, flag.upper().replace("-", "_"))


def _under(path: str, root: str) -> Optional[str]:
    """``path`` relative to ``root`` when it is ``root`` or below it ("" for ``root``)."""
    root = root.rstrip("/") or "/"
    if path == root:
        return ""
    prefix = root if root.endswith("/") else root + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def _join(name: str, rel: str) -> str:
    return f"{name}/{rel}" if rel else name


def portable_path(path: Union[str, os.PathLike, None], name: str,
                  roots: Optional[Mapping[str, str]] = None,
                  repo: str = REPO_ROOT) -> Optional[str]:
    """``path`` as a results file should record it: repository-relative inside ``repo``,
    ``ROOT/rest`` under one of ``roots`` (absolute path -> its name), otherwise ``name`` (the
    placeholder of what the path is, e.g. ``"PROC"``). A relative path is made absolute against
    the working directory first; None stays None."""
    if path is None:
        return None
    absolute = os.path.abspath(os.fspath(path))
    rel = _under(absolute, os.path.abspath(repo))
    if rel is not None:
        return rel or "."
    for root, root_name in sorted((roots or {}).items(), key=lambda kv: -len(kv[0])):
        rel = _under(absolute, os.path.abspath(root))
        if rel is not None:
            return _join(root_name, rel)
    return name


def portable_command(command: Union[str, Sequence[str]], repo: str = REPO_ROOT,
                     roots: Optional[Mapping[str, str]] = None) -> str:
    """A command line with every absolute path replaced as the module docstring says.
    ``command`` is a string (e.g. as recorded by an older results file, several commands joined
    by ``"; "`` included) or an argv list (quoted with :func:`shlex.join`)."""
    text = command if isinstance(command, str) else shlex.join([str(c) for c in command])
    repo = os.path.abspath(repo).rstrip("/")
    assigned: Dict[str, str] = {os.path.abspath(k).rstrip("/"): v
                                for k, v in (roots or {}).items()}
    counts: Dict[str, int] = {}
    out, pos = [], 0
    for m in _ABS.finditer(text):
        before = text[pos:m.start()]
        out.append(before)
        pos = m.end()
        value = m.group(0)
        norm = os.path.normpath(value)
        rel = _under(norm, repo)
        if rel is not None:
            out.append(rel or ".")
            continue
        hit = next(((root, name) for root, name in
                    sorted(assigned.items(), key=lambda kv: -len(kv[0]))
                    if _under(norm, root) is not None), None)
        if hit:
            out.append(_join(hit[1], _under(norm, hit[0])))
            continue
        base = placeholder_for(_flag_before(text, m.start()))
        counts[base] = counts.get(base, 0) + 1
        name = base if counts[base] == 1 else f"{base}_{counts[base]}"
        assigned[norm] = name
        out.append(name)
    out.append(text[pos:])
    return "".join(out)


def recorded_command(module: str, argv: Sequence[str],
                     roots: Optional[Mapping[str, str]] = None) -> str:
    """``python -m MODULE ARGV...`` as a results file records it (:func:`portable_command`)."""
    return portable_command(["python", "-m", module, *[str(a) for a in argv]], roots=roots)


def _flag_before(text: str, at: int) -> Optional[str]:
    """The flag whose value the token at ``at`` is: the last ``--flag`` before it in the same
    command (text after the last ``;``) when only absolute paths lie between them (the earlier
    values of a several-value flag such as ``--runs``); None for a positional token."""
    segment = text[:at]
    segment = segment[segment.rfind(";") + 1:]
    if segment.endswith("="):
        m = re.search(r"--([A-Za-z0-9][A-Za-z0-9_-]*)=$", segment)
        return m.group(1) if m else None
    try:
        tokens = shlex.split(segment)
    except ValueError:
        tokens = segment.split()
    for token in reversed(tokens):
        m = _FLAG.fullmatch(token)
        if m:
            return m.group(1)
        if not token.startswith("/"):  # another flag's value, the module, ...: positional
            return None
    return None


def relative_record(path: Union[str, os.PathLike], base: str) -> str:
    """``path`` recorded relative to ``base`` (the directory of the results file that names
    it), so a report moved together with its inputs, or read on another machine, still finds
    them and names no machine path; :func:`resolve_record` reads it back."""
    return os.path.relpath(os.path.abspath(os.fspath(path)), os.path.abspath(base))


def resolve_record(recorded: str, base: str) -> str:
    """A path a results file in ``base`` recorded: relative ones (:func:`relative_record`)
    against ``base``; absolute ones (files written before) as they are."""
    return recorded if os.path.isabs(recorded) else os.path.normpath(os.path.join(base,
                                                                                   recorded))
