"""Tests of ``preprocessing.convert``: real samples, bad inputs, the raw Ali-CCP join, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocessing import convert as cv
from preprocessing.columns import DatasetSpec
from preprocessing.readers.aliccp import RAW_FIELDS, field_column_name
from preprocessing.validate import InputValidationError, validate_dataset

#: The real-format samples, in this repository (provenance and licences in their MANIFEST.md).
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "real-samples"
ALICCP_DAYS = ("ali_ccp_train_sample.csv", "ali_ccp_val_sample.csv", "ali_ccp_test_sample.csv")
ALIEXPRESS_DAYS = ("aliexpress_tiny_train.csv", "aliexpress_tiny_test.csv")
FUNNEL_FILE = "aliccp_aitm_funnel_violations.csv"


@pytest.fixture
def samples() -> Path:
    """The directory of real data samples (``tests/data/real-samples``)."""
    assert SAMPLES.is_dir(), f"{SAMPLES}: the real samples are part of the repository"
    return SAMPLES


def read_day(out: Path, day: int) -> pd.DataFrame:
    """One converted day file as pandas."""
    return pq.read_table(out / cv.day_filename(day)).to_pandas()


def assert_converted_days_match_inputs(out: Path, inputs: List[Path], purchase_source: str):
    """Row counts, labels and the day column of every output file equal the input CSVs'."""
    manifest = json.loads((out / cv.MANIFEST_FILENAME).read_text())
    assert manifest["rows"] == sum(len(pd.read_csv(p)) for p in inputs)
    for day, path in enumerate(inputs):
        expected = pd.read_csv(path)
        got = read_day(out, day)
        assert len(got) == len(expected)
        assert manifest["rows_per_file"][cv.day_filename(day)] == len(expected)
        np.testing.assert_array_equal(got["click"], expected["click"])
        np.testing.assert_array_equal(got["purchase"], expected[purchase_source])
        assert (got["day"] == day).all()


def assert_canonical_dtypes(out: Path, spec: DatasetSpec):
    """Targets int32, categorical and day int64, continuous float32, nothing else."""
    schema = pq.read_schema(out / cv.day_filename(0))
    assert schema.names == spec.all_columns
    for col in spec.targets:
        assert schema.field(col).type == pa.int32()
    for col in (*spec.categorical, spec.split):
        assert schema.field(col).type == pa.int64()
    for col in spec.continuous:
        assert schema.field(col).type == pa.float32()


def write_variant(tmp_path: Path, source: Path, name: str, edit) -> Path:
    """A copy of a sample CSV (all cells as text) after ``edit(frame)``; returns its path."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    edit(frame)
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


# --- real samples -------------------------------------------------------------------------------

def _manifest_rows(path: Path):
    """The file table of MANIFEST.md: {file: (rows, funnel violations)}."""
    out = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[1].isdigit() and cells[2].isdigit():
            out[cells[0]] = (int(cells[1]), int(cells[2]))
    return out


def _rows_and_violations(path: Path):
    if path.suffix == ".txt":  # PaddleRec ESMM tokens: sample_id,click,ctcvr,...
        rows = [line.split(",") for line in path.read_text().splitlines() if line.strip()]
        return len(rows), sum(1 for r in rows if r[2] == "1" and r[1] == "0")
    df = pd.read_csv(path)
    label = "purchase" if "purchase" in df else "conversion"
    return len(df), int(((df[label] == 1) & (df["click"] == 0)).sum())


def test_manifest_counts_are_the_counts_in_the_files(samples):
    listed = _manifest_rows(samples / "MANIFEST.md")
    data_files = sorted(p.name for p in samples.iterdir() if p.suffix in (".csv", ".txt"))
    assert sorted(listed) == data_files
    for name, (rows, violations) in listed.items():
        assert _rows_and_violations(samples / name) == (rows, violations), name
    assert listed[FUNNEL_FILE][1] > 0  # the bad-input case really is one



def test_aliccp_csv_sample_converts_to_canonical_parquet_with_spec(samples, tmp_path):
    inputs = [samples / name for name in ALICCP_DAYS]
    out = tmp_path / "aliccp"
    cv.convert("aliccp-csv", [str(p) for p in inputs], str(out))

    assert sorted(p.name for p in out.iterdir()) == [
        "dataset_spec.json", "day_000.parquet", "day_001.parquet", "day_002.parquet",
        "manifest.json"]
    spec = DatasetSpec.load(str(out))
    assert spec.name == "aliccp-csv"
    assert spec.targets == ("click", "purchase")
    assert spec.categorical[:3] == ("user_id", "f_121", "f_122")
    assert {"item_id", "category_id", "shop_id", "brand_id", "app_id", "f_210",
            "f_150_14"} <= set(spec.categorical)
    assert len(spec.categorical) == 23
    assert spec.continuous == ("d_109_14", "d_110_14", "d_127_14", "d_150_14", "d_508", "d_509",
                               "d_702", "d_853")
    assert spec.log_continuous == ()
    assert_canonical_dtypes(out, spec)
    assert_converted_days_match_inputs(out, inputs, purchase_source="purchase")
    expected = pd.read_csv(inputs[0])
    got = read_day(out, 0)
    np.testing.assert_array_equal(got["user_id"], expected["101"])
    np.testing.assert_array_equal(got["app_id"], expected["301"])
    np.testing.assert_allclose(got["d_508"], expected["D508"], rtol=1e-6)
    validate_dataset(str(out), DatasetSpec.load(str(out)))


def test_aliexpress_tiny_samples_convert_to_two_days_with_purchase_from_conversion(samples,
                                                                                   tmp_path):
    inputs = [samples / name for name in ALIEXPRESS_DAYS]
    out = tmp_path / "aliexpress"
    cv.convert("aliexpress", [str(p) for p in inputs], str(out))

    spec = DatasetSpec.load(str(out))
    assert spec.name == "aliexpress"
    assert spec.categorical == tuple(f"cat_{k}" for k in range(1, 17))
    assert spec.continuous == tuple(f"num_{k}" for k in range(1, 64))
    assert spec.log_continuous == ()
    assert "app_id" not in spec.all_columns and "search_id" not in spec.all_columns
    assert_canonical_dtypes(out, spec)
    assert_converted_days_match_inputs(out, inputs, purchase_source="conversion")
    got, expected = read_day(out, 1), pd.read_csv(inputs[1])
    np.testing.assert_array_equal(got["cat_7"], expected["categorical_7"])
    np.testing.assert_allclose(got["num_63"], expected["numerical_63"], rtol=1e-6)
    validate_dataset(str(out), spec)


def test_aliexpress_oversampled_sample_converts_with_its_sixty_percent_clicks(samples, tmp_path):
    inputs = [samples / "aliexpress_oversampled_train.csv"]
    out = tmp_path / "oversampled"
    manifest = cv.convert("aliexpress", [str(inputs[0])], str(out))

    assert manifest["rows"] == 100
    assert_converted_days_match_inputs(out, inputs, purchase_source="conversion")
    assert read_day(out, 0)["click"].mean() == pytest.approx(0.6)
    validate_dataset(str(out), DatasetSpec.load(str(out)))


def test_chunked_conversion_writes_one_row_group_per_chunk_and_the_same_rows(samples, tmp_path):
    source = str(samples / ALICCP_DAYS[0])
    cv.convert("aliccp-csv", [source], str(tmp_path / "whole"))
    cv.convert("aliccp-csv", [source], str(tmp_path / "chunked"), chunk_rows=7)

    assert pq.ParquetFile(tmp_path / "whole" / "day_000.parquet").num_row_groups == 1
    assert pq.ParquetFile(tmp_path / "chunked" / "day_000.parquet").num_row_groups == 15
    pd.testing.assert_frame_equal(read_day(tmp_path / "chunked", 0),
                                  read_day(tmp_path / "whole", 0))


# --- funnel violations --------------------------------------------------------------------------

def funnel_violation_count(path: Path) -> int:
    """Rows of a CSV with purchase = 1 and click = 0, counted by pandas."""
    frame = pd.read_csv(path)
    return int(((frame["purchase"] == 1) & (frame["click"] == 0)).sum())


def test_aitm_layout_with_error_policy_raises_naming_file_and_count_and_leaves_no_output(
        samples, tmp_path):
    source = samples / FUNNEL_FILE
    # MANIFEST.md says 5 such rows; the file as copied holds 2 (rows 8 and 13 of the data).
    n_violations = funnel_violation_count(source)
    assert n_violations == 2
    out = tmp_path / "funnel"
    with pytest.raises(InputValidationError,
                       match=rf"{re.escape(FUNNEL_FILE)}: {n_violations} row\(s\) "
                             rf"\(purchase_without_click={n_violations}\)"):
        cv.convert("aliccp-csv", [str(source)], str(out))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_aitm_layout_with_drop_policy_drops_violations_and_records_them(samples, tmp_path):
    source = samples / FUNNEL_FILE
    n_violations = funnel_violation_count(source)
    out = tmp_path / "funnel"
    manifest = cv.convert("aliccp-csv", [str(source)], str(out), on_funnel_violation="drop")

    n_rows = len(pd.read_csv(source))
    assert manifest["rows"] == n_rows - n_violations == 46
    assert manifest["funnel_violations_dropped"] == {
        str(source): {"purchase_without_click": n_violations, "rows": n_violations}}
    assert json.loads((out / "manifest.json").read_text()) == manifest
    spec = DatasetSpec.load(str(out))
    assert "f_210" not in spec.categorical and spec.continuous == ()
    assert len(spec.categorical) == 18
    got = read_day(out, 0)
    assert not ((got["purchase"] == 1) & (got["click"] == 0)).any()
    validate_dataset(str(out), spec)


def test_error_keeps_the_previous_output_directory_untouched(samples, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("old run")
    with pytest.raises(InputValidationError):
        cv.convert("aliccp-csv", [str(samples / FUNNEL_FILE)], str(out))
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# --- bad inputs ---------------------------------------------------------------------------------

def test_csv_without_purchase_column_raises_naming_file_and_column(samples, tmp_path):
    path = write_variant(tmp_path, samples / ALICCP_DAYS[0], "no_purchase.csv",
                         lambda f: f.drop(columns="purchase", inplace=True))
    with pytest.raises(InputValidationError,
                       match=r"no_purchase\.csv: missing column\(s\) \['purchase'\]"):
        cv.convert("aliccp-csv", [str(path)], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_non_numeric_categorical_value_raises_naming_file_column_and_row_count(samples,
                                                                               tmp_path):
    def corrupt(frame):
        frame.loc[[3, 7, 9], "205"] = "abc"

    path = write_variant(tmp_path, samples / ALICCP_DAYS[0], "bad_205.csv", corrupt)
    with pytest.raises(InputValidationError,
                       match=r"bad_205\.csv \(data rows 1-100\): column '205' has 3 row\(s\) "
                             r"that do not parse as a number, e\.g\. \['abc'\]"):
        cv.convert("aliccp-csv", [str(path)], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_non_numeric_label_raises_naming_file_column_and_row_count(samples, tmp_path):
    def corrupt(frame):
        frame.loc[[0, 1], "click"] = "yes"

    path = write_variant(tmp_path, samples / ALICCP_DAYS[1], "bad_click.csv", corrupt)
    with pytest.raises(InputValidationError,
                       match=r"bad_click\.csv .*column 'click' has 2 row\(s\) that do not parse"):
        cv.convert("aliccp-csv", [str(path)], str(tmp_path / "out"))


def test_nan_label_raises_naming_file_column_and_row_count(samples, tmp_path):
    def blank(frame):
        frame.loc[[5, 6], "click"] = ""

    path = write_variant(tmp_path, samples / ALICCP_DAYS[0], "nan_click.csv", blank)
    with pytest.raises(InputValidationError,
                       match=r"nan_click\.csv .*column 'click' has 2 NaN label row\(s\)"):
        cv.convert("aliccp-csv", [str(path)], str(tmp_path / "out"))


def test_non_binary_label_raises_naming_file_column_and_row_count(samples, tmp_path):
    def two(frame):
        frame.loc[[10], "purchase"] = "2"

    path = write_variant(tmp_path, samples / ALICCP_DAYS[0], "label_two.csv", two)
    with pytest.raises(InputValidationError,
                       match=r"label_two\.csv .*column 'purchase' has 1 non-binary label "
                             r"row\(s\), e\.g\. \[2\]"):
        cv.convert("aliccp-csv", [str(path)], str(tmp_path / "out"))


def test_aliexpress_label_errors_name_the_source_column_conversion(samples, tmp_path):
    def blank(frame):
        frame.loc[[1, 2, 3], "conversion"] = ""

    path = write_variant(tmp_path, samples / ALIEXPRESS_DAYS[0], "nan_conversion.csv", blank)
    with pytest.raises(InputValidationError,
                       match=r"nan_conversion\.csv .*column 'conversion' has 3 NaN label"):
        cv.convert("aliexpress", [str(path)], str(tmp_path / "out"))


def test_empty_categorical_cell_raises_naming_file_column_and_row_count(samples, tmp_path):
    def blank(frame):
        frame.loc[[4], "206"] = ""

    path = write_variant(tmp_path, samples / ALICCP_DAYS[0], "blank_206.csv", blank)
    with pytest.raises(InputValidationError,
                       match=r"blank_206\.csv .*categorical column '206' has 1 empty row\(s\)"):
        cv.convert("aliccp-csv", [str(path)], str(tmp_path / "out"))


@pytest.mark.parametrize("content", ["", "click,purchase,101,205\n"],
                         ids=["zero_bytes", "header_only"])
def test_empty_input_file_raises_empty_input(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(InputValidationError, match=r"empty\.csv: empty input"):
        cv.convert("aliccp-csv", [str(path)], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_row_with_more_fields_than_the_header_raises_naming_file_and_line(samples, tmp_path):
    lines = (samples / ALICCP_DAYS[1]).read_text().splitlines()
    lines[5] += ",0.5"
    path = tmp_path / "long_row.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputValidationError,
                       match=r"long_row\.csv: not a readable CSV file .*Expected 33 fields in "
                             r"line 6, saw 34"):
        cv.convert("aliccp-csv", [str(path)], str(tmp_path / "out"))


def test_unknown_column_raises_instead_of_being_dropped(samples, tmp_path):
    def extra(frame):
        frame["price"] = "1"

    path = write_variant(tmp_path, samples / ALICCP_DAYS[2], "extra.csv", extra)
    with pytest.raises(InputValidationError,
                       match=r"extra\.csv: unexpected column\(s\) \['price'\]"):
        cv.convert("aliccp-csv", [str(path)], str(tmp_path / "out"))


def test_inputs_with_different_columns_raise_naming_the_odd_file(samples, tmp_path):
    with pytest.raises(InputValidationError,
                       match=rf"{re.escape(FUNNEL_FILE)}: its columns differ .*'d_109_14'"):
        cv.convert("aliccp-csv", [str(samples / ALICCP_DAYS[0]), str(samples / FUNNEL_FILE)],
                   str(tmp_path / "out"))


def test_missing_input_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv: input file not found"):
        cv.convert("aliccp-csv", [str(tmp_path / "nowhere.csv")], str(tmp_path / "out"))


# --- raw Ali-CCP --------------------------------------------------------------------------------

def feature_list(*items) -> str:
    """A raw feature list from (field, feature id, value) items."""
    return "\x01".join(f"{field}\x02{fid}\x03{value}" for field, fid, value in items)


def write_raw_pair(directory: Path, tag: str, skeleton_rows, common_rows):
    """Write ``sample_skeleton_<tag>.csv`` and ``common_features_<tag>.csv``; return both."""
    skeleton = directory / f"sample_skeleton_{tag}.csv"
    common = directory / f"common_features_{tag}.csv"
    skeleton.write_text("".join(
        f"{sid},{click},{buy},{md5},{len(items)},{feature_list(*items)}\n"
        for sid, click, buy, md5, items in skeleton_rows))
    common.write_text("".join(f"{md5},{len(items)},{feature_list(*items)}\n"
                              for md5, items in common_rows))
    return skeleton, common


USER_A = [("101", 11, 1.0), ("121", 21, 1.0), ("150_14", 1501, 0.5), ("150_14", 1502, 0.7),
          ("999", 9, 1.0)]
USER_B = [("101", 12, 1.0), ("109_14", 1091, 0.2), ("110_14", 1101, 0.3)]


@pytest.fixture
def raw_pairs(tmp_path):
    """Two days of a tiny raw Ali-CCP release (skeleton + common features per day)."""
    train = write_raw_pair(tmp_path, "train", [
        (1, 1, 1, "aaa", [("205", 5001, 1.0), ("206", 6001, 1.0), ("301", 2, 1.0)]),
        (2, 0, 0, "bbb", [("205", 5002, 1.0), ("216", 7001, 1.0), ("301", 3, 1.0)]),
        (3, 1, 0, "aaa", [("205", 5003, 1.0), ("101", 99, 1.0)]),
    ], [("aaa", USER_A), ("bbb", USER_B)])
    test = write_raw_pair(tmp_path, "test", [
        (4, 0, 0, "ccc", [("205", 5004, 1.0), ("207", 8001, 1.0)]),
        (5, 1, 1, "ccc", [("205", 5005, 1.0)]),
    ], [("ccc", [("101", 13, 1.0), ("127_14", 1271, 1.0)])])
    return train, test


def test_raw_aliccp_round_trip_joins_common_features_and_fills_absent_fields_with_zero(
        raw_pairs, tmp_path):
    (skeleton_train, common_train), (skeleton_test, common_test) = raw_pairs
    out = tmp_path / "raw_out"
    manifest = cv.convert("aliccp-raw", [str(skeleton_train), str(skeleton_test)], str(out),
                          chunk_rows=2, common_features=[str(common_train), str(common_test)])

    assert manifest["rows"] == 5 and manifest["rows_per_file"] == {
        "day_000.parquet": 3, "day_001.parquet": 2}
    spec = DatasetSpec.load(str(out))
    assert spec.name == "aliccp-raw"
    assert spec.categorical == tuple(field_column_name(f) for f in RAW_FIELDS)
    assert spec.continuous == ()
    assert_canonical_dtypes(out, spec)
    assert pq.ParquetFile(out / "day_000.parquet").num_row_groups == 2
    day0, day1 = read_day(out, 0), read_day(out, 1)
    assert day0["click"].tolist() == [1, 0, 1] and day0["purchase"].tolist() == [1, 0, 0]
    assert day0["item_id"].tolist() == [5001, 5002, 5003]
    # user fields come from the common features; the skeleton's own id wins over them (row 3)
    assert day0["user_id"].tolist() == [11, 12, 99]
    assert day0["f_121"].tolist() == [21, 0, 21]
    # multi-valued fields keep their first id; absent fields are 0
    assert day0["f_150_14"].tolist() == [1501, 0, 1501]
    assert day0["f_109_14"].tolist() == [0, 1091, 0]
    assert day0["category_id"].tolist() == [6001, 0, 0]
    assert day0["brand_id"].tolist() == [0, 7001, 0]
    assert day0["app_id"].tolist() == [2, 3, 0]
    assert (day0["day"] == 0).all() and (day1["day"] == 1).all()
    assert day1["user_id"].tolist() == [13, 13] and day1["shop_id"].tolist() == [8001, 0]
    assert day1["f_127_14"].tolist() == [1271, 1271] and day1["f_127"].tolist() == [0, 0]
    validate_dataset(str(out), spec)


def test_raw_aliccp_md5_missing_from_common_features_raises_naming_file_and_count(
        raw_pairs, tmp_path):
    (_, common_train), _ = raw_pairs
    skeleton, _ = write_raw_pair(tmp_path, "orphans", [
        (1, 0, 0, "aaa", [("205", 1, 1.0)]),
        (2, 0, 0, "zzz", [("205", 2, 1.0)]),
        (3, 0, 0, "yyy", [("205", 3, 1.0)]),
    ], [])
    with pytest.raises(InputValidationError,
                       match=r"sample_skeleton_orphans\.csv \(data rows 1-3\): column 'md5' has "
                             r"2 row\(s\) whose md5 is missing from the common features "
                             r".*common_features_train\.csv"):
        cv.convert("aliccp-raw", [str(skeleton)], str(tmp_path / "out"),
                   common_features=[str(common_train)])
    assert not (tmp_path / "out").exists()


def test_raw_aliccp_malformed_feature_item_raises_naming_file_and_row_count(raw_pairs,
                                                                            tmp_path):
    (_, common_train), _ = raw_pairs
    skeleton, _ = write_raw_pair(tmp_path, "malformed", [
        (1, 0, 0, "aaa", [("205", "x7", 1.0)]),
        (2, 0, 0, "bbb", [("205", 2, 1.0)]),
    ], [])
    with pytest.raises(InputValidationError,
                       match=r"sample_skeleton_malformed\.csv \(data rows 1-2\): column "
                             r"'feature_list' has 1 row\(s\) with an item that is not"):
        cv.convert("aliccp-raw", [str(skeleton)], str(tmp_path / "out"),
                   common_features=[str(common_train)])


def test_raw_aliccp_funnel_violation_is_dropped_under_drop_policy(raw_pairs, tmp_path):
    (_, common_train), _ = raw_pairs
    skeleton, _ = write_raw_pair(tmp_path, "buy_no_click", [
        (1, 0, 1, "aaa", [("205", 1, 1.0)]),
        (2, 1, 1, "bbb", [("205", 2, 1.0)]),
    ], [])
    manifest = cv.convert("aliccp-raw", [str(skeleton)], str(tmp_path / "out"),
                          on_funnel_violation="drop", common_features=[str(common_train)])
    assert manifest["rows"] == 1
    assert manifest["funnel_violations_dropped"][str(skeleton)]["purchase_without_click"] == 1


# --- CLI ----------------------------------------------------------------------------------------

def test_cli_converts_samples_prints_summary_and_returns_zero(samples, tmp_path, capsys):
    out = tmp_path / "cli"
    status = cv.main(["--format", "aliccp-csv", "--input", str(samples / FUNNEL_FILE),
                      "--out", str(out), "--on-funnel-violation", "drop", "--chunk-rows", "16"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "preprocessing.convert" in printed and "day_000.parquet" in printed
    assert re.search(r"funnel violations dropped \(aliccp_aitm_funnel_violations\.csv\) \| 2 "
                     r"\(purchase_without_click=2\)", printed)
    assert (out / "dataset_spec.json").is_file()


def test_cli_returns_two_with_error_message_on_bad_input(samples, tmp_path, capsys):
    out = tmp_path / "cli"
    status = cv.main(["--format", "aliccp-csv", "--input", str(samples / FUNNEL_FILE),
                      "--out", str(out)])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: funnel violation") and FUNNEL_FILE in err
    assert not out.exists()


@pytest.mark.parametrize("extra_args, message", [
    ([], "needs --common-features"),
    (["--common-features", "a.csv", "b.csv"], "one --common-features file per --input"),
])
def test_cli_returns_two_when_raw_format_lacks_one_common_features_file_per_input(
        raw_pairs, tmp_path, capsys, extra_args, message):
    (skeleton_train, _), _ = raw_pairs
    status = cv.main(["--format", "aliccp-raw", "--input", str(skeleton_train),
                      "--out", str(tmp_path / "out"), *extra_args])
    assert status == 2
    assert message in capsys.readouterr().err


def test_cli_returns_two_for_a_missing_input_file(tmp_path, capsys):
    status = cv.main(["--format", "aliexpress", "--input", str(tmp_path / "nowhere.csv"),
                      "--out", str(tmp_path / "out")])
    assert status == 2
    assert "nowhere.csv: input file not found" in capsys.readouterr().err
