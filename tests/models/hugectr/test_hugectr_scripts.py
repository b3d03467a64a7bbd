"""The generated container scripts (``train_hugectr.py``, ``export_onnx.py``): they compile, use
only HugeCTR 23.08's documented API, build the graph of ``esmm_config.json``, and say that they
are verified only in the container; and the CLI around them."""

import ast
import os

import pytest

from models.hugectr.cli import main
from models.hugectr.graph import SPARSE
from models.hugectr.scripts import (DOCUMENTED_API, DOCUMENTED_ENUMS, EXPORT_SCRIPT, IMAGE,
                                    TRAIN_SCRIPT)

README = os.path.join(os.path.dirname(__file__), "..", "..", "..", "models", "hugectr",
                      "README.md")
IMPORTS = {"json", "os", "numpy", "hugectr", "hugectr2onnx", "hugectr.inference", "mpi4py"}


def _source(out, name):
    with open(os.path.join(out, name)) as fh:
        return fh.read()


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _dotted(n.func) == name]


def _kwargs(call):
    out = {}
    for k in call.keywords:
        try:
            out[k.arg] = ast.literal_eval(k.value)
        except ValueError:  # a name or an enum member
            pass
    return out


@pytest.mark.parametrize("script", [TRAIN_SCRIPT, EXPORT_SCRIPT])
def test_container_script_compiles_and_uses_only_the_documented_api(hugectr_out, script):
    source = _source(hugectr_out, script)
    tree = ast.parse(compile(source, script, "exec", flags=ast.PyCF_ONLY_AST))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= IMPORTS, imported - IMPORTS
    aliases = {"InferenceParams": "hugectr.inference.InferenceParams",
               "InferenceModel": "hugectr.inference.InferenceModel"}
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            name = aliases.get(name, name)
            if name and (name.split(".")[0] in ("hugectr", "hugectr2onnx", "model",
                                                 "inference_model")):
                assert name in DOCUMENTED_API, f"{script}: {name} is not documented API"
                bad = {k.arg for k in node.keywords} - set(DOCUMENTED_API[name])
                assert not bad, f"{script}: {name} has undocumented keywords {bad}"
                used.add(name)
        elif isinstance(node, ast.Attribute):
            name = _dotted(node)
            enum = name.rsplit(".", 1)[0] if name else None
            if enum in DOCUMENTED_ENUMS:
                assert node.attr in DOCUMENTED_ENUMS[enum], f"{script}: {name}"
    if script == TRAIN_SCRIPT:
        assert {"hugectr.CreateSolver", "hugectr.DataReaderParams", "hugectr.CreateOptimizer",
                "hugectr.Model", "hugectr.Input", "hugectr.SparseEmbedding",
                "hugectr.DenseLayer", "model.compile", "model.fit", "model.graph_to_json",
                "model.save_params_to_files"} <= used
    else:
        assert {"hugectr2onnx.converter.convert", "hugectr.inference.InferenceParams",
                "hugectr.inference.InferenceModel", "inference_model.predict"} <= used


def test_training_script_builds_the_graph_of_the_json_config(hugectr_out, hugectr_config,
                                                            hugectr_desc):
    tree = ast.parse(_source(hugectr_out, TRAIN_SCRIPT))
    dense = []
    for call in _calls(tree, "hugectr.DenseLayer"):
        kw = {k.arg: k.value for k in call.keywords}
        layer_type = kw["layer_type"].attr
        dense.append((layer_type, ast.literal_eval(kw["bottom_names"]),
                      ast.literal_eval(kw["top_names"])))
    want = [(x["type"], [x["bottom"]] if isinstance(x["bottom"], str) else x["bottom"],
             [x["top"]] if isinstance(x["top"], str) else x["top"])
            for x in hugectr_config["layers"][2:]]
    assert dense == want
    data = hugectr_config["layers"][0]
    (inp,) = _calls(tree, "hugectr.Input")
    kw = _kwargs(inp)
    assert kw["label_names"] == data["label"]["top"] and kw["label_dims"] == [1, 1]
    assert kw["dense_dim"] == data["dense"]["dense_dim"] and kw["dense_name"] == "dense"
    (param,) = _calls(tree, "hugectr.DataReaderSparseParam")
    assert [ast.literal_eval(a) for a in param.args] == [SPARSE, 1, True,
                                                         data["sparse"][0]["slot_num"]]
    slot_sizes = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                      and n.targets[0].id == "SLOT_SIZE_ARRAY")
    assert slot_sizes == data["slot_size_array"] == hugectr_desc["slot_size_array"]
    (emb,) = _calls(tree, "hugectr.SparseEmbedding")
    hp = hugectr_config["layers"][1]["sparse_embedding_hparam"]
    assert _kwargs(emb)["workspace_size_per_gpu_in_mb"] == hp["workspace_size_per_gpu_in_mb"]
    (reader,) = _calls(tree, "hugectr.DataReaderParams")
    assert _kwargs(reader)["source"] == data["source"]
    assert _kwargs(reader)["eval_source"] == data["eval_source"]
    (comp,) = _calls(tree, "model.compile")
    assert _kwargs(comp) == {"loss_names": ["click", "ctcvr"], "loss_weights": [1.0, 3.0]}
    (fit,) = _calls(tree, "model.fit")
    solver = hugectr_config["solver"]
    assert _kwargs(fit)["num_epochs"] == solver["num_epochs"] == 1
    assert _kwargs(fit)["eval_interval"] == solver["eval_interval"] == \
        min(1000, hugectr_desc["iterations"])
    (save,) = _calls(tree, "model.save_params_to_files")
    export = ast.parse(_source(hugectr_out, EXPORT_SCRIPT))
    consts = {n.targets[0].id: ast.literal_eval(n.value) for n in export.body
              if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
              and n.targets[0].id in ("DENSE_MODEL", "SPARSE_MODELS", "SLOT_SIZE_ARRAY")}
    prefix = ast.literal_eval(save.args[0])
    assert consts == {"DENSE_MODEL": f"{prefix}_dense_0.model",
                      "SPARSE_MODELS": [f"{prefix}0_sparse_0.model"],
                      "SLOT_SIZE_ARRAY": slot_sizes}


def test_scripts_and_readme_say_verified_only_in_the_container_with_the_command(hugectr_out):
    note = "VERIFIED ONLY IN THE NGC MERLIN-HUGECTR:23.08 CONTAINER; NOT RUN HERE"
    for script in (TRAIN_SCRIPT, EXPORT_SCRIPT):
        source = _source(hugectr_out, script)
        assert note in source
        assert "docker run --gpus all" in source and IMAGE in source
        assert "python train_hugectr.py && python export_onnx.py" in source
    with open(README) as fh:
        readme = fh.read()
    assert "verified only in the NGC merlin-hugectr:23.08 container; not run here" in readme
    assert IMAGE in readme and "python train_hugectr.py && python export_onnx.py" in readme
    assert "python -m serving.hugectr_onnx" in readme


def test_cli_writes_the_directory_and_prints_the_summary(tmp_path, small_processed, capsys):
    out = tmp_path / "esmm"
    assert main(["--data", small_processed, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "models.hugectr" in printed and "multi-hot left out" in printed
    assert "verified only in the NGC merlin-hugectr:23.08 container" in printed
    assert f"-v {out}:/workspace/esmm" in printed
    assert {"hugectr_data.json", "esmm_config.json", TRAIN_SCRIPT, EXPORT_SCRIPT,
            "data"} <= set(os.listdir(out))
    assert main(["--data", small_processed, "--out", str(out)]) == 0  # its own: replaced


def test_cli_refuses_a_foreign_directory_and_bad_input(tmp_path, small_processed, capsys):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert main(["--data", small_processed, "--out", str(foreign)]) == 2
    assert "refusing to replace it" in capsys.readouterr().err
    assert (foreign / "keep.txt").read_text() == "mine"
    assert main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such processed directory" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 0\n")
    assert main(["--data", small_processed, "--out", str(tmp_path / "o"),
                 "--config", str(bad)]) == 2
    assert "bad.yaml: The 'epochs' parameter" in capsys.readouterr().err
