"""Execute the notebooks headless with nbclient and write the executed copies (outputs, plots).

Usage, from the repository root::

    .venv/bin/python -m notebooks.execute [NAME ...] [--out DIR] [--rows N] [--workdir DIR]
        [--timeout SECONDS]

``NAME`` is a notebook of this folder with or without ``.ipynb`` (default: all five, in order).
The executed copies go to ``--out`` (default ``WORKDIR/executed``); the notebooks in the
repository stay without outputs. ``--rows`` and ``--workdir`` set ``EXTCVR_NB_ROWS`` and
``EXTCVR_NB_WORKDIR`` for the kernels: one work directory lets later notebooks reuse the data
and runs of earlier ones (default: a fresh temporary directory shared by the notebooks of this
command).

The kernel is this interpreter's ipykernel, started in the repository root. The lock pins
``typing_extensions`` 4.5.0 (TensorFlow 2.12 requires < 4.6) while its IPython 8.23 imports
``typing_extensions.TypeAliasType`` (added in 4.6), so neither IPython nor the ``python3``
kernel imports in this venv as installed; the kernel started here first gives
``typing_extensions`` an empty stand-in class of that name, which IPython only uses in
``isinstance`` checks while evaluating completions. Elsewhere (the NGC container) the stand-in
is not needed and not installed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: The notebooks, in reading order.
NOTEBOOKS = ("01-preprocess-nvtabular", "02-train-esmm-autoheri-ukd", "03-calibrate-adacalib",
             "04-serve-triton", "05-benchmark")

#: Starts ipykernel in this interpreter, with the stand-in for ``TypeAliasType`` (see above).
KERNEL_LAUNCH = (
    "import typing_extensions\n"
    "if not hasattr(typing_extensions, 'TypeAliasType'):\n"
    "    class TypeAliasType:\n"
    "        '''Stand-in: typing_extensions < 4.6 lacks it and IPython 8.23 imports it.'''\n"
    "    typing_extensions.TypeAliasType = TypeAliasType\n"
    "from ipykernel.kernelapp import launch_new_instance\n"
    "launch_new_instance()\n")


def kernel_manager_class():
    """A jupyter_client kernel manager whose kernel is ipykernel in ``sys.executable`` (started
    with :data:`KERNEL_LAUNCH`), whatever kernel specs are installed."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    class ThisInterpreterKernelManager(AsyncKernelManager):
        @property
        def kernel_spec(self) -> KernelSpec:
            return KernelSpec(argv=[sys.executable, "-c", KERNEL_LAUNCH, "-f",
                                    "{connection_file}"],
                              display_name="Python 3 (extcvr)", language="python",
                              resource_dir=str(HERE))

    return ThisInterpreterKernelManager


def notebook_path(name: str) -> Path:
    """``notebooks/NAME.ipynb`` (``NAME`` with or without the suffix)."""
    path = HERE / (name if name.endswith(".ipynb") else name + ".ipynb")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such notebook; choose from {', '.join(NOTEBOOKS)}")
    return path


def execute_notebook(path: os.PathLike, env: Optional[Dict[str, str]] = None,
                     timeout: int = 600, out: Optional[os.PathLike] = None):
    """Run every cell of the notebook at ``path`` in a fresh kernel (working directory: the
    repository root; environment: this one updated with ``env``); returns the executed
    notebook (``nbformat.NotebookNode``) and writes it to ``out`` when given, also when a cell
    fails (``nbclient.exceptions.CellExecutionError``, raised after writing). ``timeout`` is
    per cell."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(str(path), as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_manager_class=kernel_manager_class(),
                            resources={"metadata": {"path": str(REPO)}})
    try:
        client.execute(env={**os.environ, **(env or {})})
    except CellExecutionError:
        if out is not None:
            nbformat.write(nb, str(out))
        raise
    if out is not None:
        nbformat.write(nb, str(out))
    return nb


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: ``python -m notebooks.execute``."""
    from nbclient.exceptions import CellExecutionError

    from common.tables import print_table
    parser = argparse.ArgumentParser(prog="python -m notebooks.execute",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(NOTEBOOKS), metavar="NAME")
    parser.add_argument("--out", default=None, help="where the executed copies go "
                        "(default WORKDIR/executed)")
    parser.add_argument("--rows", type=int, default=None, help="EXTCVR_NB_ROWS")
    parser.add_argument("--workdir", default=None, help="EXTCVR_NB_WORKDIR (default: a fresh "
                        "temporary directory)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    try:
        paths = [notebook_path(n) for n in args.names]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="extcvr-notebooks-"))
    out = os.path.abspath(args.out or os.path.join(workdir, "executed"))
    os.makedirs(out, exist_ok=True)
    env = {"EXTCVR_NB_WORKDIR": workdir}
    if args.rows is not None:
        env["EXTCVR_NB_ROWS"] = str(args.rows)
    rows: List[tuple] = []
    for path in paths:
        target = os.path.join(out, path.name)
        t0 = time.perf_counter()
        try:
            execute_notebook(path, env, args.timeout, target)
        except CellExecutionError as e:
            print(f"error: {path.name} failed (executed copy: {target}):\n{e}", file=sys.stderr)
            return 1
        rows.append((path.name, f"{time.perf_counter() - t0:.1f} s -> {target}"))
    rows.append(("work directory", workdir))
    print_table("notebooks.execute", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
