"""models.learning_curve: points merged per dataset from several reports, leaders, outputs."""

import json
import os

import pytest

from models.learning_curve import collect, learning_curve, main


def _dataset(root, name, rows, seed):
    raw, proc = root / f"{name}_raw", root / f"{name}_proc"
    raw.mkdir()
    proc.mkdir()
    (raw / "manifest.json").write_text(json.dumps({"rows": rows, "seed": seed}))
    split = {"train": rows * 5 // 7, "valid": rows // 7}
    split["test"] = rows - sum(split.values())
    (proc / "manifest.json").write_text(json.dumps({"input": str(raw), "rows_out": split}))
    return str(proc)


def _report(root, name, data, models):
    out = root / name
    out.mkdir()
    report = {"data": data, "models": {
        m: {"entire_space_cvr_auc": {"mean": sum(v) / len(v), "std": 0.0, "values": v,
                                     "seeds": list(range(len(v)))}}
        for m, v in models.items()}}
    (out / "report.json").write_text(json.dumps(report))
    return str(out)


@pytest.fixture
def reports(tmp_path):
    small = _dataset(tmp_path, "small", 1_000_000, 7)
    big = _dataset(tmp_path, "big", 4_000_000, 7)
    other = _dataset(tmp_path, "other", 4_000_000, 23)
    return [_report(tmp_path, "r1", small, {"naive": [0.80], "esmm": [0.79]}),
            _report(tmp_path, "r2", small, {"autoheri": [0.78]}),
            _report(tmp_path, "r3", big, {"naive": [0.82, 0.83], "esmm": [0.84, 0.85]}),
            _report(tmp_path, "r4", other, {"esmm": [0.81]})]


def test_reports_of_one_dataset_merge_into_one_point_keyed_by_rows_and_generator_seed(reports):
    points = collect(reports, ["entire_space_cvr_auc"])
    keys = {(p["generator_seed"], p["rows"], p["model"]) for p in points}
    assert keys == {(7, 1_000_000, "naive"), (7, 1_000_000, "esmm"), (7, 1_000_000, "autoheri"),
                    (7, 4_000_000, "naive"), (7, 4_000_000, "esmm"), (23, 4_000_000, "esmm")}
    big_esmm = next(p for p in points if p["rows"] == 4_000_000 and p["model"] == "esmm"
                    and p["generator_seed"] == 7)
    assert big_esmm["mean"] == pytest.approx(0.845) and big_esmm["values"] == [0.84, 0.85]


def test_the_leader_per_size_and_the_written_table_and_plot(reports, tmp_path, capsys):
    out = str(tmp_path / "lc")
    assert main(["--reports", *reports, "--out", out, "--metrics", "entire_space_cvr_auc"]) == 0
    doc = json.load(open(os.path.join(out, "learning_curve.json")))
    lead = {(p["generator_seed"], p["rows"]): p["model"]
            for p in doc["leaders"]["entire_space_cvr_auc"]}
    assert lead == {(7, 1_000_000): "naive", (7, 4_000_000): "esmm", (23, 4_000_000): "esmm"}
    md = open(os.path.join(out, "learning_curve.md")).read()
    assert "0.8450 ± 0.0071 (2)" in md and "| 1,000,000 | 7 | 0.7800 (1) |" in md
    assert md.index("| 4,000,000 | 7 |") < md.index("| 4,000,000 | 23 |")  # main seed first
    assert os.path.getsize(os.path.join(out, "learning_curve.png")) > 10_000
    assert "models.learning_curve" in capsys.readouterr().out


def test_one_model_in_two_reports_of_the_same_dataset_is_an_error(reports, tmp_path):
    with pytest.raises(ValueError, match="in two reports"):
        learning_curve(reports + [reports[0]], str(tmp_path / "lc"))
    assert main(["--reports", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
