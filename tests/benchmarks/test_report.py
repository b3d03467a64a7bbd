"""benchmarks.report: RESULTS.md, its plots and README.md's results block are generated from the
committed results, and stay in step with them."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from benchmarks import report as R

NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@pytest.fixture(scope="module")
def committed():
    """What the generator makes from the committed inputs (nothing is written)."""
    return R.build(R.Paths.under())


def tmp_outputs(tmp_path: Path) -> R.Paths:
    """The committed inputs, with copies of the committed outputs in ``tmp_path``."""
    paths = R.Paths.under()
    shutil.copy(paths.page, tmp_path / "RESULTS.md")
    shutil.copy(paths.readme, tmp_path / "README.md")
    shutil.copytree(paths.plots, tmp_path / "plots")
    return dataclasses.replace(paths, page=tmp_path / "RESULTS.md",
                               readme=tmp_path / "README.md", plots=tmp_path / "plots")


def page_without_headlines(page: str) -> str:
    start = page.index(f"## {R.HEADLINE_TITLE}\n")
    end = page.index("\n## ", start + 1)
    return page[:start] + page[end:]


def test_regenerating_from_the_committed_results_leaves_results_md_byte_identical(committed):
    assert committed.page == R.Paths.under().page.read_text()


def test_regenerated_plots_are_byte_identical_to_the_committed_ones(committed):
    plots = R.Paths.under().plots
    assert sorted(committed.plots) == sorted(p.name for p in plots.glob("*.png"))
    for name, data in committed.plots.items():
        assert (plots / name).read_bytes() == data, name


def test_building_twice_gives_the_same_page_and_plots(committed):
    again = R.build(R.Paths.under())
    assert again.page == committed.page
    assert again.plots == committed.plots


def test_readme_results_block_is_what_the_generator_writes(committed):
    readme = R.Paths.under().readme.read_text()
    assert committed.readme == readme
    assert "## Results\n" in readme
    block = R.readme_block_text(readme)
    assert block.startswith("- Preprocessing, ") and "Federated training (" in block


def test_every_number_in_the_readme_results_block_is_in_the_generated_tables(committed):
    block = R.readme_block_text(R.Paths.under().readme.read_text())
    numbers = NUMBER.findall(block)
    assert len(numbers) > 40
    # the tables and captions below the headline list, not the list itself
    body = set(NUMBER.findall(page_without_headlines(committed.page)))
    missing = [n for n in numbers if n not in body]
    assert not missing, f"README numbers not in RESULTS.md's tables: {missing}"
    for cell in re.findall(r"\d\.\d{4} ± \d\.\d{4}", block):
        assert cell in page_without_headlines(committed.page), cell


def test_every_table_row_on_the_page_comes_from_a_renderer_not_from_the_notes():
    notes = R.Paths.under().notes
    for path in sorted(notes.glob("*.md")):
        rows = [line for line in path.read_text().splitlines() if line.startswith("|")]
        assert not rows, f"{path.name} holds a table: tables come from result files"


def test_federated_section_renders_the_committed_evaluation_and_throughput(committed):
    section = committed.page.split("### Federated training\n", 1)[1].split("\n## ", 1)[0]
    for arm in ("advertiser_only", "federated", "federated_defended", "centralized"):
        assert f"| {arm} |" in section
    assert "vs centralised" in section and "bytes on the wire per sample" in section


def test_federated_section_without_results_says_so(tmp_path):
    ctx = R.Context(dataclasses.replace(R.Paths.under(), results=tmp_path, models=tmp_path))
    assert R.render_federated(ctx).startswith("No `models/results/federated_*/federated.json`")


def test_check_passes_on_the_committed_outputs(tmp_path, capsys):
    assert R.main(["--check"], paths=tmp_outputs(tmp_path)) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_exits_1_with_a_diff_on_a_tampered_results_md_and_writes_nothing(tmp_path, capsys):
    paths = tmp_outputs(tmp_path)
    lines = paths.page.read_text().splitlines(keepends=True)
    row = next(i for i, line in enumerate(lines) if line.startswith("|---")) + 1
    original = lines[row]
    lines[row] = NUMBER.sub("999", original, count=1)  # the first table's first number
    assert lines[row] != original
    paths.page.write_text("".join(lines))
    assert R.main(["--check"], paths=paths) == 1
    out = capsys.readouterr().out
    assert f"-{lines[row]}" in out and f"+{original}" in out
    assert paths.page.read_text() == "".join(lines)


def test_check_fails_on_a_tampered_readme_number_and_a_changed_plot(tmp_path, capsys):
    paths = tmp_outputs(tmp_path)
    readme = paths.readme.read_text()
    start = readme.index(R.BEGIN) + len(R.BEGIN)
    number = NUMBER.search(readme, start)
    paths.readme.write_text(readme[:number.start()] + "999" + readme[number.end():])
    plot = next(iter(sorted(paths.plots.glob("*.png"))))
    plot.write_bytes(plot.read_bytes() + b"\0")
    assert R.main(["--check"], paths=paths) == 1
    out = capsys.readouterr().out
    assert "README.md (generated)" in out and "999" in out
    assert f"{plot}: differs" in out


def test_writing_restores_the_tampered_outputs(tmp_path, capsys):
    paths = tmp_outputs(tmp_path)
    committed_page = paths.page.read_text()
    paths.page.write_text("hand-edited\n")
    shutil.rmtree(paths.plots)
    assert R.main([], paths=paths) == 0
    assert paths.page.read_text() == committed_page
    assert R.main(["--check"], paths=paths) == 0
    assert "written" in capsys.readouterr().out


def test_a_renderer_names_the_file_and_the_key_when_a_json_lacks_it(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(R.Paths.under().results, results)
    paths = dataclasses.replace(tmp_outputs(tmp_path), results=results)
    path = R.foundation_files(R.Context(paths))[-1]  # the one the first section renders
    doc = json.loads(path.read_text())
    rows = max(doc["results"], key=int)
    del doc["results"][rows]["pandas"]
    path.write_text(json.dumps(doc))
    message = f"{path.name}: no key 'results.{rows}.pandas'"
    with pytest.raises(R.ReportError, match=re.escape(message)):
        R.render_foundation_latest(R.Context(paths))
    assert R.main(["--check"], paths=paths) == 2
    assert message in capsys.readouterr().err


def test_a_missing_model_report_is_named(tmp_path):
    paths = dataclasses.replace(R.Paths.under(), models=tmp_path)
    with pytest.raises(R.ReportError, match=r"compare_4m_2026-11-29/report\.json: missing"):
        R.model_report("compare_4m_2026-11-29", "x")(R.Context(paths))


def test_a_readme_without_the_results_block_is_an_error(tmp_path):
    paths = tmp_outputs(tmp_path)
    text = paths.readme.read_text()
    paths.readme.write_text(text.replace(R.BEGIN, ""))
    with pytest.raises(R.ReportError, match="no '<!-- results:begin -->'"):
        R.build(paths)


def test_print_table_summaries_are_parsed_and_a_missing_row_is_named(tmp_path):
    text = ("+---+\n| benchmarks.x |\n+---+\n| rows | 10,000,000 |\n"
            "| fast: wall s / peak RSS MB | 67.1 / 2,412 |\n+---+\n")
    table = R.parse_print_table(text, "x.txt")
    assert table == {"rows": "10,000,000", "fast: wall s / peak RSS MB": "67.1 / 2,412"}
    (tmp_path / "stock_equality_10m_2026-12-02.txt").write_text(text)
    ctx = R.Context(dataclasses.replace(R.Paths.under(), results=tmp_path))
    with pytest.raises(R.ReportError, match="no row 'stock: wall s / peak RSS MB'"):
        R.render_stock_equality(ctx)
