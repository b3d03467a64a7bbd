"""The one-off equality check of the fast CPU path against stock NVTabular."""

import re

from benchmarks.stock_equality import main


def test_the_check_runs_both_paths_and_finds_no_difference(small_generated, tmp_path, capsys):
    assert main(["--input", small_generated, "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\| differing columns\s+\| none\s+\|", out)
    assert re.search(r"\| differing vocabularies\s+\| none\s+\|", out)
    assert re.search(r"\| stock: wall s / peak RSS MB\s+\| [\d.]+ / [\d,]+\s+\|", out)
