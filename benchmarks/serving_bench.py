"""Serving benchmark: the ``extcvr`` ensemble on the real Triton server under load.

Usage::

    python -m benchmarks.serving_bench --run RUN_DIR --workflow WF_DIR [--calibrator CAL_DIR]
        [--out benchmarks/results] [--batches 1,16,256] [--concurrency 1,4,16]
        [--protocols http,grpc] [--window-ms 2000] [--soak-s 60] [--instances ...]

1. exports the run (``serving.export``, CPU target; the predict step's instances as
   ``preprocessing.device`` decides: ``KIND_GPU`` with a GPU tritonserver) to a temp dir and
   starts the server (``serving.serve``: the GPU build when the decision is ``KIND_GPU``);
2. ``perf_analyzer`` (pip ``perf-analyzer``; needs Debian's ``libb64-0d``, installed here with
   apt-get when missing and permitted, else named in the error, and ``libcudart`` from the
   ``nvidia-cuda-runtime-cu12`` wheel on ``LD_LIBRARY_PATH``) over batch x concurrency x protocol,
   fed with real request rows of the test day (rows without a missing value: JSON has no NaN);
3. the in-process baseline: the same three steps (``serving.steps``, what the Python-backend
   models call, predict on GPU 0 when its instances are ``KIND_GPU``) on the same rows in one
   process, predictions/s at the largest batch;
4. the ratio ensemble / in-process at the largest batch and concurrency 4: the overhead of the
   ensemble, the Python-backend IPC and the transport;
5. a soak at concurrency 16 for ``--soak-s`` seconds: failed requests (the server's
   ``nv_inference_request_failure`` counter) and the RSS of the server process and its backend
   stubs, sampled every second.

Writes ``OUT/serving_<date>.json`` (machine, versions, load average, every measurement) and
``OUT/serving_<date>.png`` (throughput and p99 latency per batch and concurrency).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from common.atomic import atomic_write_text
from common.tables import package_versions, print_table

PACKAGES = ("tritonclient", "nvidia-pytriton", "perf-analyzer", "tensorflow-cpu", "nvtabular",
            "merlin-core", "numpy", "pandas")
PERF_LIB = "libb64.so.0d"


def perf_env() -> Dict[str, str]:
    """Environment for perf_analyzer: libcudart of the CUDA-runtime wheel on the library path;
    installs Debian's libb64-0d when it is missing (root + apt-get), else explains."""
    have = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    if PERF_LIB not in have:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            print("[bench] installing Debian's libb64-0d (perf_analyzer needs it)")
            subprocess.run(["apt-get", "install", "-y", "libb64-0d"], check=False,
                           stdout=subprocess.DEVNULL)
        have = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
        if PERF_LIB not in have:
            raise RuntimeError("perf_analyzer needs Debian's libb64-0d: "
                               "`sudo apt-get install -y libb64-0d`")
    env = dict(os.environ)
    cudart = os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "cuda_runtime", "lib")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [cudart, env.get("LD_LIBRARY_PATH")]))
    return env


def perf_binary() -> str:
    path = os.path.join(os.path.dirname(sys.executable), "perf_analyzer")
    return path if os.path.exists(path) else (shutil.which("perf_analyzer") or "perf_analyzer")


def request_rows(proc_dir: str, n: int = 512) -> pd.DataFrame:
    """Raw rows of the test day(s) of ``proc_dir``'s input, without missing values."""
    manifest = json.load(open(os.path.join(proc_dir, "manifest.json")))
    files = [os.path.join(manifest["input"], f) for f in manifest["files"]["test"]]
    raw = pd.read_parquet(files[0])
    scalar = [c for c in raw.columns if raw[c].dtype != object]
    return raw[~raw[scalar].isna().any(axis=1)].head(n).reset_index(drop=True)


def perf_input_json(rows: pd.DataFrame, export_info: Dict, path: str) -> None:
    """perf_analyzer ``--input-data``: one step per real row, multi-hot padded to max_list."""
    width = export_info["max_list"]
    data = []
    for _, r in rows.iterrows():
        step = {}
        for name, dtype in export_info["inputs"].items():
            if name.endswith("__lengths"):
                step[name] = {"content": [len(r[name[:-len('__lengths')]])], "shape": [1]}
            elif name in export_info["multihot"]:
                v = [int(x) for x in r[name]]
                step[name] = {"content": v + [0] * (width - len(v)), "shape": [width]}
            elif dtype == "float32":
                step[name] = {"content": [float(r[name])], "shape": [1]}
            else:
                step[name] = {"content": [int(r[name])], "shape": [1]}
        data.append(step)
    with open(path, "w") as fh:
        json.dump({"data": data}, fh)


def run_perf(url: str, protocol: str, batch: int, concurrency: int, data: str, window_ms: int,
             env: Dict[str, str], workdir: str, trials: int = 3) -> Dict:
    """One perf_analyzer measurement; throughput in predictions/s (rows), latencies in ms."""
    csv_path = os.path.join(workdir, f"pa_{protocol}_{batch}_{concurrency}.csv")
    cmd = [perf_binary(), "-m", "extcvr", "-u", url, "-i", protocol, "-b", str(batch),
           "--concurrency-range", str(concurrency), "--input-data", data,
           "--measurement-interval", str(window_ms), "--max-trials", str(trials),
           "--stability-percentage", "10000", "--percentile", "99", "-f", csv_path]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    row: Dict = {"protocol": protocol, "batch": batch, "concurrency": concurrency,
                 "seconds": round(time.monotonic() - t0, 1)}
    if proc.returncode != 0 or not os.path.exists(csv_path):
        row["error"] = (proc.stdout + proc.stderr)[-800:]
        return row
    rec = next(csv.DictReader(open(csv_path)))
    infer_s = float(rec["Inferences/Second"])  # perf_analyzer counts rows (batch x requests)
    row.update({"predictions_per_s": round(infer_s, 1),
                "requests_per_s": round(infer_s / batch, 1),
                "p50_ms": float(rec["p50 latency"]) / 1000, "p90_ms": float(rec["p90 latency"]) / 1000,
                "p99_ms": float(rec["p99 latency"]) / 1000})
    return row


def in_process(repo: str, rows: pd.DataFrame, batch: int, seconds: float,
               gpu: Optional[int] = None) -> Dict:
    """The three steps called directly, on request tensors prepared beforehand (predict on
    ``gpu``, as a ``KIND_GPU`` instance of that device would)."""
    from serving.preprocess import request_tensors
    from serving.steps import CalibrateStep, PredictStep, PreprocessStep
    pre = PreprocessStep(os.path.join(repo, "preprocess", "1"))
    pred = PredictStep(os.path.join(repo, "predict", "1"), gpu=gpu)
    cal = CalibrateStep(os.path.join(repo, "calibrate", "1"))
    t = pre.transformer
    reps = int(np.ceil(batch / len(rows)))
    chunk = pd.concat([rows] * reps, ignore_index=True).head(batch)
    tensors = request_tensors(chunk, t.inputs, t.multihot, t.input_dtypes)

    def once():
        proc = pre.run([tensors])[0]
        raw = pred.run([proc])[0]
        fields = {f: proc[f] for f in cal.fields}
        return cal.run([{**raw, **fields}])[0]

    once()
    n, lat = 0, []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        s = time.perf_counter()
        once()
        lat.append(time.perf_counter() - s)
        n += 1
    total = time.perf_counter() - t0
    return {"batch": batch, "calls": n, "predictions_per_s": round(n * batch / total, 1),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 3),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 3)}


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def failures(metrics_url: str) -> Dict[str, float]:
    """``nv_inference_request_failure`` / ``_success`` of the ensemble from the metrics page."""
    out = {"failure": 0.0, "success": 0.0}
    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            for key in out:
                if line.startswith(f"nv_inference_request_{key}{{") and 'model="extcvr"' in line:
                    out[key] += float(line.rsplit(" ", 1)[1])
    return out


def soak(server, data: str, env: Dict, seconds: int, batch: int, workdir: str) -> Dict:
    """perf_analyzer at concurrency 16 for ``seconds`` (3 windows) while sampling RSS."""
    samples: List = []
    stop = threading.Event()

    def sample():
        t0 = time.monotonic()
        while not stop.is_set():
            pids = [server.pid] + _children(server.pid)
            samples.append((round(time.monotonic() - t0, 1), _rss_kb(server.pid) / 1024,
                            sum(_rss_kb(p) for p in pids) / 1024))
            stop.wait(1.0)

    metrics = f"{server.host}:{server.metrics_port}"
    before = failures(metrics)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    row = run_perf(server.grpc_url, "grpc", batch, 16, data, int(seconds * 1000 / 3), env,
                   workdir, trials=3)
    stop.set()
    th.join()
    after = failures(metrics)
    server_mb = [s[1] for s in samples]
    total_mb = [s[2] for s in samples]
    k = max(1, len(samples) // 6)
    growth = (np.mean(total_mb[-k:]) - np.mean(total_mb[k:2 * k])) if len(samples) > 3 else 0.0
    row.update({"failed_requests": int(after["failure"] - before["failure"]),
                "successful_requests": int(after["success"] - before["success"]),
                "rss_server_mb": {"first": round(server_mb[0], 1), "last": round(server_mb[-1], 1),
                                  "max": round(max(server_mb), 1)},
                "rss_with_stubs_mb": {"first": round(total_mb[0], 1),
                                      "last": round(total_mb[-1], 1),
                                      "max": round(max(total_mb), 1)},
                "rss_growth_after_warmup_mb": round(float(growth), 1),
                "rss_samples": samples})
    return row


def plot(grid: List[Dict], path: str, device: str = "CPU") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (proto, batch), grp in pd.DataFrame([g for g in grid if "error" not in g]).groupby(
            ["protocol", "batch"]):
        style = "-" if proto == "grpc" else "--"
        axes[0].plot(grp["concurrency"], grp["predictions_per_s"], style, marker="o",
                     label=f"{proto} b={batch}")
        axes[1].plot(grp["concurrency"], grp["p99_ms"], style, marker="o",
                     label=f"{proto} b={batch}")
    axes[0].set_ylabel("predictions / s")
    axes[1].set_ylabel("p99 latency (ms)")
    for ax in axes:
        ax.set_xlabel("concurrency")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle(f"extcvr ensemble on Triton ({device})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.serving_bench``."""
    from preprocessing.device import machine_info
    from preprocessing.device import KIND_GPU, detect
    from serving.export import export, parse_instances
    from serving.serve import TritonServer
    from serving.settings import ExportSettings
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--workflow", required=True)
    parser.add_argument("--calibrator", default=None)
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"))
    parser.add_argument("--batches", default="1,16,256")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--soak-s", type=int, default=60)
    parser.add_argument("--soak-batch", type=int, default=16)
    parser.add_argument("--instances", default="")
    parser.add_argument("--inprocess-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    batches = [int(x) for x in args.batches.split(",")]
    concs = [int(x) for x in args.concurrency.split(",")]
    protocols = [p for p in args.protocols.split(",") if p]
    env = perf_env()
    work = tempfile.mkdtemp(prefix="serving_bench-")
    from common.provenance import portable_path  # recorded without this machine's paths
    record: Dict = {"date": dt.date.today().isoformat(), "machine": machine_info(),
                    "versions": package_versions(PACKAGES, missing="not installed"),
                    "load_average_start": os.getloadavg(), "run": portable_path(args.run, "RUN"),
                    "window_ms": args.window_ms}
    try:
        repo = os.path.join(work, "repo")
        kind = detect().triton_kind
        info = export(args.run, args.workflow, repo, args.calibrator, ExportSettings(
            instances=parse_instances(args.instances), max_batch_size=max(batches),
            instance_kind=kind))
        record["export"] = {k: info[k] for k in ("instances", "max_batch_size", "executor",
                                                 "max_queue_delay_us", "calibrator")}
        record["export"]["predict_instance_kind"] = kind
        rows = request_rows(os.path.dirname(os.path.abspath(args.workflow)))
        data = os.path.join(work, "input.json")
        perf_input_json(rows, info, data)
        server = TritonServer(repo, log_path=os.path.join(work, "server.log"))
        t0 = time.monotonic()
        server.start(timeout=300)
        record["server_ready_s"] = round(time.monotonic() - t0, 1)
        grid = []
        try:
            for proto in protocols:
                url = server.grpc_url if proto == "grpc" else server.http_url
                for b in batches:
                    for c in concs:
                        row = run_perf(url, proto, b, c, data, args.window_ms, env, work)
                        print(f"[bench] {proto} batch {b} conc {c}: "
                              f"{row.get('predictions_per_s', row.get('error'))} pred/s, "
                              f"p99 {row.get('p99_ms')} ms", flush=True)
                        grid.append(row)
            record["grid"] = grid
            record["soak"] = soak(server, data, env, args.soak_s, args.soak_batch, work)
        finally:
            record["server_stop_code"] = server.stop()
        # In-process baseline after the server is gone: it gets the machine to itself too.
        record["in_process"] = [in_process(repo, rows, b, args.inprocess_s,
                                           gpu=0 if kind == KIND_GPU else None)
                                for b in sorted({max(batches), 1})]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    big = max(batches)
    base = next(r for r in record["in_process"] if r["batch"] == big)["predictions_per_s"]
    ratios = {}
    for g in grid:
        if g["batch"] == big and g["concurrency"] == 4 and "error" not in g:
            ratios[g["protocol"]] = round(g["predictions_per_s"] / base, 3)
    record["ratio_ensemble_over_in_process_b%d_c4" % big] = ratios
    b1 = {g["protocol"]: g.get("p99_ms") for g in grid if g["batch"] == 1
          and g["concurrency"] == 1}
    record["p99_ms_batch1_conc1"] = b1
    record["load_average_end"] = os.getloadavg()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"serving_{record['date']}.json")
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    png = os.path.join(args.out, f"serving_{record['date']}.png")
    plot(grid, png, "GPU" if kind == KIND_GPU else "CPU")
    s = record["soak"]
    print_table("benchmarks.serving_bench", [
        ("server ready after", f"{record['server_ready_s']} s"),
        (f"in-process b={big}", f"{base:,.0f} pred/s"),
        (f"ensemble/in-process b={big} c=4", ratios),
        ("p99 b=1 c=1 (ms)", b1),
        ("soak", f"{s.get('predictions_per_s')} pred/s, {s['failed_requests']} failed of "
                 f"{s['failed_requests'] + s['successful_requests']}"),
        ("soak RSS with stubs (MB)", f"{s['rss_with_stubs_mb']}, growth after warm-up "
                                     f"{s['rss_growth_after_warmup_mb']} MB"),
        ("load average start/end", f"{record['load_average_start'][0]:.1f} / "
                                   f"{record['load_average_end'][0]:.1f}"),
        ("results", path), ("plot", png)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
