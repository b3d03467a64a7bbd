#!/usr/bin/env bash
# The entry point of both images, run after NGC's /opt/nvidia/nvidia_entrypoint.sh:
# `docker run --gpus all IMAGE COMMAND [ARGS...]`; `help` lists the commands. EXTCVR_IMAGE, set
# by the Dockerfile, says which stack trains and serves: tensorflow (Dockerfile) or hugectr
# (Dockerfile.hugectr).
set -euo pipefail

usage() {
  cat <<USAGE
usage: docker run --gpus all [-v HOST_DIR:/workspace/extcvr/DIR] IMAGE COMMAND [ARGS...]
image: ${EXTCVR_IMAGE:-unset}
  preprocess ARGS  python -m preprocessing.run ARGS (--input GEN_DIR --out PROC_DIR)
  train ARGS       tensorflow: python -m models.train ARGS (--model M --data PROC_DIR --out RUN_DIR)
                   hugectr: python -m models.hugectr ARGS (--data PROC_DIR --out DIR), then
                   DIR/train_hugectr.py and DIR/export_onnx.py
  serve ARGS       tensorflow: python -m serving.export ARGS --target ngc --out \$EXTCVR_MODEL_REPO
                   (--run RUN_DIR --workflow PROC_DIR/workflow [--calibrator CAL_DIR]), then
                   tritonserver on it (EXTCVR_MODEL_REPO defaults to triton_repo/serve)
                   hugectr: python -m serving.hugectr_onnx ARGS (--dir DIR --install REPO,
                   REPO from serving.export --target cpu --runtime onnx), then tritonserver on REPO
  bench ARGS       make bench USE_SYSTEM_PYTHON=1 ARGS (make variables: BENCH_ROWS=...)
  demo ARGS        make demo USE_SYSTEM_PYTHON=1 ARGS (make variables: ROWS=...)
  test ARGS        make test USE_SYSTEM_PYTHON=1 PYTEST_ARGS="ARGS"
  help             this text
  anything else    runs as given: bash, python -m preprocessing.generate ..., tritonserver ...
bench, demo and most tests train TensorFlow models: they need the tensorflow image.
USAGE
}

die() {
  echo "extcvr: $*" >&2
  exit 2
}

# option_value NAME ARGS...: the value of --NAME in ARGS (--NAME VALUE or --NAME=VALUE).
option_value() {
  local name="$1"
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      "--$name") echo "${2:-}"; return ;;
      "--$name="*) echo "${1#*=}"; return ;;
    esac
    shift
  done
}

train() {
  case "${EXTCVR_IMAGE:-}" in
    tensorflow)
      exec python -m models.train "$@" ;;
    hugectr)  # the container half of models/hugectr/README.md (steps 1 and 2)
      local out
      out="$(option_value out "$@")"
      [ -n "$out" ] || die "train: --out DIR is required"
      python -m models.hugectr "$@"
      cd "$out"
      python train_hugectr.py
      exec python export_onnx.py ;;
    *)
      die "EXTCVR_IMAGE must be tensorflow or hugectr (the Dockerfile sets it)" ;;
  esac
}

serve() {
  local repo
  case "${EXTCVR_IMAGE:-}" in
    tensorflow)
      repo="$(realpath -m "${EXTCVR_MODEL_REPO:-triton_repo/serve}")"
      python -m serving.export "$@" --target ngc --out "$repo" ;;
    hugectr)  # models/hugectr/README.md, step 4: the ONNX Runtime predict step
      repo="$(option_value install "$@")"
      [ -n "$repo" ] || die "serve: --install REPO is required"
      python -m serving.hugectr_onnx "$@" ;;
    *)
      die "EXTCVR_IMAGE must be tensorflow or hugectr (the Dockerfile sets it)" ;;
  esac
  exec tritonserver --model-repository="$(realpath -m "$repo")"
}

command="${1:-help}"
shift || true
case "$command" in
  preprocess) exec python -m preprocessing.run "$@" ;;
  train) train "$@" ;;
  serve) serve "$@" ;;
  bench) exec make bench USE_SYSTEM_PYTHON=1 "$@" ;;
  demo) exec make demo USE_SYSTEM_PYTHON=1 "$@" ;;
  test) exec make test USE_SYSTEM_PYTHON=1 PYTEST_ARGS="$*" ;;
  help | -h | --help) usage ;;
  *) exec "$command" "$@" ;;
esac
