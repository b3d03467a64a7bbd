"""Fixtures of the serving tests: a repository exported from copies of the tiny run, its
workflow and its AdaCalib calibrator (``tests/conftest.py``); the copies are deleted afterwards
and the repository is moved to another directory (the tests serve it from there: one server per
test module)."""

import os
import shutil

import pytest

MAX_BATCH = 512


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
    from serving.settings import ExportSettings
    src = export_sources
    run = shutil.copytree(tiny_run, os.path.join(src, "run"))
    workflow = shutil.copytree(os.path.join(small_processed, "workflow"),
                               os.path.join(src, "workflow"))
    cal = shutil.copytree(adacalib[0], os.path.join(src, "calibrator"))
    first = os.path.join(src, "repo")
    export(run, workflow, first, calibrator=cal,
           settings=ExportSettings(max_batch_size=MAX_BATCH, queue_delay_us=100))
    moved = str(tmp_path_factory.mktemp("deployed") / "models")
    shutil.move(first, moved)
    shutil.rmtree(src)
    return moved
