"""preprocessing.run end to end: splits, outputs, atomicity and every bad-input case."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from preprocessing import columns as C
from preprocessing.run import main, run
from preprocessing.splits import differing_columns, differing_vocabularies, read_split
from preprocessing.validate import InputValidationError


def _day_files(directory):
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.endswith(".parquet"))


def _rewrite(path, fn):
    table = pq.read_table(path)
    pq.write_table(fn(table), path)


def _set_column(table, name, array):
    return table.set_column(table.schema.get_field_index(name), name, array)


def test_output_holds_targets_ground_truth_app_and_media_columns(small_processed):
    df = read_split(os.path.join(small_processed, "test"))
    for col in ("click", "cart", "purchase", "p_click", "p_purchase_given_click",
                "purchase_counterfactual", "app_id"):
        assert col in df.columns
    assert [c for c in df.columns if c.startswith("media_")]
    for split in ("train", "valid", "test"):
        for name in ("schema.pbtxt", "_file_list.txt", "_metadata.json"):
            assert os.path.exists(os.path.join(small_processed, split, name))
    assert os.path.exists(os.path.join(small_processed, "workflow", "workflow.pkl"))


def test_the_hugectr_file_lists_name_the_final_parts(small_processed):
    for split in ("train", "valid", "test"):
        lines = open(os.path.join(small_processed, split, "_file_list.txt")).read().split()
        assert int(lines[0]) == len(lines) - 1 >= 1
        for part in lines[1:]:
            assert os.path.dirname(part) == os.path.abspath(os.path.join(small_processed, split))
            assert os.path.exists(part)
    assert C.DatasetSpec.load(small_processed) == C.synthetic_spec()


def test_last_day_is_test_previous_day_valid_rest_train(small_processed, small_generated):
    manifest = json.load(open(os.path.join(small_processed, "manifest.json")))
    files = [os.path.basename(f) for f in _day_files(small_generated)]
    assert manifest["files"] == {"train": files[:-2], "valid": [files[-2]], "test": [files[-1]]}
    for split, names in manifest["files"].items():
        rows = sum(pq.ParquetFile(os.path.join(small_generated, n)).metadata.num_rows
                   for n in names)
        assert manifest["rows_out"][split] == rows
    days = read_split(os.path.join(small_processed, "test"), [C.DAY])[C.DAY]
    assert days.nunique() == 1 and days.iloc[0] == len(files) - 1


def test_transform_keeps_labels_and_ground_truth_unchanged(small_processed, small_generated):
    raw = pq.read_table(_day_files(small_generated)[-1]).to_pandas()
    out = read_split(os.path.join(small_processed, "test"))
    for col in ("click", "purchase", "purchase_counterfactual"):
        assert np.array_equal(raw[col].to_numpy(), out[col].to_numpy())
    assert np.allclose(raw["p_click"].to_numpy(), out["p_click"].to_numpy())


def _assert_fails_atomically(input_dir, out, match, **kwargs):
    with pytest.raises(InputValidationError, match=match):
        run(input_dir, out, progress=False, **kwargs)
    assert not os.path.exists(out)
    leftovers = [f for f in os.listdir(os.path.dirname(out)) if ".partial-" in f]
    assert leftovers == []


def test_missing_column_names_file_column_and_rows(generated_copy, tmp_path):
    path = _day_files(generated_copy)[1]
    _rewrite(path, lambda t: t.drop(["media_shopping_minutes"]))
    rows = pq.ParquetFile(path).metadata.num_rows
    _assert_fails_atomically(generated_copy, str(tmp_path / "out"),
                             rf"day_001.parquet: missing column\(s\) \['media_shopping_minutes'\]"
                             rf" \({rows} rows\)")


def test_wrong_dtype_names_file_column_and_rows(generated_copy, tmp_path):
    path = _day_files(generated_copy)[0]
    _rewrite(path, lambda t: _set_column(t, C.CATEGORY_ID,
                                         pc.cast(t.column(C.CATEGORY_ID), pa.string())))
    _assert_fails_atomically(generated_copy, str(tmp_path / "out"),
                             r"day_000.parquet: column 'category_id' has dtype string, expected "
                             r"an integer type .*\(\d+ rows\)")


def test_nan_labels_are_rejected_with_the_row_count(generated_copy, tmp_path):
    path = _day_files(generated_copy)[2]

    def nan_clicks(t):
        click = t.column(C.CLICK).to_numpy().astype(np.float64)
        click[:7] = np.nan
        return _set_column(t, C.CLICK, pa.array(click, from_pandas=True))
    _rewrite(path, nan_clicks)
    _assert_fails_atomically(generated_copy, str(tmp_path / "out"),
                             r"day_002.parquet: column 'click' has 7 NaN label row\(s\)")


def test_non_binary_labels_are_rejected_with_the_row_count(generated_copy, tmp_path):
    path = _day_files(generated_copy)[0]

    def twos(t):
        cart = t.column(C.CART).to_numpy().copy()
        cart[:3] = 2
        return _set_column(t, C.CART, pa.array(cart))
    _rewrite(path, twos)
    _assert_fails_atomically(generated_copy, str(tmp_path / "out"),
                             r"column 'cart' has 3 non-binary label row\(s\), e.g. \[2\]")


def _break_funnel(path, n):
    def purchase_without_click(t):
        click = t.column(C.CLICK).to_numpy()
        purchase = t.column(C.PURCHASE).to_numpy().copy()
        cart = t.column(C.CART).to_numpy().copy()
        idx = np.flatnonzero(click == 0)[:n]
        purchase[idx] = 1
        cart[idx] = 1
        t = _set_column(t, C.PURCHASE, pa.array(purchase))
        return _set_column(t, C.CART, pa.array(cart))
    _rewrite(path, purchase_without_click)


def test_funnel_violations_error_by_default_naming_file_and_rows(generated_copy, tmp_path):
    _break_funnel(_day_files(generated_copy)[1], 5)
    _assert_fails_atomically(generated_copy, str(tmp_path / "out"),
                             r"day_001.parquet: 5 row\(s\) \(purchase_without_click=5, "
                             r"cart_without_click=5\)")


def test_funnel_violations_are_dropped_and_reported_under_the_drop_policy(generated_copy,
                                                                          tmp_path):
    path = _day_files(generated_copy)[0]
    _break_funnel(path, 4)
    out = str(tmp_path / "out")
    manifest = run(generated_copy, out, on_funnel_violation="drop", progress=False)
    dropped = manifest["funnel_violations_dropped"]
    assert list(dropped) == [path] and dropped[path]["rows"] == 4
    assert manifest["rows_out"]["train"] == manifest["rows_in"]["train"] - 4
    train = read_split(os.path.join(out, "train"), [C.CLICK, C.PURCHASE])
    assert not ((train[C.PURCHASE] == 1) & (train[C.CLICK] == 0)).any()


def test_empty_input_directory_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_fails_atomically(str(empty), str(tmp_path / "out"), "no dataset spec|empty input")


def test_zero_row_input_is_an_error(generated_copy, tmp_path):
    for path in _day_files(generated_copy):
        _rewrite(path, lambda t: t.slice(0, 0))
    _assert_fails_atomically(generated_copy, str(tmp_path / "out"), "empty input")


def test_a_file_that_is_not_parquet_is_named(generated_copy, tmp_path):
    with open(_day_files(generated_copy)[3], "wb") as fh:
        fh.write(b"not parquet at all")
    _assert_fails_atomically(generated_copy, str(tmp_path / "out"),
                             "day_003.parquet: not a readable Parquet file")


def test_too_few_days_for_train_valid_test_is_an_error(generated_copy, tmp_path):
    for path in _day_files(generated_copy)[2:]:
        os.remove(path)
    _assert_fails_atomically(generated_copy, str(tmp_path / "out"), "need at least 3")


def test_a_failed_run_leaves_an_existing_output_untouched(generated_copy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous result")
    _break_funnel(_day_files(generated_copy)[0], 1)
    with pytest.raises(InputValidationError):
        run(generated_copy, str(out), progress=False)
    assert (out / "keep.txt").read_text() == "previous result"


def test_cli_reports_bad_input_with_exit_code_2(generated_copy, tmp_path, capsys):
    _break_funnel(_day_files(generated_copy)[0], 2)
    code = main(["--input", generated_copy, "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    assert "funnel violation" in capsys.readouterr().err


def test_runs_on_an_existing_dask_scheduler_with_the_same_result(small_generated,
                                                                 small_processed, tmp_path):
    from distributed import LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        out = str(tmp_path / "out")
        manifest = run(small_generated, out, scheduler_address=cluster.scheduler_address,
                       progress=False)
        address = cluster.scheduler_address
    assert manifest["dask"] == f"scheduler {address}"
    ours = read_split(os.path.join(out, "test"), ["category_id", "item_price", "click"])
    ref = read_split(os.path.join(small_processed, "test"), ["category_id", "item_price",
                                                             "click"])
    assert ours.equals(ref)


def test_converted_real_aliccp_samples_preprocess_end_to_end(tmp_path):
    from preprocessing.convert import main as convert
    samples = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "real-samples")
    inputs = [os.path.join(samples, f"ali_ccp_{s}_sample.csv") for s in ("train", "val", "test")]
    assert convert(["--format", "aliccp-csv", "--input", *inputs, "--out",
                    str(tmp_path / "ccp")]) == 0
    manifest = run(str(tmp_path / "ccp"), str(tmp_path / "proc"), progress=False)
    assert manifest["rows_out"] == {"train": 100, "valid": 50, "test": 50}
    test = read_split(str(tmp_path / "proc" / "test"))
    assert {"click", "purchase", "user_id", "app_id"} <= set(test.columns)


def test_fast_cpu_path_writes_what_stock_nvtabular_writes(small_generated, small_processed,
                                                          tmp_path):
    """The reference: NVTabular 23.08's own Parquet reader, merge-based Categorify encoding
    and list helpers (``benchmarks.stock_equality``; the value-only hash stays)."""
    import nvtabular.ops.categorify as categorify
    from benchmarks.stock_equality import stock_nvtabular
    from preprocessing import merlin_patches
    out = str(tmp_path / "stock")
    with stock_nvtabular():
        run(small_generated, out, progress=False)
        assert categorify._encode is merlin_patches.original("_encode")  # the stock path ran
    assert categorify._encode is merlin_patches.encode_categories  # and is undone
    assert differing_columns(out, small_processed) == []
    assert differing_vocabularies(out, small_processed) == []


def test_a_two_process_cluster_writes_what_one_process_writes(small_generated, small_processed,
                                                             tmp_path):
    out = str(tmp_path / "cluster")
    manifest = run(small_generated, out, workers=2, progress=False)
    assert manifest["dask"] == "LocalCluster(2 workers x 1 threads)"
    assert differing_columns(out, small_processed) == []
