"""The two images, ``Dockerfile`` (merlin-tensorflow) and ``Dockerfile.hugectr`` (merlin-hugectr),
checked statically, without Docker: the pinned NGC bases, COPY sources and the modules the
images run exist in the repository, every pip install is pinned and never brings a second
TensorFlow / NVTabular / Merlin / HugeCTR, the version check runs at build time and fails with a
message naming the package and both versions, the entry point dispatches each command of each
image, and hadolint passes when it is installed. Building and running the images needs Docker
and a GPU: see the top of each Dockerfile."""

import ast
import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Each image and the one base it must build from.
BASES = {"Dockerfile": "nvcr.io/nvidia/merlin/merlin-tensorflow:23.08",
         "Dockerfile.hugectr": "nvcr.io/nvidia/merlin/merlin-hugectr:23.08"}
#: The versions each image's build-time check must ask for.
VERSIONS = {"Dockerfile": {"tensorflow": "2.12", "nvtabular": "23.08"},
            "Dockerfile.hugectr": {"nvtabular": "23.08", "hugectr": "23.08"}}
WORKDIR = "/workspace/extcvr"
CHECK = REPO / "docker" / "check_versions.py"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
#: Which stack each image trains and serves with (``EXTCVR_IMAGE``, docker/entrypoint.sh).
STACKS = {"Dockerfile": "tensorflow", "Dockerfile.hugectr": "hugectr"}
#: Modules the images run that belong to the image, not to the project.
IMAGE_MODULES = {"pip", "pytest"}
#: What no image may pip-install: the image already has its one TensorFlow / NVTabular / HugeCTR.
FORBIDDEN = re.compile(r"(tensorflow.*|tf-nightly.*|keras|nvtabular|merlin-.*|hugectr.*)", re.I)
PINNED = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==[0-9][0-9A-Za-z.+!-]*")


def instructions(name: str) -> List[Tuple[str, str]]:
    """``(KEYWORD, arguments)`` per instruction of ``name``: comment lines dropped (also inside
    a continued instruction, as Docker does), continuation lines joined."""
    out: List[Tuple[str, str]] = []
    pending = ""
    for line in (REPO / name).read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += " " + line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keyword, _, args = pending.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def words(args: str) -> List[str]:
    """The words of an instruction's arguments, exec (JSON) form or shell form."""
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def env(name: str) -> Dict[str, str]:
    """The variables the ``ENV`` instructions of ``name`` set (``KEY=VALUE`` form)."""
    out: Dict[str, str] = {}
    for keyword, args in instructions(name):
        if keyword == "ENV":
            for word in words(args):
                key, sep, value = word.partition("=")
                assert sep, f"{name}: ENV {args!r}: use the KEY=VALUE form"
                out[key] = value
    return out


def shell_commands(name: str) -> List[List[str]]:
    """The words of every command in the RUN steps of ``name`` (split at ``&&``, ``||``, ``;``)."""
    out = []
    for keyword, args in instructions(name):
        if keyword == "RUN":
            out += [shlex.split(c) for c in re.split(r"&&|\|\||;", args) if c.strip()]
    return out


def named_files(name: str) -> List[Tuple[str, str]]:
    """``(what, candidate paths)`` for every module or script the image ``name`` runs: ``python
    -m`` in its RUN / CMD / ENTRYPOINT and in docker/entrypoint.sh, ``python SCRIPT.py`` in its
    RUN steps and the script its ENTRYPOINT runs. (The entry point's other scripts are the ones
    ``models.hugectr`` generates: see the HugeCTR train test.)"""
    dockerfile = " ".join(args for _, args in instructions(name))
    modules = set(re.findall(r"\bpython3? -m ([A-Za-z_][\w.]*)",
                             dockerfile + " " + ENTRYPOINT.read_text()))
    out = [(m, f"{m.replace('.', '/')}.py|{m.replace('.', '/')}/__main__.py")
           for m in sorted(modules) if m.split(".")[0] not in IMAGE_MODULES]
    scripts = set(re.findall(r"\bpython3? ([\w./-]+\.py)\b", dockerfile))
    for keyword, args in instructions(name):
        if keyword == "ENTRYPOINT":
            scripts |= {w[len(WORKDIR) + 1:] for w in words(args) if w.startswith(WORKDIR + "/")}
    return out + [(s, s) for s in sorted(scripts)]


@pytest.mark.parametrize("name", BASES)
def test_each_image_builds_from_its_pinned_ngc_base_only(name):
    froms = [words(args)[0] for keyword, args in instructions(name) if keyword == "FROM"]
    assert froms == [BASES[name]]


@pytest.mark.parametrize("name", BASES)
def test_every_copy_source_exists_and_is_in_the_build_context(name):
    ignored = [p for p in (REPO / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith(("#", "!"))]
    sources = []
    for keyword, args in instructions(name):
        if keyword in ("COPY", "ADD"):
            sources += [w for w in words(args) if not w.startswith("--")][:-1]
    assert sources, f"{name} copies nothing"
    for src in sources:
        found = list(REPO.glob(src)) if any(c in src for c in "*?[") else (REPO / src).exists()
        assert found, f"{name}: COPY {src}: not found"
        assert not any(fnmatch.fnmatch(src.rstrip("/"), p) for p in ignored), \
            f"{name}: COPY {src} is excluded by .dockerignore"


def test_dockerignore_keeps_environments_caches_and_outputs_out_of_the_context():
    patterns = set((REPO / ".dockerignore").read_text().splitlines())
    for required in (".venv", "demo_out", "bench_out", ".git", "**/__pycache__", "**/*.pyc",
                     ".pytest_cache"):
        assert required in patterns


@pytest.mark.parametrize("name,what,paths",
                         [pytest.param(n, what, paths, id=f"{n}:{what}")
                          for n in BASES for what, paths in named_files(n)])
def test_every_module_and_script_the_image_runs_exists_in_the_repository(name, what, paths):
    assert any((REPO / p).is_file() for p in paths.split("|")), f"{name} runs {what}: no {paths}"


def test_every_make_target_the_entrypoint_runs_exists_with_the_system_python_switch():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"\bexec make (\w+) USE_SYSTEM_PYTHON=1", ENTRYPOINT.read_text()))
    assert targets == {"bench", "demo", "test"}
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no target {target}"
    assert "ifeq ($(USE_SYSTEM_PYTHON),1)" in makefile


@pytest.mark.parametrize("name", BASES)
def test_every_pip_install_is_pinned_without_dependencies_and_never_a_second_stack(name):
    installs = []
    for cmd in shell_commands(name):
        for prefix in (["pip", "install"], ["pip3", "install"], ["python", "-m", "pip", "install"]):
            if cmd[:len(prefix)] == prefix:
                installs.append(cmd[len(prefix):])
    assert installs, f"{name} installs nothing: then drop this test's expectation"
    for args in installs:
        assert "--no-deps" in args, f"{name}: pip install {args}: without --no-deps"
        for arg in args:
            assert arg not in ("-r", "--requirement", "-c", "--constraint", "-e", "--editable")
            if arg.startswith("-"):
                continue
            match = PINNED.fullmatch(arg)
            assert match, f"{name}: pip install {arg}: not pinned with =="
            assert not FORBIDDEN.fullmatch(match.group(1)), f"{name}: pip install {arg}"


def project_imports() -> Dict[str, List[str]]:
    """Every third-party top-level module the project's Python files import (AST, ``import x``
    and ``from x import y``, guarded or not), with the files that import it; the standard library,
    the project's own packages and the test helpers beside the tests are left out."""
    local = {p.name for p in REPO.iterdir() if p.is_dir()} | {
        p.stem for p in (REPO / "tests").rglob("*.py")}
    found: Dict[str, List[str]] = {}
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0].startswith(".") or "results" in rel.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names}:
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, []).append(str(rel))
    return found


def test_the_hugectr_import_at_build_time_uses_nvidias_compat_and_stub_directories():
    run = [args for keyword, args in instructions("Dockerfile.hugectr")
           if keyword == "RUN" and "hugectr=23.08" in args]
    assert len(run) == 1
    assert "/usr/local/cuda-$(echo \"${CUDA_VERSION}\" | cut -d. -f1-2)/compat" in run[0]
    assert "/usr/local/cuda/lib64/stubs" in run[0] and "lib.real" not in run[0]


def test_every_third_party_import_is_in_the_image_manifest_or_installed_by_the_dockerfile():
    import yaml
    manifest = yaml.safe_load((REPO / "docker" / "image_manifest.yaml").read_text())
    shipped = {m for m, e in manifest["modules"].items() if e["images"] in ("both", "tensorflow")}
    installed_dists = set()
    for cmd in shell_commands("Dockerfile"):
        if cmd[:2] == ["pip", "install"]:
            installed_dists |= {PINNED.fullmatch(a).group(1).lower() for a in cmd[2:]
                                if not a.startswith("-")}
    declared = {d.lower(): m for d, m in manifest["installed"].items()}
    assert set(declared) <= installed_dists, \
        f"manifest 'installed' names what Dockerfile does not install: " \
        f"{sorted(set(declared) - installed_dists)}"
    available = shipped | set(declared.values()) | set(manifest.get("not_in_image") or {})
    imports = project_imports()
    assert {"numpy", "tensorflow", "dp_accounting", "cryptography"} <= set(imports)  # it looks
    missing = {m: files[:3] for m, files in imports.items() if m not in available}
    assert not missing, f"imported but neither in the 23.08 image manifest nor installed by " \
                        f"the Dockerfile (module: files): {missing}"


def test_the_build_time_import_check_names_every_module_the_dockerfile_installs():
    import yaml
    manifest = yaml.safe_load((REPO / "docker" / "image_manifest.yaml").read_text())
    for name in BASES:
        checked = set()
        for cmd in shell_commands(name):
            if cmd[:2] == ["python", str(CHECK.relative_to(REPO))] and "--imports" in cmd:
                checked |= {a.split(".")[0] for a in cmd[cmd.index("--imports") + 1:]}
        assert set(manifest["installed"].values()) <= checked, \
            f"{name}: --imports lacks {sorted(set(manifest['installed'].values()) - checked)}"


@pytest.mark.parametrize("name", BASES)
def test_the_version_check_runs_at_build_time_before_the_sources_are_copied(name):
    steps = instructions(name)
    checks = [i for i, (keyword, args) in enumerate(steps) if keyword == "RUN"
              and "docker/check_versions.py" in args and "=" in args.split("check_versions.py")[1]]
    assert len(checks) == 1, f"{name}: one RUN of docker/check_versions.py PACKAGE=VERSION ..."
    args = steps[checks[0]][1].split("check_versions.py", 1)[1]
    asked = dict(w.split("=", 1) for w in shlex.split(args) if "=" in w)
    assert asked == VERSIONS[name]
    copy_all = [i for i, (keyword, args) in enumerate(steps) if keyword == "COPY"
                and words(args)[:1] == ["."]]
    assert copy_all and checks[0] < copy_all[0]


@pytest.mark.parametrize("name", BASES)
def test_the_project_is_the_workdir_first_on_pythonpath_and_the_stack_is_named(name):
    assert ("WORKDIR", WORKDIR) in instructions(name)
    assert env(name)["PYTHONPATH"] == f"{WORKDIR}:${{PYTHONPATH}}"  # the image's path kept
    assert env(name)["EXTCVR_IMAGE"] == STACKS[name]


def test_the_entrypoint_script_is_valid_bash():
    proc = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _fake_tools(tmp_path: Path) -> Dict[str, str]:
    """PATH with ``python``, ``make`` and ``tritonserver`` that print how they were called
    (``python`` fails on a script that is not in its working directory)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    check = '[ "${1%.py}" = "$1" ] || [ -f "$1" ] || exit 3\n'
    for tool in ("python", "make", "tritonserver"):
        (bin_dir / tool).write_text("#!/bin/sh\n" + (check if tool == "python" else "")
                                    + 'echo "$(basename "$0") $*"\n')
        (bin_dir / tool).chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _entrypoint(tmp_path: Path, name: str, *args: str, rc: int = 0) -> List[str]:
    outer = {k: v for k, v in os.environ.items() if not k.startswith("EXTCVR_")}
    variables = {k: v for k, v in env(name).items() if k != "PYTHONPATH"}
    proc = subprocess.run(["bash", str(ENTRYPOINT), *args], cwd=tmp_path, capture_output=True,
                          text=True, env={**outer, **variables, **_fake_tools(tmp_path)})
    assert proc.returncode == rc, proc.stdout + proc.stderr
    return proc.stdout.splitlines() + proc.stderr.splitlines()


@pytest.mark.parametrize("name", BASES)
def test_entrypoint_runs_preprocess_bench_test_and_any_other_command_as_given(tmp_path, name):
    assert _entrypoint(tmp_path, name, "preprocess", "--input", "g", "--out", "p") == \
        ["python -m preprocessing.run --input g --out p"]
    assert _entrypoint(tmp_path, name, "bench", "BENCH_ROWS=1000") == \
        ["make bench USE_SYSTEM_PYTHON=1 BENCH_ROWS=1000"]
    assert _entrypoint(tmp_path, name, "test", "-x", "-q") == \
        ["make test USE_SYSTEM_PYTHON=1 PYTEST_ARGS=-x -q"]
    assert _entrypoint(tmp_path, name, "echo", "as", "given") == ["as given"]
    assert f"image: {STACKS[name]}" in _entrypoint(tmp_path, name)  # no command: the usage


def test_tensorflow_image_trains_with_models_train_and_serves_an_ngc_export(tmp_path):
    assert _entrypoint(tmp_path, "Dockerfile", "train", "--model", "esmm") == \
        ["python -m models.train --model esmm"]
    repo = tmp_path.resolve() / "triton_repo" / "serve"
    assert _entrypoint(tmp_path, "Dockerfile", "serve", "--run", "r", "--workflow", "w") == [
        f"python -m serving.export --run r --workflow w --target ngc --out {repo}",
        f"tritonserver --model-repository={repo}"]


def test_hugectr_image_trains_and_exports_with_the_scripts_models_hugectr_writes(tmp_path):
    from models.hugectr.scripts import EXPORT_SCRIPT, TRAIN_SCRIPT
    out = tmp_path / "esmm"
    out.mkdir()
    for script in (TRAIN_SCRIPT, EXPORT_SCRIPT):  # what `python -m models.hugectr` writes
        (out / script).write_text("")
    assert _entrypoint(tmp_path, "Dockerfile.hugectr", "train", "--data", "p", "--out=esmm") == [
        "python -m models.hugectr --data p --out=esmm",
        f"python {TRAIN_SCRIPT}", f"python {EXPORT_SCRIPT}"]
    assert "extcvr: train: --out DIR is required" in \
        _entrypoint(tmp_path, "Dockerfile.hugectr", "train", "--data", "p", rc=2)


def test_hugectr_image_serves_the_adapted_onnx_model_from_the_repository_it_installs_into(
        tmp_path):
    assert _entrypoint(tmp_path, "Dockerfile.hugectr", "serve", "--dir", "d", "--install",
                       "r") == ["python -m serving.hugectr_onnx --dir d --install r",
                                f"tritonserver --model-repository={tmp_path.resolve() / 'r'}"]
    assert "extcvr: serve: --install REPO is required" in \
        _entrypoint(tmp_path, "Dockerfile.hugectr", "serve", "--dir", "d", rc=2)


def test_hadolint_finds_no_warning_in_either_image():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not on PATH (Debian does not package it; the tests install "
                    "nothing)")
    proc = subprocess.run([hadolint, "--failure-threshold", "warning", *BASES], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True)


def _nvtabular_release() -> Tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", importlib.metadata.version("nvtabular")).groups()
    return int(major), int(minor)


def test_version_check_accepts_a_matching_prefix_with_leading_zeros():
    major, minor = _nvtabular_release()
    proc = _check(f"nvtabular={major}.{minor:02d}")  # NGC writes 23.08, the metadata 23.8.0
    assert proc.returncode == 0, proc.stderr
    assert f"NVTabular {major}.{minor:02d}.x" in proc.stdout


def test_version_check_fails_naming_the_package_and_both_versions_when_they_differ():
    major, minor = _nvtabular_release()
    proc = _check(f"nvtabular={major + 1}.{minor}")
    assert proc.returncode == 1
    found = importlib.metadata.version("nvtabular")
    assert f"expected NVTabular {major + 1}.{minor}.x, found {found}" in proc.stderr


def test_version_check_fails_naming_a_package_that_is_not_installed():
    proc = _check("hugectr=23.08")  # no HugeCTR outside its image
    assert proc.returncode == 1
    assert "expected HugeCTR 23.08.x, found none" in proc.stderr
    assert "import hugectr" in proc.stderr


def test_import_check_fails_naming_the_module_that_does_not_import():
    proc = _check("--imports", "json", "extcvr_no_such_module")
    assert proc.returncode == 1
    assert "cannot import extcvr_no_such_module" in proc.stderr
    assert "cannot import json" not in proc.stderr


def test_version_check_refuses_an_expectation_without_a_version():
    proc = _check("tensorflow")
    assert proc.returncode == 2
    assert "PACKAGE=VERSION" in proc.stderr
