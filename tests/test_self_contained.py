"""The suite passes from the repository alone: ``../shared`` is reference material, never a test
dependency. The tests that read real-format data run from a copy of the repository placed where
no ``../shared`` exists, and no test file points outside the repository."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "demo_out", "bench_out"}
#: The tests that read the real-format samples (every other test uses generated data).
REAL_SAMPLE_TESTS = ["tests/preprocessing/test_convert.py",
                     "tests/preprocessing/test_run.py::"
                     "test_converted_real_aliccp_samples_preprocess_end_to_end"]


def test_no_test_reads_the_shared_reference_folder():
    pattern = re.compile(r"""["']\.\.["'].*["']shared["']|\.\./shared|/\s*["']shared["']""")
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("*.py")
                 if p.name != "test_self_contained.py" and pattern.search(p.read_text())]
    assert offenders == []


def test_real_sample_tests_pass_in_a_copy_without_a_shared_folder_beside_it(tmp_path):
    project = tmp_path / "elsewhere" / "project"
    shutil.copytree(REPO, project, ignore=lambda d, names: [n for n in names if n in SKIP])
    assert not (project.parent / "shared").exists()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           *REAL_SAMPLE_TESTS], cwd=project, env=env, capture_output=True,
                          text=True, timeout=900)
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and "skipped" not in tail, tail
