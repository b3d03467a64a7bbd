"""The project code a Triton step imports, found statically and copied into the model repository.

A Python-backend step (``serving/triton_models/model.py``) imports ``serving.steps``, which imports
``serving.preprocess``, ``preprocessing.columns``, ``calibration.artifact`` and so on.
``serving.export`` copies exactly those modules (their import closure within this project) into
``<step>/1/code/``, and ``model.py`` puts that folder first on ``sys.path``: an exported repository
runs without the checkout it was exported from, on another host or in an NGC container.

The closure is computed from the source (``ast``), so imports inside functions count too, and
importing a module also brings its parent packages' ``__init__.py`` (which Python executes first).
Third-party packages (numpy, NVTabular, ...) are not copied: they come from the serving host's
Python environment.
"""

from __future__ import annotations

import ast
import os
import shutil
from typing import Iterable, List, Optional, Set

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def project_packages(root: str = REPO_ROOT) -> Set[str]:
    """The top-level packages of the project (folders of ``root`` with an ``__init__.py``)."""
    return {d for d in os.listdir(root)
            if os.path.isfile(os.path.join(root, d, "__init__.py"))}


def module_file(name: str, root: str = REPO_ROOT) -> Optional[str]:
    """Path of module ``name`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``) under ``root``,
    relative to ``root``; None when there is no such file."""
    base = os.path.join(*name.split("."))
    for rel in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(os.path.join(root, rel)):
            return rel
    return None


def _imported_names(path: str, module: str) -> List[str]:
    """Every module name an ``import`` in ``path`` may load, and for ``from X import y`` also
    ``X.y`` (which is a module when ``y`` is a submodule)."""
    with open(path) as fh:
        tree = ast.parse(fh.read(), filename=path)
    is_package = os.path.basename(path) == "__init__.py"
    out: List[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base:
                out.append(base)
            out += [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
    return out


def import_closure(modules: Iterable[str], root: str = REPO_ROOT) -> List[str]:
    """Relative paths of the project files that importing ``modules`` may execute, sorted.

    Follows every import statement (at any depth in a module) into the project's own packages,
    and adds the ``__init__.py`` of every package on the way.

    Raises:
        ModuleNotFoundError: one of ``modules`` is not a project module.
    """
    ours = project_packages(root)
    files: Set[str] = set()
    todo = list(modules)
    for name in todo:
        if module_file(name, root) is None:
            raise ModuleNotFoundError(f"{name}: not a module of the project at {root}")
    seen: Set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        if parts[0] not in ours:
            continue
        for i in range(1, len(parts) + 1):  # the parent packages run first
            pkg = ".".join(parts[:i])
            rel = module_file(pkg, root)
            if rel is None or rel in files:
                continue
            files.add(rel)
            todo += _imported_names(os.path.join(root, rel), pkg)
    return sorted(files)


def copy_code(modules: Iterable[str], dest: str, root: str = REPO_ROOT) -> List[str]:
    """Copy the import closure of ``modules`` to ``dest`` (same relative layout); returns the
    copied relative paths."""
    files = import_closure(modules, root)
    for rel in files:
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(root, rel), target)
    return files
