"""The serving facts that preprocessing.run records beside the saved workflow."""

import json
import os

import pyarrow.compute as pc
import pytest

from preprocessing import columns as C
from preprocessing.request_facts import FACTS_FILENAME, load_request_facts
from preprocessing.splits import read_split_table


def test_run_records_the_spec_nullable_columns_and_longest_lists_beside_the_workflow(
        small_processed, small_generated):
    wf = os.path.join(small_processed, "workflow")
    assert C.DatasetSpec.load(wf) == C.DatasetSpec.load(small_processed)
    facts = load_request_facts(wf)
    assert facts["nullable"] == ["media_watch_minutes"]   # ~5% of users lack it
    train = read_split_table(os.path.join(small_processed, "train"), ["user_recent_cats"])
    longest = pc.max(pc.list_value_length(train.column("user_recent_cats"))).as_py()
    assert facts["max_list"] == {"user_recent_cats": longest}


def test_missing_or_foreign_facts_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="older `python -m preprocessing.run`"):
        load_request_facts(str(tmp_path))
    (tmp_path / FACTS_FILENAME).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a request-facts file"):
        load_request_facts(str(tmp_path))
