"""``python -m models.ukd.pilot``: flipped clicked labels and the heads' disagreement."""

import json
import os

from models.ukd.pilot import main


def test_the_pilot_flips_the_asked_share_of_clicked_labels_and_reports_both_groups(
        small_processed, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: {embedding_dim: 4, tower_units: [8], ukd_head_dropout: 0.3}\n")
    out = tmp_path / "pilot"
    assert main(["--data", small_processed, "--out", str(out), "--flip", "0.3", "--epochs", "1",
                 "--draws", "2", "--config", str(cfg), "--no-progress"]) == 0
    doc = json.load(open(out / "pilot.json"))
    assert doc["flipped_rows"] == round(0.3 * doc["clicked_rows"])
    assert doc["mean_kl_flipped"] > 0 and doc["mean_kl_clean"] > 0
    assert os.path.getsize(out / "pilot.png") > 5_000


def test_a_flip_share_outside_zero_one_is_refused(small_processed, tmp_path, capsys):
    assert main(["--data", small_processed, "--out", str(tmp_path / "p"), "--flip", "1.5",
                 "--no-progress"]) == 2
    assert "'flip'" in capsys.readouterr().err
