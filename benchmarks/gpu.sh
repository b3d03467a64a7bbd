#!/usr/bin/env bash
# The benchmark suite on a GPU, inside the NGC container (nvcr.io/nvidia/merlin/merlin-tensorflow:23.08,
# the repository's Dockerfile), where the stack is the system Python (the Makefile's
# USE_SYSTEM_PYTHON=1). It prints what preprocessing.device decides (cuDF, TensorFlow's GPUs,
# Triton instance kind, ONNX Runtime provider), runs the benchmarks that have a GPU code path
# and writes their results JSON into benchmarks/results/ with a gpu_ prefix
# (gpu_foundation_<date>.json, gpu_training_<date>.json, ...), each with machine.devices, plus
# gpu_suite_<date>.json: the devices, nvidia-smi, and every step's command, status and seconds.
#
# UNVERIFIED: written where there is no GPU, no cuDF and no Docker; only checked statically
# (tests/benchmarks/test_gpu_sh.py) and with --allow-cpu's refusal path. Verify on a machine with
# Docker and an NVIDIA GPU:
#   docker build -t extcvr . && docker run --gpus all --rm \
#     -v "$PWD/benchmarks/results:/workspace/extcvr/benchmarks/results" \
#     extcvr bash benchmarks/gpu.sh --rows 1000000
# and check that it prints "dataframes=cudf", "tensorflow=GPU", "triton=KIND_GPU" and writes
# benchmarks/results/gpu_suite_<date>.json with every step "ok".
#
# Not run here on purpose: benchmarks.calibration_bench and benchmarks.replay_bench (numpy on
# the CPU whatever the machine: no GPU path to measure), benchmarks.preprocess_levers and
# benchmarks.stock_equality (the pandas-path patches of preprocessing/merlin_patches.py, which
# hand cuDF objects to merlin's originals unchanged).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash benchmarks/gpu.sh [--allow-cpu] [--rows N[,N...]] [--train-rows N]
                              [--pseudolabel-rows N] [--work DIR] [--out DIR] [--no-serving]
  --allow-cpu          run even when there is no GPU (nvidia-smi missing or listing none);
                       the results are then named cpu_* instead of gpu_*
  --rows               row counts of benchmarks.run (default 1000000,10000000)
  --train-rows         rows of the data that the training and serving benchmarks use (1000000)
  --pseudolabel-rows   rows of benchmarks.pseudolabel_bench (default 10000000)
  --work               where data, runs and logs go (default bench_out/gpu)
  --out                where the gpu_*.json results go (default benchmarks/results)
  --no-serving         skip the Triton serving benchmark
Environment: PYTHON (default python, the container's), SEED (default 7).
USAGE
}

ALLOW_CPU=0
ROWS=1000000,10000000
TRAIN_ROWS=1000000
PSEUDOLABEL_ROWS=10000000
WORK=bench_out/gpu
OUT=benchmarks/results
SERVING=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --allow-cpu) ALLOW_CPU=1 ;;
    --rows) ROWS="${2:?--rows needs a value}"; shift ;;
    --train-rows) TRAIN_ROWS="${2:?--train-rows needs a value}"; shift ;;
    --pseudolabel-rows) PSEUDOLABEL_ROWS="${2:?--pseudolabel-rows needs a value}"; shift ;;
    --work) WORK="${2:?--work needs a value}"; shift ;;
    --out) OUT="${2:?--out needs a value}"; shift ;;
    --no-serving) SERVING=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python}"
SEED="${SEED:-7}"
DATE="$(date +%F)"

# (the listing is captured first: `nvidia-smi -L | grep -q` fails under pipefail on SIGPIPE)
listed="$( (command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null) || true)"
PREFIX=gpu_
if ! grep -q '^GPU ' <<< "$listed"; then
  if [[ $ALLOW_CPU -eq 1 ]]; then
    PREFIX=cpu_
    echo "[gpu.sh] WARNING: no GPU (nvidia-smi missing or listing none); --allow-cpu: the" \
         "suite runs on the CPU and its results get the cpu_ prefix instead" >&2
  else
    echo "error: no GPU: nvidia-smi is missing or lists no GPU. Run this inside the NGC" \
         "container with the GPUs passed in (docker run --gpus all ...; see the header of" \
         "benchmarks/gpu.sh), or pass --allow-cpu to run the suite on the CPU anyway." >&2
    exit 2
  fi
fi

mkdir -p "$WORK/logs" "$WORK/results" "$OUT"
WORK="$(cd "$WORK" && pwd)"
STAGE="$WORK/results"          # each benchmark's --out; copied to $OUT with the gpu_ prefix
STEPS="$WORK/steps.tsv"        # name, status, seconds, command
: > "$STEPS"

echo "[gpu.sh] devices:"
(nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none") | tee "$WORK/nvidia-smi.txt"
"$PY" -m preprocessing.device --tensorflow
"$PY" -m preprocessing.device --tensorflow --json > "$WORK/devices.json"

write_summary() {
  "$PY" - "$WORK" "$OUT" "$DATE" "$STAGE" "$PREFIX" <<'PYTHON'
import json, os, shutil, sys
work, out, date, stage, prefix = sys.argv[1:6]
copied = []
for name in sorted(os.listdir(stage)):
    dst = os.path.join(out, prefix + name)
    shutil.copy2(os.path.join(stage, name), dst)
    copied.append(dst)
steps = []
with open(os.path.join(work, "steps.tsv")) as fh:
    for line in fh:
        name, status, seconds, command = line.rstrip("\n").split("\t", 3)
        steps.append({"step": name, "status": status, "seconds": float(seconds),
                      "command": command})
with open(os.path.join(work, "nvidia-smi.txt")) as fh:
    smi = fh.read().splitlines()
doc = {"benchmark": prefix + "suite", "date": date, "nvidia_smi": smi,
       "devices": json.load(open(os.path.join(work, "devices.json"))),
       "steps": steps, "results": copied, "work": work}
path = os.path.join(out, f"{prefix}suite_{date}.json")
with open(path + ".tmp", "w") as fh:
    json.dump(doc, fh, indent=2)
    fh.write("\n")
os.replace(path + ".tmp", path)
print(f"[gpu.sh] {len(copied)} result file(s) and {path}")
PYTHON
}
trap 'write_summary' EXIT

# step NAME ARGS...: `python -m ARGS...`, logged to $WORK/logs/NAME.log; stops the suite on failure.
step() {
  local name="$1"; shift
  local t0=$SECONDS rc=0
  echo "[gpu.sh] $name: $PY -m $*"
  "$PY" -m "$@" > "$WORK/logs/$name.log" 2>&1 || rc=$?
  local status=ok
  [[ $rc -eq 0 ]] || status="failed ($rc)"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" "python -m $*" >> "$STEPS"
  if [[ $rc -ne 0 ]]; then
    echo "error: $name failed with exit code $rc; last lines of $WORK/logs/$name.log:" >&2
    tail -n 40 "$WORK/logs/$name.log" >&2
    exit 1
  fi
  tail -n 3 "$WORK/logs/$name.log"
}

PROC="$WORK/processed"
RUN="$WORK/runs/esmm"

# 1. NVTabular (cuDF on the GPU) vs the pandas yardstick; one process (a LocalCluster of CPU
#    worker processes on one GPU measures nothing useful).
step foundation benchmarks.run --rows "$ROWS" --cluster-workers none --out "$STAGE" \
  --workdir "$WORK" --no-progress

# 2. The data of the training and serving benchmarks (made once, kept in $WORK).
if [[ ! -f "$PROC/manifest.json" ]]; then
  step generate preprocessing.generate --rows "$TRAIN_ROWS" --seed "$SEED" \
    --out "$WORK/generated" --no-progress
  step preprocess preprocessing.run --input "$WORK/generated" --out "$PROC" --no-progress
fi

# 3. Training: loader + train steps, and the per-step profiles of both optimizers.
step train_bench benchmarks.train_bench --data "$PROC" --out "$STAGE" --no-progress
step train_profile_adam benchmarks.train_profile --data "$PROC" --optimizer adam --out "$STAGE"
step train_profile_lazy_adam benchmarks.train_profile --data "$PROC" --optimizer lazy_adam \
  --out "$STAGE"

# 4. Pseudo-labelling: the teacher's scoring through the merlin loader.
step pseudolabel benchmarks.pseudolabel_bench --rows "$PSEUDOLABEL_ROWS" \
  --work "$WORK/pseudolabel" --out "$STAGE"

# 5. Serving: the ensemble on the container's GPU tritonserver (KIND_GPU predict instances).
if [[ $SERVING -eq 1 ]]; then
  if [[ ! -f "$RUN/metrics.json" ]]; then
    step train_esmm models.train --model esmm --data "$PROC" --out "$RUN" --seed "$SEED" \
      --config models/configs/demo.yaml --no-progress
  fi
  step serving benchmarks.serving_bench --run "$RUN" --workflow "$PROC/workflow" --out "$STAGE"
fi

echo "[gpu.sh] done"
