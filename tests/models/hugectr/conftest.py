"""Shared fixtures of the HugeCTR tests: the workflow schema, the data description and one
generated HugeCTR directory of ``small_processed`` (all read-only)."""

import json
import os

import pytest


@pytest.fixture(scope="session")
def hugectr_schema(small_processed):
    """The saved workflow's output schema of ``small_processed``."""
    from models.hugectr.data import load_workflow_schema
    return load_workflow_schema(small_processed)


@pytest.fixture(scope="session")
def hugectr_data(small_processed, hugectr_schema):
    """``describe(small_processed)``."""
    from models.hugectr.data import describe
    return describe(small_processed, hugectr_schema)


@pytest.fixture(scope="session")
def hugectr_out(tmp_path_factory, small_processed, hugectr_schema) -> str:
    """A ``python -m models.hugectr`` directory of ``small_processed`` (default settings)."""
    from models.hugectr.cli import generate
    out = str(tmp_path_factory.mktemp("hugectr") / "esmm")
    generate(small_processed, out, schema=hugectr_schema)
    return out


@pytest.fixture(scope="session")
def hugectr_desc(hugectr_out) -> dict:
    """Its ``hugectr_data.json``."""
    with open(os.path.join(hugectr_out, "hugectr_data.json")) as fh:
        return json.load(fh)


@pytest.fixture(scope="session")
def hugectr_config(hugectr_out) -> dict:
    """Its ``esmm_config.json``."""
    with open(os.path.join(hugectr_out, "esmm_config.json")) as fh:
        return json.load(fh)
