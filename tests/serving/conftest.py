"""Fixtures of the serving tests: a real AdaCalib calibrator fitted on the validation predictions
of the tiny run (``tests/conftest.py``), and a repository exported from copies of those
artifacts, which are deleted afterwards, then moved to another directory (the tests serve it from
there: one server per test module)."""

import os
import shutil

import pytest

MAX_BATCH = 512
CAL_FIELDS = ("app_id",)


@pytest.fixture(scope="session")
def adacalib(tmp_path_factory, tiny_run, small_processed):
    """``(CAL_DIR, fitted AdaCalibCalibrator)``: AdaCalib by app fitted on the clicked rows of
    the validation day, saved as ``models.calibrate`` saves it."""
    from models.calibrate import split_frame
    from models.calibration import make_calibrator
    frame = split_frame(tiny_run, small_processed, "valid", CAL_FIELDS)
    clicked = frame["click"] == 1
    cal = make_calibrator("adacalib", CAL_FIELDS).fit(
        frame["pcvr"][clicked], frame["purchase"][clicked],
        {f: frame[f][clicked] for f in CAL_FIELDS})
    cal_dir = str(tmp_path_factory.mktemp("cal") / "adacalib")
    cal.save(cal_dir)
    return cal_dir, cal


@pytest.fixture(scope="session")
def export_sources(tmp_path_factory):
    """The directory that the exported repository's sources were copied into (deleted after
    the export: nothing may still point there)."""
    return str(tmp_path_factory.mktemp("export_sources"))


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_run, small_processed, adacalib, export_sources) -> str:
    """The ensemble exported from copies of the run, the workflow and the calibrator; the
    copies are deleted and the repository is moved to another directory before any test."""
    from serving.export import export
    src = export_sources
    run = shutil.copytree(tiny_run, os.path.join(src, "run"))
    workflow = shutil.copytree(os.path.join(small_processed, "workflow"),
                               os.path.join(src, "workflow"))
    cal = shutil.copytree(adacalib[0], os.path.join(src, "calibrator"))
    first = os.path.join(src, "repo")
    export(run, workflow, first, calibrator=cal, max_batch_size=MAX_BATCH, delay_us=100)
    moved = str(tmp_path_factory.mktemp("deployed") / "models")
    shutil.move(first, moved)
    shutil.rmtree(src)
    return moved
