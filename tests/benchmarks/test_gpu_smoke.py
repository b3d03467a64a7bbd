"""benchmarks.gpu_smoke on the CPU: its comparison logic with numpy standing in for CuPy, and
the clear 'not run' without CuPy (the GPU run itself needs a device)."""

import numpy as np

from benchmarks import gpu_smoke


def test_the_checks_pass_when_the_device_computes_what_the_cpu_does():
    result = gpu_smoke.run_checks(np, 5000, seed=3)
    assert result["ok"] and result["hash_mismatches"] == 0
    assert result["calibrator_max_abs_diff"] == 0.0


def test_a_device_that_computes_another_hash_fails_the_check():
    class Wrong:
        @staticmethod
        def asarray(x):
            return np.asarray(x) + 1  # another id: another hash

        interp = staticmethod(np.interp)
    result = gpu_smoke.run_checks(Wrong, 2000, seed=0)
    assert not result["ok"] and result["hash_mismatches"] > 1990


def test_the_sample_starts_with_the_edge_ids():
    ids = gpu_smoke.sample_ids(20, seed=0)
    assert ids[:3].tolist() == [0, 1, -1] and len(ids) == 20 and ids.dtype == np.int64


def test_without_cupy_it_says_it_did_not_run(capsys, monkeypatch):
    import builtins
    real = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_cupy)
    assert gpu_smoke.main(["--ids", "10"]) == 2
    assert "not run" in capsys.readouterr().err
