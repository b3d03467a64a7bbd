"""The commands that moved up a floor keep their old names for one release: each alias runs the
moved command and says on stderr where it went."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("old, new", [("models.calibrate", "calibration.calibrate"),
                                      ("models.calibrate_worlds", "calibration.worlds"),
                                      ("models.replay", "replay"),
                                      ("models.hugectr.onnx_adapter", "serving.hugectr_onnx")])
def test_an_old_command_runs_the_moved_one_and_says_where_it_went(old, new):
    moved = subprocess.run([sys.executable, "-m", new, "--help"], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    alias = subprocess.run([sys.executable, "-m", old, "--help"], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert moved.returncode == 0 and alias.returncode == 0, alias.stderr[-2000:]
    assert alias.stdout == moved.stdout  # the same command, the same help
    assert f"`python -m {old}` moved to `python -m {new}`" in alias.stderr
