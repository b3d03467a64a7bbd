"""The notebooks of ``notebooks/``: stored without outputs, each opening with how to run it and a
parameters cell that environment variables override; each executes headless with nbclient on
small data and draws its figures. The five run in reading order on one shared work directory,
as ``make test`` runs them (each also runs alone: it builds what the work directory lacks)."""

import os
import re
import time

import nbformat
import pytest

from notebooks.execute import NOTEBOOKS, REPO, execute_notebook, notebook_path

#: What the tests run the notebooks on (their own defaults are the same sizes).
SMALL_ENV = {"EXTCVR_NB_ROWS": "40000", "EXTCVR_NB_SEED": "3", "EXTCVR_NB_BENCH_ROWS": "20000",
             "EXTCVR_NB_CAL_BENCH_ROWS": "200000"}
#: nbclient's limit per cell, and pytest-timeout's per notebook (2 cores; ~20-80 s each here).
CELL_TIMEOUT_S = 300
NOTEBOOK_TIMEOUT_S = 420


def _stored(name):
    return nbformat.read(str(notebook_path(name)), as_version=4)


def test_the_notebooks_folder_holds_exactly_the_five_notebooks():
    found = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))
    assert found == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_nbformat_4_with_the_python3_kernel_and_stored_without_outputs(name):
    nb = _stored(name)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
        assert "execution" not in cell.metadata, cell.source[:80]  # nbclient's timings


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_opens_with_how_to_run_it_then_a_parameters_cell_read_from_the_environment(name):
    nb = _stored(name)
    intro = nb.cells[0]
    assert intro.cell_type == "markdown" and intro.source.startswith("# ")
    for needle in ("docker run --gpus all", "jupyter lab", f"python -m notebooks.execute {name}",
                   "EXTCVR_NB_WORKDIR"):
        assert needle in intro.source, needle
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and nb.cells.index(params[0]) == 1
    source = params[0].source
    for var, env in (("ROWS", "EXTCVR_NB_ROWS"), ("SEED", "EXTCVR_NB_SEED"),
                     ("WORKDIR", "EXTCVR_NB_WORKDIR")):
        assert re.search(rf"^{var} = .*os\.environ\.get\(\"{env}\"", source, re.M), var


def test_the_readme_names_every_notebook_and_environment_variable():
    readme = (REPO / "notebooks" / "README.md").read_text()
    for name in NOTEBOOKS:
        assert f"{name}.ipynb" in readme, name
    variables = set()
    for name in NOTEBOOKS:
        variables |= set(re.findall(r"EXTCVR_NB_[A-Z_]+", _stored(name).cells[1].source))
    assert variables >= {"EXTCVR_NB_ROWS", "EXTCVR_NB_SEED", "EXTCVR_NB_WORKDIR"}
    for var in sorted(variables):
        assert var in readme, var


@pytest.fixture(scope="session")
def notebook_workdir(tmp_path_factory) -> str:
    """The work directory the five share, in reading order (data, runs, calibrators)."""
    return str(tmp_path_factory.mktemp("notebooks_workdir"))


@pytest.mark.slow
@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_headless_on_small_data_and_shows_its_figures(name, notebook_workdir,
                                                                        tmp_path):
    t0 = time.perf_counter()
    nb = execute_notebook(notebook_path(name), {**SMALL_ENV, "EXTCVR_NB_WORKDIR": notebook_workdir},
                          timeout=CELL_TIMEOUT_S, out=tmp_path / f"{name}.ipynb")
    seconds = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 2, f"{name}: {len(figures)} figure(s)"
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    print(f"{name}: {seconds:.1f} s, {len(figures)} figures")


def test_executing_a_notebook_leaves_the_stored_copy_without_outputs():
    # runs after the executions above (file order); they write their copies elsewhere
    for name in NOTEBOOKS:
        assert all(c.outputs == [] for c in _stored(name).cells if c.cell_type == "code")
    assert not any(f.endswith(".ipynb") and f not in {n + ".ipynb" for n in NOTEBOOKS}
                   for f in os.listdir(REPO / "notebooks"))
