"""``python -m models.pseudolabel``: the teacher's pCVR as a tagged column that never becomes a
model input."""

import json
import os

import numpy as np
import pandas as pd

from models.pseudolabel import main
from preprocessing import columns as C
from preprocessing.splits import read_split


def test_every_split_gets_the_teachers_pcvr_in_file_order(pseudolabelled, ukd_teacher_run,
                                                          small_processed):
    from models.predict import predict_split
    for split in ("train", "valid", "test"):
        got = read_split(os.path.join(pseudolabelled, split), None)
        src = read_split(os.path.join(small_processed, split), None)
        pd.testing.assert_frame_equal(got.drop(columns=C.TEACHER_PCVR), src)
        want = predict_split(os.path.join(ukd_teacher_run, "saved_model"), small_processed,
                             split)
        np.testing.assert_allclose(got[C.TEACHER_PCVR].to_numpy(), want["pcvr"].to_numpy(),
                                   rtol=0, atol=1e-6)
    manifest = json.load(open(os.path.join(pseudolabelled, "manifest.json")))
    assert manifest["pseudolabel"]["teacher"] == os.path.abspath(ukd_teacher_run)
    assert manifest["pseudolabel"]["teacher_model"] == "ukd_teacher"
    assert os.path.isdir(os.path.join(pseudolabelled, "workflow"))
    for split in ("train", "valid", "test"):  # the HugeCTR file list names this copy's parts
        listed = open(os.path.join(pseudolabelled, split, "_file_list.txt")).read().split()
        assert int(listed[0]) == len(listed) - 1 >= 1
        assert all(os.path.dirname(p) == os.path.abspath(os.path.join(pseudolabelled, split))
                   and os.path.exists(p) for p in listed[1:])


def test_the_pseudo_label_never_reaches_a_models_inputs(pseudolabelled, tmp_path):
    from models.config import ModelConfig, TrainConfig
    from models.data import features_and_targets, load_schema, model_columns
    from models.train import train
    schema = load_schema(pseudolabelled, "train")
    tags = {str(getattr(t, "value", t)) for t in schema[C.TEACHER_PCVR].tags}
    assert tags == {C.PSEUDO_LABEL_TAG, "target"}
    features, targets, _ = features_and_targets(pseudolabelled)
    assert C.TEACHER_PCVR not in {f.name for f in features}
    assert C.TEACHER_PCVR not in model_columns(schema, targets)
    train("esmm", pseudolabelled, str(tmp_path / "run"), 0,
          ModelConfig(embedding_dim=4, tower_units=(8,)),
          TrainConfig(batch_size=2048, max_steps=2, checkpoint_every=1000), progress=False)
    cfg = json.load(open(tmp_path / "run" / "config.json"))
    assert C.TEACHER_PCVR not in {f["name"] for f in cfg["features"]}


def test_a_missing_teacher_is_a_clear_error_and_writes_nothing(small_processed, tmp_path,
                                                              capsys):
    out = tmp_path / "out"
    assert main(["--teacher", str(tmp_path / "nope"), "--data", small_processed, "--out",
                 str(out), "--no-progress"]) == 2
    assert "saved_model" in capsys.readouterr().err and not out.exists()


def test_pseudo_labelling_a_pseudo_labelled_copy_is_refused(pseudolabelled, ukd_teacher_run,
                                                            tmp_path, capsys):
    out = tmp_path / "again"
    assert main(["--teacher", ukd_teacher_run, "--data", pseudolabelled, "--out", str(out),
                 "--no-progress"]) == 2
    assert C.TEACHER_PCVR in capsys.readouterr().err and not out.exists()
