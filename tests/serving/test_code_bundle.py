"""The step code copied into an exported repository: the import closure within the project."""

import os
import subprocess
import sys

import pytest

from serving.code_bundle import REPO_ROOT, copy_code, import_closure


def _write(root, rel, text=""):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


@pytest.fixture
def project(tmp_path):
    root = str(tmp_path / "proj")
    _write(root, "pkg/__init__.py")
    _write(root, "pkg/a.py", "import numpy\n\ndef f():\n    from pkg import b\n")
    _write(root, "pkg/b.py", "from . import c\nfrom .sub.d import X\n")
    _write(root, "pkg/c.py", "import os\n")
    _write(root, "pkg/sub/__init__.py", "from pkg import e\n")
    _write(root, "pkg/sub/d.py", "X = 1\n")
    _write(root, "pkg/e.py")
    _write(root, "pkg/unused.py")
    _write(root, "other/__init__.py")
    return root


def test_closure_follows_function_level_and_relative_imports_and_parent_packages(project):
    assert import_closure(["pkg.a"], project) == [
        "pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/e.py",
        "pkg/sub/__init__.py", "pkg/sub/d.py"]


def test_an_unknown_start_module_is_an_error(project):
    with pytest.raises(ModuleNotFoundError, match="pkg.nope"):
        import_closure(["pkg.nope"], project)


def test_the_serving_steps_closure_holds_what_the_steps_import_and_no_training_code():
    files = import_closure(["serving.steps", "serving.preprocess"])
    for rel in ("serving/steps.py", "serving/preprocess.py", "serving/calibration.py",
                "serving/onnx_export.py", "preprocessing/columns.py",
                "preprocessing/merlin_patches.py", "common/__init__.py", "common/quiet.py",
                "calibration/__init__.py", "calibration/artifact.py"):
        assert rel in files, rel
    # the calibrators left the model package: the serving steps bundle no model code at all
    assert not [f for f in files if f.startswith("models/")], files
    assert "serving/export.py" not in files


def test_a_copied_bundle_imports_the_steps_away_from_the_checkout(tmp_path):
    dest = str(tmp_path / "code")
    copy_code(["serving.steps"], dest)
    code = ("import sys, serving.steps, calibration.artifact as a; "
            "print(serving.steps.__file__); print(a.__file__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {dest!r}); "
                          + code], cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    for line in out.stdout.split():
        assert line.startswith(dest) and not line.startswith(REPO_ROOT), line
