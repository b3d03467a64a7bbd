"""One short run of the training benchmark on the small processed dataset (no Merlin peer):
ESMM, naive and AutoHERI (searching and retrained), shared by the tests of this module."""

import json
import os

import pytest

from benchmarks.train_bench import main


@pytest.fixture(scope="module")
def bench(small_processed, tmp_path_factory):
    """``(results document, architecture)`` of one ``train_bench`` run."""
    from models.autoheri.architecture import Architecture, candidate_edges
    tmp = tmp_path_factory.mktemp("train_bench")
    tasks = ("click", "cart", "purchase")
    edges = candidate_edges(tasks, 3)
    arch = Architecture("autoheri", tasks, (128, 64, 32), edges, edges[:4], [0.5] * 27,
                        [0.0] * 27)
    arch_path = str(tmp / "autoheri_architecture.json")
    arch.save(arch_path)
    out = str(tmp / "results")
    assert main(["--data", small_processed, "--steps", "3", "--batch-size", "512", "--models",
                 "esmm", "naive", "autoheri", "--autoheri-architecture", arch_path, "--out",
                 out, "--no-peer", "--no-progress"]) == 0
    files = [f for f in os.listdir(out) if f.startswith("training_") and f.endswith(".json")]
    assert len(files) == 1
    return json.load(open(os.path.join(out, files[0]))), arch_path


def test_train_bench_writes_positive_throughputs_with_a_keras_adam_reference_for_esmm(bench):
    doc, _ = bench
    assert doc["batch_size"] == 512 and doc["steps"] == 3
    assert doc["data_rows"]["train"] > 0
    assert doc["loader"]["rows_per_second"] > 0
    for name in ("esmm", "naive"):
        r = doc["models"][name]
        assert r["samples_per_second"] > 0
        assert r["step_only_samples_per_second"] > 0
        assert r["steps_timed"] == 3
    assert doc["ratios_to_esmm"]["esmm"]["samples_per_second"] == 1.0
    assert doc["models"]["esmm"]["optimizer"] == "lazy_adam"
    reference = doc["models"]["esmm[keras_adam]"]
    assert reference["optimizer"] == "adam" and reference["samples_per_second"] > 0
    assert doc["ratios_to_esmm"]["esmm[keras_adam]"]["samples_per_second"] > 0
    assert "peer" not in doc
    assert "tensorflow" in doc["versions"] and "merlin-models" in doc["versions"]


def test_autoheri_is_benchmarked_searching_and_retrained_with_its_wall_time_ratio(bench):
    doc, arch_path = bench
    assert doc["autoheri_architecture"] == arch_path
    search, retrain = doc["models"]["autoheri[search]"], doc["models"]["autoheri"]
    assert search["samples_per_second"] > 0 and retrain["samples_per_second"] > 0
    assert search["trainable_params"] > retrain["trainable_params"]  # 27 gated edges vs 4
    esmm = doc["models"]["esmm"]["samples_per_second"]
    wall = doc["autoheri_wall_to_esmm"]
    expected = (wall["search_fraction"] * esmm / search["samples_per_second"]
                + esmm / retrain["samples_per_second"])
    assert abs(wall["ratio"] - expected) < 2e-3 and wall["retrain_row"] == "autoheri"
