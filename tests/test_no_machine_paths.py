"""No file of the project names a directory of the machine it was developed on.

Docs, code, configs and committed text results are read on other machines: an absolute path
such as a home or scratch directory of the developer's machine means nothing there (and a
recorded command should name its directories by role: ``PROC``, ``RUN``, ``OUT``; see
``common/provenance.py``). The scan covers every file git knows (tracked, or new and not
ignored; a walk of the tree when git is unavailable) whose name ends in one of
:data:`SUFFIXES` or is a Makefile or Dockerfile.

Flagged (:data:`MACHINE_PATH`): paths under ``/work``, ``/home``, ``/Users``, ``/root``,
``/mnt`` and ``/tmp`` (``/tmp`` only outside ``tests/``, whose fake inputs may name one), a
Windows user folder, and paths into the reference folder beside the repository on the
development machine. Not flagged: the container paths the images use (``/workspace``,
``/opt/...``, ``/usr/...``), system files (``/proc``, ``/dev``, ``/etc``), URLs and relative
paths, which merely contain such a component (``bench_out/work/``).
"""

import os
import re
import subprocess
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = (".md", ".py", ".yaml", ".yml", ".sh", ".ipynb", ".txt", ".cfg", ".toml", ".ini")
NAMES = ("Makefile",)
PREFIXES = ("Dockerfile",)
#: Directories a tree walk skips (git skips them as ignored).
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "demo_out",
             "bench_out", "node_modules"}

# An absolute path starts the text or follows a character that cannot end a path component
# or a URL's host (so ``bench_out/work/x`` and ``https://host/home/x`` do not count).
_START = r"(?<![\w.~$}/:-])"
MACHINE_PATH = re.compile(
    _START + r"/(?:work|home|Users|root|mnt)/[\w.@-]"
    r"|" + r"(?<![\w.])[A-Za-z]:\\Users\\"
    r"|" + r"(?<![\w/])\.\./shared/")
TMP_PATH = re.compile(_START + r"/tmp/[\w.@-]")


def scan_lines(name: str, lines: Iterable[str]) -> List[str]:
    """``name:line: text`` for every line of ``lines`` that holds a machine path (``/tmp``
    paths count only outside ``tests/``)."""
    allow_tmp = name.replace(os.sep, "/").startswith("tests/")
    hits = []
    for number, line in enumerate(lines, 1):
        m = MACHINE_PATH.search(line) or (None if allow_tmp else TMP_PATH.search(line))
        if m:
            hits.append(f"{name}:{number}: {line.strip()[:160]}")
    return hits


def wanted(relpath: str) -> bool:
    base = relpath.rsplit("/", 1)[-1]
    return base.endswith(SUFFIXES) or base in NAMES or base.startswith(PREFIXES)


def git_files(root: Path) -> Optional[List[str]]:
    """The files git tracks or would track (new, not ignored) under ``root``; None without
    git or outside a repository."""
    try:
        proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard"], cwd=root, capture_output=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return sorted({p for p in proc.stdout.decode().split("\0") if p})


def walked_files(root: Path) -> List[str]:
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.endswith(".egg-info"))
        for f in files:
            out.append(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/"))
    return sorted(out)


def project_files(root: Path = REPO) -> Tuple[List[str], str]:
    files = git_files(root)
    how = "git ls-files"
    if files is None:
        files, how = walked_files(root), "a walk of the tree"
    return [f for f in files if wanted(f) and (root / f).is_file()], how


def scan(root: Path = REPO) -> List[str]:
    hits = []
    for rel in project_files(root)[0]:
        try:
            text = (root / rel).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        hits += scan_lines(rel, text.splitlines())
    return hits


def test_no_project_file_names_a_path_of_the_development_machine():
    files, how = project_files()
    assert len(files) > 50, f"{how} found only {len(files)} files"
    hits = scan()
    assert not hits, ("absolute paths of a development machine (name directories by role, "
                      "e.g. PROC / RUN / OUT, or repository-relative):\n" + "\n".join(hits))


# The samples below are built from pieces so that this file itself holds no flagged path.
W, H, T = "/" + "work", "/" + "home", "/" + "tmp"


def test_the_scan_flags_machine_paths_and_names_file_and_line(tmp_path):
    bad = [f"Command: `python -m x --data {W}/exp/proc4m`.",
           f"see {H}/alice/extcvr/README.md",
           f'    p = "{T}/s3/bproc1m"',
           "C:" + "\\Users\\bob\\extcvr",
           "Design (``.." + "/shared/reference/algorithms.md``)",
           "/" + "root/.cache/pip", "/" + "Users/carol/x", "/" + "mnt/data/runs"]
    good = ["WORKDIR /workspace/extcvr", "tritonserver in /opt/tritonserver",
            "/usr/local/cuda/compat/lib.real", "GPUs from /proc/driver/nvidia/gpus",
            "bench_out/work/x", "https://example.org/home/x", "--out PROC/work",
            "--data PROC --out OUT", "~/" + "work/x", "$HOME/x"]
    hits = scan_lines("docs/page.md", good + bad)
    assert [h.split(":")[1] for h in hits] == [str(len(good) + i + 1) for i in range(len(bad))]
    assert hits[0].startswith(f"docs/page.md:{len(good) + 1}: Command:")
    # /tmp is a fake input's path in a test, a machine path anywhere else
    assert scan_lines("tests/x/test_y.py", [f'"{T}/nowhere"']) == []
    assert scan_lines("benchmarks/RESULTS.md", [f"--data {T}/proc1m"]) != []


def test_the_whole_scan_fails_on_a_file_with_a_machine_path(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "ok.md").write_text("--data PROC\n")
    (tmp_path / "docs" / "bad.md").write_text(f"line one\nrun from {W}/i19/final\n")
    (tmp_path / "Dockerfile.gpu").write_text(f"COPY {H}/dev/x /x\n")
    (tmp_path / "data.json").write_text(f'"{W}/x"\n')  # not a scanned suffix
    assert sorted(walked_files(tmp_path)) == ["Dockerfile.gpu", "data.json", "docs/bad.md",
                                              "docs/ok.md"]
    hits = scan(tmp_path)
    assert sorted(h.split(": ")[0] for h in hits) == ["Dockerfile.gpu:1", "docs/bad.md:2"]
