"""The ONNX adapter: a model with ``hugectr2onnx``'s inputs and outputs, wrapped, serves through
the ensemble's ONNX Runtime predict step with the right key offsets and output names.

``hugectr2onnx`` itself needs a trained HugeCTR model (container only), so the model here is a
stand-in built from the generated ``esmm_config.json`` and random weights with the converter's
conventions (HugeCTR 23.08 ``onnx_converter/hugectr2onnx``): inputs ``dense`` ``[B, dense_dim]``
float32 and ``data1`` ``[B, slots, 1]`` int64 offset keys, a key-to-row ``Gather`` (row 0 = zeros
for unknown keys), ``ReduceSum`` over the nnz axis, the dense layers, each loss turned into a
``Sigmoid`` whose output is named after its label; opset 10, IR version 7."""

import json
import os
import shutil

import numpy as np
import pytest

from models.hugectr.data import read_export_rows
from models.hugectr.graph import random_weights, reference_forward
from serving.hugectr_onnx import (REPOSITORY_FORMAT, adapt, check, ensemble_tensors,
                                         install, main, predict_step, raw_feed, raw_io)
from models.hugectr.scripts import ONNX_FILE, PREDICTIONS_FILE


def _list(x):
    return [x] if isinstance(x, str) else list(x)


def standin_model(cfg, weights):
    """A hugectr2onnx-shaped ONNX model of ``cfg`` with ``weights`` (module docstring)."""
    from onnx import TensorProto, helper, numpy_helper
    data, embedding = cfg["layers"][0], cfg["layers"][1]
    n_slots, dense_dim = data["sparse"][0]["slot_num"], data["dense"]["dense_dim"]
    table = weights[f"{embedding['top']}/table"]
    inits = [numpy_helper.from_array(np.arange(1, len(table) + 1, dtype=np.int64),
                                     "key_to_indice_hash_all_tables"),
             numpy_helper.from_array(np.vstack([np.zeros((1, table.shape[1]), np.float32),
                                                table]), "table")]
    nodes = [helper.make_node("Gather", ["key_to_indice_hash_all_tables", "data1"], ["idx"],
                              axis=0),
             helper.make_node("Gather", ["table", "idx"], ["emb"], axis=0),
             helper.make_node("ReduceSum", ["emb"], [embedding["top"]], axes=[-2], keepdims=0)]

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for layer in cfg["layers"][2:]:
        t, b, top = layer["type"], _list(layer["bottom"]), _list(layer["top"])
        if t == "Reshape":
            nodes.append(helper.make_node("Reshape", [b[0], const(top[0] + "_shape", np.array(
                [-1, layer["leading_dim"]], np.int64))], top))
        elif t == "Concat":
            nodes.append(helper.make_node("Concat", b, top, axis=layer["axis"]))
        elif t == "Slice":
            for name, (a, e) in zip(top, layer["ranges"]):
                nodes.append(helper.make_node("Slice", [
                    b[0], const(name + "_s", np.array([a], np.int64)),
                    const(name + "_e", np.array([e], np.int64)),
                    const(name + "_a", np.array([-1], np.int64))], [name]))
        elif t == "InnerProduct":
            w = const(top[0] + "_weight", weights[f"{top[0]}/weight"])
            bias = const(top[0] + "_bias", weights[f"{top[0]}/bias"].reshape(1, -1))
            nodes += [helper.make_node("MatMul", [b[0], w], [top[0] + "_mm"]),
                      helper.make_node("Add", [top[0] + "_mm", bias], top)]
        elif t in ("ReLU", "Sigmoid", "Add", "Sub"):
            nodes.append(helper.make_node({"ReLU": "Relu"}.get(t, t), b, top))
        elif t == "BinaryCrossEntropyLoss":
            nodes.append(helper.make_node("Sigmoid", [b[0]], [b[1]]))
        else:
            raise AssertionError(t)
    graph = helper.make_graph(
        nodes, "hugectr",
        [helper.make_tensor_value_info("dense", TensorProto.FLOAT, [None, dense_dim]),
         helper.make_tensor_value_info("data1", TensorProto.INT64, [None, n_slots, 1])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [None, 1])
         for x in data["label"]["top"]], inits)
    model = helper.make_model(graph)
    model.opset_import[0].version = 10
    model.ir_version = 7
    return model


@pytest.fixture(scope="module")
def weights(hugectr_config):
    return random_weights(hugectr_config, seed=3)


@pytest.fixture(scope="module")
def standin(hugectr_config, weights):
    import onnx
    model = standin_model(hugectr_config, weights)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def adapted_path(tmp_path_factory, standin, hugectr_desc):
    import onnx
    path = str(tmp_path_factory.mktemp("adapted") / "model.onnx")
    onnx.save(adapt(standin, hugectr_desc), path)
    return path


def _reference(hugectr_config, weights, hugectr_desc, rows):
    feed = raw_feed(rows, hugectr_desc, {"dense": "dense", "sparse": "data1"})
    return reference_forward(hugectr_config, weights, feed["dense"], feed["data1"][:, :, 0])


def test_standin_follows_the_converter_contract_and_the_reference(standin, hugectr_config,
                                                                 weights, hugectr_out,
                                                                 hugectr_desc):
    import onnxruntime as ort
    assert raw_io(standin) == {"dense": "dense", "sparse": "data1"}
    rows = read_export_rows(hugectr_out, "test", 300, hugectr_desc)
    session = ort.InferenceSession(standin.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    click, ctcvr = session.run(["click", "ctcvr"], raw_feed(rows, hugectr_desc, raw_io(standin)))
    ref = _reference(hugectr_config, weights, hugectr_desc, rows)
    np.testing.assert_allclose(click[:, 0], ref["click"], atol=1e-5)
    np.testing.assert_allclose(ctcvr[:, 0], ref["ctcvr"], atol=1e-5)


def test_adapted_model_serves_through_the_predict_step(tmp_path, adapted_path, hugectr_config,
                                                      weights, hugectr_out, hugectr_desc):
    rows = read_export_rows(hugectr_out, "test", 500, hugectr_desc)
    step = predict_step(str(tmp_path / "predict" / "1"), adapted_path, hugectr_desc)
    got = step.predict(ensemble_tensors(rows, hugectr_desc))
    ref = _reference(hugectr_config, weights, hugectr_desc, rows)
    assert got["pctr"].shape == got["pcvr"].shape == (500, 1)
    np.testing.assert_allclose(got["pctr"][:, 0], ref["click"], atol=1e-5)
    np.testing.assert_allclose(got["pcvr"][:, 0], ref["ctcvr"] / ref["click"], rtol=1e-4,
                               atol=1e-6)
    assert np.all((got["pcvr"] > 0) & (got["pcvr"] <= 1))


def test_adapted_model_takes_the_real_processed_feed_with_its_multihot_lists(
        adapted_path, hugectr_config, weights, hugectr_out, hugectr_desc, small_processed):
    """The feed of serving.preprocess.signature_inputs on processed rows (multi-hot values and
    offsets included): the multi-hot inputs are accepted and do not change the outputs."""
    from preprocessing.splits import read_split
    from serving.onnx_export import OnnxModel
    from serving.preprocess import ListColumn, signature_inputs
    frame = read_split(os.path.join(small_processed, "test")).head(400)
    signature = hugectr_desc["signature"]["inputs"]
    processed = {}
    for name in frame.columns:
        if name + "__values" in signature:
            processed[name] = ListColumn.from_lists(list(frame[name]))
            assert processed[name].lengths.sum() > 0
        elif name in signature:
            processed[name] = frame[name].to_numpy()
    feed = signature_inputs(processed, signature)
    assert set(feed) == set(signature)
    got = OnnxModel(adapted_path)(feed)
    rows = read_export_rows(hugectr_out, "test", 400, hugectr_desc)
    ref = _reference(hugectr_config, weights, hugectr_desc, rows)
    np.testing.assert_allclose(got["pctr"], ref["click"], atol=1e-5)
    np.testing.assert_allclose(got["pcvr"], ref["ctcvr"] / ref["click"], rtol=1e-4, atol=1e-6)


def test_adapter_folds_a_code_past_its_slot_size_back_into_the_slot(adapted_path,
                                                                     hugectr_desc):
    """A code past its slot size reads its own slot's row (Mod), never the next slot's; a
    different code in range reads a different row."""
    from serving.onnx_export import OnnxModel
    signature = hugectr_desc["signature"]["inputs"]
    model = OnnxModel(adapted_path)
    base = {k: np.zeros(2, np.int64 if v["dtype"] == "int64" else np.float32)
            for k, v in signature.items() if not k.endswith("__offsets")}
    for k in signature:
        if k.endswith("__values"):
            base[k] = np.zeros(0, np.int64)
        if k.endswith("__offsets"):
            base[k] = np.zeros(3, np.int64)
    first, second = (hugectr_desc["slots"][0], hugectr_desc["slots"][1])
    a = dict(base, **{first["name"]: np.array([2, 2]), second["name"]: np.array([2, 2])})
    b = dict(a, **{second["name"]: np.array([2, 2 + second["size"]])})
    out_a, out_b = model(a), model(b)
    np.testing.assert_allclose(out_b["pctr"], out_a["pctr"], atol=1e-7)
    c = dict(a, **{first["name"]: np.array([2, 3])})
    assert not np.isclose(model(c)["pctr"][1], out_a["pctr"][1], atol=1e-7)


def test_adapter_refuses_a_model_with_another_slot_count(hugectr_config, weights, hugectr_desc):
    desc = json.loads(json.dumps(hugectr_desc))
    desc["slots"] = desc["slots"][:-1]
    with pytest.raises(ValueError, match="one-hot slots"):
        adapt(standin_model(hugectr_config, weights), desc)


def _check_dir(tmp_path, hugectr_out, standin, adapted_path, predictions=None):
    import onnx
    d = tmp_path / "run"
    d.mkdir()
    os.symlink(os.path.join(hugectr_out, "data"), d / "data")
    shutil.copy(os.path.join(hugectr_out, "hugectr_data.json"), d)
    onnx.save(standin, str(d / ONNX_FILE))
    shutil.copy(adapted_path, d / "model.onnx")
    if predictions is not None:
        np.save(d / PREDICTIONS_FILE, predictions)
    return d


def test_check_compares_onnx_with_hugectr_predictions_and_the_adapter(
        tmp_path, hugectr_out, hugectr_desc, hugectr_config, weights, standin, adapted_path):
    rows = read_export_rows(hugectr_out, "test", 256, hugectr_desc)
    ref = _reference(hugectr_config, weights, hugectr_desc, rows)
    good = np.stack([ref["click"], ref["ctcvr"]], axis=1)
    d = _check_dir(tmp_path, hugectr_out, standin, adapted_path, good)
    result = check(str(d), rows=1000)
    assert result["rows"] == 256
    assert result["hugectr_vs_onnx"] < 1e-5 and result["adapter_vs_onnx"] < 1e-6
    np.save(d / PREDICTIONS_FILE, good + 0.01)
    assert check(str(d))["hugectr_vs_onnx"] == pytest.approx(0.01, abs=1e-5)
    assert main(["--dir", str(d)]) == 2  # over the default tolerance 1e-4


def _repo(tmp_path, desc, **info):
    repo = tmp_path / "repo"
    version = repo / "predict" / "1"
    (version / "saved_model").mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"tf2onnx model")
    (version / "serving.json").write_text(json.dumps(
        {"step": "predict", "signature": desc["signature"], "multihot": ["user_recent_cats"],
         "runtime": "onnx"}))
    (repo / "export.json").write_text(json.dumps(
        {"format": REPOSITORY_FORMAT, "target": "cpu", "runtime": "onnx", "calibrator": None,
         **info}))
    return repo


def test_install_replaces_the_predict_model_of_an_onnx_cpu_repository(
        tmp_path, hugectr_out, hugectr_desc, standin, adapted_path, capsys):
    d = _check_dir(tmp_path, hugectr_out, standin, adapted_path)
    repo = _repo(tmp_path, hugectr_desc)
    assert main(["--dir", str(d), "--install", str(repo)]) == 0
    assert "no hugectr_test_predictions.npy" in capsys.readouterr().out
    version = repo / "predict" / "1"
    with open(version / "model.onnx", "rb") as a, open(d / "model.onnx", "rb") as b:
        assert a.read() == b.read()
    assert not (version / "saved_model").exists()
    info = json.loads((repo / "export.json").read_text())
    assert info["predict_model"]["framework"] == "hugectr"
    assert info["onnx_max_abs_diff"] < 1e-6
    assert json.loads((version / "hugectr.json").read_text())["onnx_sha256"]


@pytest.mark.parametrize("change,message", [
    ({"runtime": "tf"}, "needs the ONNX Runtime predict step"),
    ({"calibrator": "adacalib"}, "fitted on another model"),
    ({"signature": "other"}, "predict signature differs")])
def test_install_refuses_a_repository_it_does_not_fit(tmp_path, hugectr_desc, adapted_path,
                                                      change, message):
    desc, change = hugectr_desc, dict(change)
    if change.pop("signature", None):
        desc = json.loads(json.dumps(hugectr_desc))
        desc["signature"]["inputs"]["extra"] = {"dtype": "int64", "shape": [None]}
    repo = _repo(tmp_path, hugectr_desc, **change)
    with pytest.raises(ValueError, match=message):
        install(str(repo), adapted_path, desc)
    assert (repo / "predict" / "1" / "model.onnx").read_bytes() == b"tf2onnx model"
