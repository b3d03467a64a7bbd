"""The package layers of ``.importlinter`` hold: import-linter's contracts pass on the tree, and
they state the layers the project is built in (common at the bottom, the consumers on top)."""

import configparser
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ["notebooks", "benchmarks", "federated | replay", "serving", "calibration", "models",
          "preprocessing", "common"]


def _contracts():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO, ".importlinter"))
    return parser


def test_the_contracts_state_the_project_layers():
    parser = _contracts()
    layers = [line.strip() for line in parser["importlinter:contract:layers"]["layers"].split("\n")
              if line.strip()]
    assert layers == LAYERS
    assert parser["importlinter:contract:acyclic"]["type"] == "acyclic_siblings"


def test_lint_imports_passes_on_the_tree():
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    result = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_lint_imports_fails_on_an_upward_import(tmp_path):
    """The check can fail: a copy of the contracts over a tree where ``common`` imports
    ``models`` is refused."""
    root = tmp_path / "tree"
    for package, body in (("common", "import models.x\n"), ("models", "")):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / "x.py").write_text(body)
    (root / ".importlinter").write_text(
        "[importlinter]\nroot_packages =\n    common\n    models\n\n"
        "[importlinter:contract:layers]\nname = layers\ntype = layers\n"
        "layers =\n    models\n    common\n")
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    result = subprocess.run([lint, "--no-cache"], cwd=root, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert result.returncode != 0 and "common.x -> models.x" in result.stdout
