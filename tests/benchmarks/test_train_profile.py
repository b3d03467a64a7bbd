"""A short run of the training-step profile on the small processed dataset."""

import json
import math
import os

from benchmarks.train_profile import main


def test_train_profile_times_every_part_and_names_the_optimizer_in_the_file(small_processed,
                                                                            tmp_path):
    out = str(tmp_path / "results")
    for optimizer in ("adam", "lazy_adam"):
        assert main(["--data", small_processed, "--steps", "2", "--batch-size", "256",
                     "--optimizer", optimizer, "--out", out]) == 0
    files = sorted(os.listdir(out))
    assert [f.split("_2")[0] for f in files] == ["train_profile_adam", "train_profile_lazy_adam"]
    for f in files:
        doc = json.load(open(os.path.join(out, f)))
        assert doc["optimizer"] in f and doc["batch_size"] == 256
        parts = doc["seconds_per_step"]
        assert set(parts) == {"full_step", "forward", "forward_backward",
                              "input_layer_forward_backward", "optimizer_update"}
        assert all(isinstance(v, float) and math.isfinite(v) and v >= 0
                   for v in parts.values()), parts
        assert doc["share_of_full_step"]["full_step"] == 1.0
