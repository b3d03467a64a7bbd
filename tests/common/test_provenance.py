"""common.provenance: recorded commands and paths name directories by role or relative to the
repository, never by the absolute path of the machine that ran them."""

import os

from common.provenance import (REPO_ROOT, placeholder_for, portable_command, portable_path,
                               recorded_command)


def test_paths_after_flags_become_placeholders_named_for_the_flag():
    cmd = ("python -m benchmarks.federated_bench --data /data/fed/proc7 --steps 100 "
           "--psi-cache /data/fed/evalA/runs/federated_seed0/psi_cache --work /scratch/b "
           "--out=/scratch/b/results --no-progress")
    assert portable_command(cmd) == (
        "python -m benchmarks.federated_bench --data PROC --steps 100 --psi-cache PSI_CACHE "
        "--work WORK --out=WORK/results --no-progress")


def test_distinct_values_are_numbered_repeats_and_paths_below_reuse_the_name():
    cmd = ("python -m federated.local --data /d/proc --out /d/evalE --seeds 2; "
           "python -m federated.local (job A, stopped before its end: results_partial.json); "
           "python -m federated.local --data /d/proc --out /d/evalD2 --workflow /d/proc/workflow")
    assert portable_command(cmd) == (
        "python -m federated.local --data PROC --out OUT --seeds 2; "
        "python -m federated.local (job A, stopped before its end: results_partial.json); "
        "python -m federated.local --data PROC --out OUT_2 --workflow PROC/workflow")


def test_several_values_of_one_flag_repository_paths_and_positionals():
    config = os.path.join(REPO_ROOT, "models", "configs", "demo.yaml")
    argv = ["--runs", "/r/esmm_seed0", "/r/esmm_seed1", "--config", config, "--rows", "5",
            "/x/positional"]
    assert recorded_command("replay", argv) == (
        "python -m replay --runs RUN RUN_2 --config models/configs/demo.yaml --rows 5 PATH")
    assert recorded_command("benchmarks.run", ["--rows", "1000000"]) == \
        "python -m benchmarks.run --rows 1000000"
    # relative paths and values stay as given; arguments with blanks are quoted
    assert recorded_command("m", ["--out", "bench_out/x", "--label", "a b"]) == \
        "python -m m --out bench_out/x --label 'a b'"


def test_portable_path_uses_the_repository_a_named_root_or_the_placeholder():
    assert portable_path(os.path.join(REPO_ROOT, "benchmarks", "results"), "OUT") == \
        "benchmarks/results"
    assert portable_path("/scratch/exp/proc4m/train", "PROC",
                         roots={"/scratch/exp/proc4m": "PROC"}) == "PROC/train"
    assert portable_path("/scratch/exp/proc4m", "PROC", roots={"/scratch/exp": "WORK"}) == \
        "WORK/proc4m"
    assert portable_path("/scratch/elsewhere", "PROC", roots={"/scratch/exp": "WORK"}) == "PROC"
    assert portable_path(None, "PROC") is None


def test_placeholder_names():
    assert [placeholder_for(f) for f in ("data", "run", "out", "psi-cache", None)] == \
        ["PROC", "RUN", "OUT", "PSI_CACHE", "PATH"]


def test_the_results_page_renders_recorded_commands_without_machine_paths():
    from benchmarks.report import caption
    text = caption("benchmarks/results/x.json", "2026-12-01", "a CPU", "none",
                   "python -m benchmarks.train_bench --data /scratch/s3/bproc1m --out /scratch/o")
    assert "Command: `python -m benchmarks.train_bench --data PROC --out OUT`." in text


def test_a_path_recorded_relative_to_its_report_resolves_back_there(tmp_path):
    from common.provenance import relative_record, resolve_record
    data, report = tmp_path / "work" / "proc", tmp_path / "work" / "reports" / "r1"
    data.mkdir(parents=True)
    report.mkdir(parents=True)
    recorded = relative_record(str(data), str(report))
    assert recorded == os.path.join("..", "..", "proc") and not os.path.isabs(recorded)
    assert resolve_record(recorded, str(report)) == str(data)
    assert resolve_record(str(data), "/elsewhere") == str(data)  # files written before
