"""The ensemble's steps without a server: the per-request workflow equals NVTabular's offline
transform, the lean executor equals Merlin's LocalExecutor, export writes the configs."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from preprocessing import columns as C

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def transformer(small_processed):
    from serving.preprocess import RequestTransformer
    spec = C.DatasetSpec.load(small_processed)
    return RequestTransformer(os.path.join(small_processed, "workflow"), spec)


def _raw_and_processed(proc_dir, n=3000):
    from preprocessing.splits import read_split
    manifest = json.load(open(os.path.join(proc_dir, "manifest.json")))
    raw = pd.concat([pd.read_parquet(os.path.join(manifest["input"], f))
                     for f in manifest["files"]["test"]], ignore_index=True).head(n)
    return raw, read_split(os.path.join(proc_dir, "test")).head(n)


def test_per_request_transform_equals_the_offline_workflow(transformer, small_processed):
    from serving.preprocess import compare_processed, from_frame
    raw, proc = _raw_and_processed(small_processed)
    got = transformer.transform_frame(raw)
    assert compare_processed(from_frame(proc[transformer.outputs], transformer.multihot),
                             got) == 0.0
    assert transformer.verify(raw) == 0.0  # and Merlin's LocalExecutor agrees


def test_served_rare_ids_get_the_tail_bucket_of_the_processed_split_by_the_id_hash(
        transformer, small_processed):
    from preprocessing.id_hash import id_hash
    from preprocessing.workflow import WorkflowConfig
    raw, proc = _raw_and_processed(small_processed)
    buckets = WorkflowConfig().tail_buckets
    got = transformer.transform_frame(raw)
    for col in ("user_id", "item_id"):
        codes = proc[col].to_numpy()
        tail = (codes >= 2) & (codes < 2 + buckets)  # hashed, not in the vocabulary
        assert tail.sum() > 20, f"{col}: too few rare ids for the test to mean anything"
        expected = (id_hash(raw[col].to_numpy()) % np.uint64(buckets)).astype(np.int64) + 2
        np.testing.assert_array_equal(codes[tail], expected[tail])
        served = np.asarray(got[col]).reshape(-1)
        np.testing.assert_array_equal(served[tail], codes[tail])


def test_merlin_executor_gives_the_same_columns(small_processed, transformer):
    from serving.preprocess import RequestTransformer, compare_processed
    merlin = RequestTransformer(os.path.join(small_processed, "workflow"),
                                C.DatasetSpec.load(small_processed), executor="merlin")
    probe = transformer.probe_frame(rows=64, seed=5)
    assert compare_processed(merlin.transform_frame(probe), transformer.transform_frame(probe)) \
        == 0.0


def test_lean_executor_refuses_a_mismatch(transformer):
    lookup = next(iter(next(iter(transformer._lookups.values())).values()))
    saved = lookup.labels.copy()
    lookup.labels[:] = lookup.labels[::-1]
    try:
        with pytest.raises(RuntimeError, match="differs"):
            transformer.verify()
    finally:
        lookup.labels[:] = saved


def test_request_validation_messages(transformer, small_processed):
    from serving.preprocess import RequestError, columns_from_tensors, request_tensors
    raw, _ = _raw_and_processed(small_processed, 5)
    t = request_tensors(raw, transformer.inputs, transformer.multihot, transformer.input_dtypes)
    cols = columns_from_tensors(t, transformer.inputs, transformer.multihot,
                                nullable=("media_watch_minutes",), max_list=5)
    assert len(cols["user_id"]) == 5
    bad = {**t, "item_price": t["item_price"].copy()}
    bad["item_price"][2] = np.nan
    with pytest.raises(RequestError, match="'item_price' holds 1 non-finite value.*row 2"):
        columns_from_tensors(bad, transformer.inputs, transformer.multihot)
    with pytest.raises(RequestError, match="empty batch"):
        columns_from_tensors({k: v[:0] for k, v in t.items()}, transformer.inputs,
                             transformer.multihot)
    long = {**t, "user_recent_cats": np.ones((5, 7), np.int64),
            "user_recent_cats__lengths": np.full((5, 1), 7)}
    with pytest.raises(RequestError, match="at most 5"):
        columns_from_tensors(long, transformer.inputs, transformer.multihot, max_list=5)


def test_identity_calibrate_step(tmp_path):
    from serving.steps import CalibrateStep
    (tmp_path / "serving.json").write_text(json.dumps({"step": "calibrate", "fields": []}))
    step = CalibrateStep(str(tmp_path))
    out = step.run([{"pctr": np.array([[0.5], [0.2]], np.float32),
                     "pcvr": np.array([[0.1], [0.3]], np.float32)},
                    {"pctr": np.array([[1.0]], np.float32), "pcvr": np.array([[0.4]], np.float32)}])
    assert np.allclose(out[0]["pcvr"].ravel(), [0.1, 0.3])
    assert np.allclose(out[0]["pctcvr"].ravel(), [0.05, 0.06])
    assert np.allclose(out[1]["pctcvr"].ravel(), [0.4])


def test_calibrate_step_cannot_load_without_the_artifact_module():
    """A missing ``calibration.artifact`` is an import error of the step, never a silent
    fall back to the identity calibrator."""
    import subprocess
    import sys
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'calibration.artifact':\n"
            "            raise ModuleNotFoundError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import serving.calibration\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0 and "blocked: calibration.artifact" in out.stderr


def test_export_writes_the_ensemble_and_the_ngc_variant(tmp_path, tiny_run, small_processed,
                                                        exported):
    """``exported`` (conftest) came from a copy of the workflow directory alone: no processed
    splits, manifest or raw input beside it."""
    import tensorflow as tf
    from serving.export import export, parse_instances
    from serving.settings import ExportSettings
    from pathlib import Path
    cpu = Path(exported)
    info = json.load(open(cpu / "export.json"))
    ens = (cpu / "extcvr" / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in ens and ens.count("model_name:") == 3
    pre = (cpu / "preprocess" / "config.pbtxt").read_text()
    assert "dynamic_batching" in pre and 'backend: "python"' in pre
    assert info["nullable"] == ["media_watch_minutes"] and info["max_list"] == 5
    assert info["runtime"] == "onnx" and info["onnx_max_abs_diff"] <= 1e-5
    assert os.path.isfile(cpu / "preprocess" / "1" / "workflow" / "workflow.pkl")
    export(tiny_run, os.path.join(small_processed, "workflow"), str(tmp_path / "ngc"),
           settings=ExportSettings(target="ngc"))
    cfg = (tmp_path / "ngc" / "predict" / "config.pbtxt").read_text()
    assert 'platform: "tensorflow_savedmodel"' in cfg and "KIND_GPU" in cfg
    # both targets carry the step code the same way, and no path of this machine
    for repo in (cpu, tmp_path / "ngc"):
        for step in ("preprocess", "calibrate"):
            code = repo / step / "1" / "code"
            assert (code / "serving" / "steps.py").is_file(), (repo, step)
            settings = (repo / step / "1" / "serving.json").read_text()
            assert str(tmp_path) not in settings and REPO not in settings
    # The NGC model's batched signature gives the run's predictions.
    from serving.steps import PredictStep, PreprocessStep
    pre = PreprocessStep(str(cpu / "preprocess" / "1"))
    raw, _ = _raw_and_processed(small_processed, 50)
    tensors = pre.run([pre_tensors(pre, raw)])[0]
    want = PredictStep(str(cpu / "predict" / "1")).predict(tensors)
    batched = tf.saved_model.load(str(tmp_path / "ngc" / "predict" / "1" / "model.savedmodel"))
    got = batched.signatures["serving_default"](**{k: tf.constant(v) for k, v in tensors.items()})
    for k in ("pctr", "pcvr"):
        assert np.allclose(got[k].numpy(), want[k], atol=1e-6)
    with pytest.raises(ValueError, match="--instances"):
        parse_instances("predict=0")


def test_export_replaces_its_own_export_but_refuses_another_directory(tmp_path, tiny_run,
                                                                      small_processed, capsys):
    from serving.export import export, main, parse_instances
    from serving.settings import ExportSettings
    wf = os.path.join(small_processed, "workflow")
    foreign = tmp_path / "triton_repo"
    foreign.mkdir()
    (foreign / "README.md").write_text("tracked")
    rc = main(["--run", tiny_run, "--workflow", wf, "--out", str(foreign), "--runtime", "tf"])
    assert rc == 2 and "not written by serving.export" in capsys.readouterr().err
    assert os.listdir(foreign) == ["README.md"]
    out = str(tmp_path / "repo")
    export(tiny_run, wf, out, settings=ExportSettings(runtime="tf"))
    export(tiny_run, wf, out, settings=ExportSettings(  # its own: replaced
        runtime="tf", max_batch_size=7, instances=parse_instances("preprocess=2")))
    assert json.load(open(os.path.join(out, "export.json")))["max_batch_size"] == 7
    assert "count: 2" in open(os.path.join(out, "preprocess", "config.pbtxt")).read()


def test_export_without_request_facts_names_the_file(tmp_path, tiny_run, small_processed):
    from serving.export import export
    from serving.settings import ExportSettings
    wf = shutil.copytree(os.path.join(small_processed, "workflow"), str(tmp_path / "wf"))
    os.remove(os.path.join(wf, "request_facts.json"))
    with pytest.raises(FileNotFoundError, match="request_facts.json.*--nullable and --max-list"):
        export(tiny_run, wf, str(tmp_path / "repo"), settings=ExportSettings(runtime="tf"))
    assert not os.path.exists(tmp_path / "repo")


def test_onnx_probe_comes_from_the_fitted_workflow_or_a_probe_file(tmp_path, tiny_run,
                                                                   small_processed):
    from serving.export import probe_feed
    from serving.settings import ExportSettings
    spec = C.DatasetSpec.load(small_processed)
    signature = json.load(open(os.path.join(tiny_run, "signature.json")))["inputs"]
    wf = os.path.join(small_processed, "workflow")
    synthetic = probe_feed(wf, spec, signature, ExportSettings(probe_rows=300))
    assert set(synthetic) == set(signature) and len(synthetic["user_id"]) == 300
    assert len(np.unique(synthetic["item_id"])) > 50  # vocabulary and unseen ids, not one value
    raw, proc = _raw_and_processed(small_processed, 40)
    path = str(tmp_path / "probe.parquet")
    raw.to_parquet(path)
    feed = probe_feed(wf, spec, signature, ExportSettings(probe=path))
    np.testing.assert_array_equal(feed["item_id"], proc["item_id"].to_numpy())
    raw.drop(columns=["item_price"]).to_parquet(path)
    with pytest.raises(ValueError, match=r"probe.parquet: 40 rows without .*'item_price'"):
        probe_feed(wf, spec, signature, ExportSettings(probe=path))


def pre_tensors(step, raw):
    from serving.preprocess import request_tensors
    t = step.transformer
    return request_tensors(raw, t.inputs, t.multihot, t.input_dtypes)
