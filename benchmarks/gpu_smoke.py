"""GPU smoke check that needs only CUDA and CuPy (not the Merlin image): the id hash of the
Categorify tail on the GPU equals the CPU one, and a piecewise-linear calibrator's arithmetic
agrees between the devices.

Usage::

    python -m benchmarks.gpu_smoke [--ids 10000000] [--seed 0] [--out FILE.json]

Checks (each must hold exactly, or to the stated tolerance):

- ``preprocessing.id_hash`` of ``--ids`` int64 ids (random over the whole 64-bit range, plus
  0, -1, the extremes and multiples of the SplitMix64 gamma) computed by CuPy equals numpy's,
  bit for bit, and so do the tail buckets ``hash % 1024`` (what ``merlin_patches.hash_series``
  feeds Categorify on cuDF and on pandas);
- a monotone piecewise-linear map (the form of the served calibrators) evaluated with
  ``cupy.interp`` agrees with ``numpy.interp`` to 1e-6 on the same inputs.

Exit status 0 when every check holds, 1 when one fails, 2 without CuPy or a CUDA device (the
message says so: the check was not run). The JSON holds the figures, the device and the
versions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from preprocessing.id_hash import GOLDEN, id_hash


def sample_ids(n: int, seed: int) -> np.ndarray:
    """``n`` int64 ids over the whole range, with the edge values first."""
    edges = np.array([0, 1, -1, np.iinfo(np.int64).max, np.iinfo(np.int64).min]
                     + [np.uint64((k * GOLDEN) % 2**64).astype(np.int64) for k in range(1, 5)],
                     dtype=np.int64)
    rng = np.random.default_rng(seed)
    body = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=max(n - len(edges), 0),
                        dtype=np.int64, endpoint=True)
    return np.concatenate([edges, body])[:n]


def run_checks(device, n: int, seed: int) -> Dict:
    """The checks with ``device`` as the array module (CuPy; numpy in the CPU test)."""
    ids = sample_ids(n, seed)
    started = time.perf_counter()
    on_device = device.asnumpy(id_hash(device.asarray(ids))) if hasattr(device, "asnumpy") \
        else id_hash(device.asarray(ids))
    device_s = time.perf_counter() - started
    started = time.perf_counter()
    on_cpu = id_hash(ids)
    cpu_s = time.perf_counter() - started
    hash_mismatch = int(np.count_nonzero(on_device != on_cpu))
    bucket_mismatch = int(np.count_nonzero(on_device % np.uint64(1024) != on_cpu % np.uint64(1024)))
    rng = np.random.default_rng(seed + 1)
    knots_x = np.sort(rng.random(65))
    knots_y = np.sort(rng.random(65))
    x = rng.random(min(n, 1_000_000))
    cal_device = device.interp(device.asarray(x), device.asarray(knots_x), device.asarray(knots_y))
    cal_device = device.asnumpy(cal_device) if hasattr(device, "asnumpy") else cal_device
    cal_diff = float(np.max(np.abs(cal_device - np.interp(x, knots_x, knots_y))))
    return {"ids": n, "hash_mismatches": hash_mismatch, "bucket_mismatches": bucket_mismatch,
            "calibrator_max_abs_diff": cal_diff, "device_hash_seconds": device_s,
            "cpu_hash_seconds": cpu_s,
            "ok": hash_mismatch == 0 and bucket_mismatch == 0 and cal_diff <= 1e-6}


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.gpu_smoke``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_smoke",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    try:
        import cupy
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        device_name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception as e:  # no CuPy, no driver, no device: nothing was checked
        print(f"not run: benchmarks.gpu_smoke needs CuPy and a CUDA device ({e})",
              file=sys.stderr)
        return 2
    result = run_checks(cupy, args.ids, args.seed)
    result.update(device=device_name, cupy=cupy.__version__, numpy=np.__version__,
                  date=time.strftime("%Y-%m-%d"))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    from common.tables import print_table
    print_table("benchmarks.gpu_smoke", [
        ("device", device_name), ("ids hashed", f"{result['ids']:,}"),
        ("hash mismatches GPU vs CPU", result["hash_mismatches"]),
        ("tail-bucket mismatches (% 1024)", result["bucket_mismatches"]),
        ("calibrator max abs diff", f"{result['calibrator_max_abs_diff']:.2e}"),
        ("GPU / CPU hash seconds",
         f"{result['device_hash_seconds']:.3f} / {result['cpu_hash_seconds']:.3f}"),
        ("verdict", "ok" if result["ok"] else "FAILED")])
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
