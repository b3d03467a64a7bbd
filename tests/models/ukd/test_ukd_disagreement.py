"""The UKD students' head disagreement: restoring a run, measuring ``u`` per row, the report."""

import json
import os

import numpy as np
import pandas as pd


def test_a_trained_students_disagreement_is_reported_for_clicked_and_unclicked_rows(
        ukd_student_run, pseudolabelled, tmp_path):
    from models.data import batches, features_and_targets, model_columns, split_dataset
    from models.ukd.disagreement import load_student, main
    run_dir = ukd_student_run
    # the restored student predicts what its run recorded on the test day
    model, config = load_student(run_dir, pseudolabelled)
    assert config.flat()["ukd_lambda"] == 50.0
    _, targets, schema = features_and_targets(pseudolabelled)
    x, _ = next(iter(batches(split_dataset(pseudolabelled, "test",
                                           model_columns(schema, targets)), 256, shuffle=False)))
    recorded = pd.read_parquet(os.path.join(run_dir, "predictions_test.parquet"))["pcvr"]
    np.testing.assert_allclose(model(x)["pcvr"].numpy().reshape(-1), recorded[:256],
                               rtol=1e-4, atol=1e-6)

    out = str(tmp_path / "disagreement")
    assert main(["--run", run_dir, "--data", pseudolabelled, "--out", out,
                 "--max-rows", "1500", "--draws", "2"]) == 0
    result = json.load(open(os.path.join(out, "disagreement.json")))
    assert result["run_lambda"] == 50.0
    assert result["clicked"]["rows"] + result["unclicked"]["rows"] == 1500
    assert result["clicked"]["rows"] > 0 and result["unclicked"]["rows"] > 0
    for part in ("clicked", "unclicked"):
        stats = result[part]
        assert 0.0 < stats["median"] <= stats["p90"]
        weights = [stats["mean_weight"][k] for k in sorted(stats["mean_weight"], key=float)]
        assert "50" in stats["mean_weight"]
        assert all(1.0 > a > b > 0.0 for a, b in zip(weights, weights[1:]))
    assert os.path.getsize(os.path.join(out, "disagreement.png")) > 0


def test_a_run_that_is_not_a_student_is_refused_by_name(ukd_teacher_run, pseudolabelled,
                                                       tmp_path, capsys):
    from models.ukd.disagreement import main
    assert main(["--run", ukd_teacher_run, "--data", pseudolabelled,
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ukd_teacher" in err and "UKD student" in err
    assert not os.path.exists(tmp_path / "out")


def test_the_level_free_disagreement_is_measured_on_the_same_rows(ukd_student_run,
                                                                  pseudolabelled):
    from models.data import features_and_targets, model_columns, split_dataset
    from models.ukd.disagreement import head_disagreement, load_student
    model, _ = load_student(ukd_student_run, pseudolabelled)
    _, targets, schema = features_and_targets(pseudolabelled)
    dataset = split_dataset(pseudolabelled, "valid", model_columns(schema, targets))
    kl, click = head_disagreement(model, dataset, 2048, 2, max_rows=3000)
    gap, click_again = head_disagreement(model, dataset, 2048, 2, max_rows=3000, kind="logit")
    assert len(kl) == len(gap) == 3000 and np.array_equal(click, click_again)
    assert (gap >= 0).all() and gap.mean() > 0 and not np.allclose(gap, kl)
