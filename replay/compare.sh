#!/usr/bin/env bash
# The replay comparison of one generated world: uncalibrated, isotonic-, AdaCalib- and
# AdaCalib-with-trend-calibrated runs (one per seed) against the oracle, with a loose budget (the CPA target binds) and with a
# tight one (the budget binds).
#
#   bash replay/compare.sh PROC_DIR OUT_DIR RUN_DIR [RUN_DIR ...]
#
# OUT_DIR/calibration: `calibration.calibrate` (isotonic, adacalib and adacalib_trend by app_id,
# fitted on the validation day of each run; adacalib_trend also reads the training days); OUT_DIR/cpa_bound and OUT_DIR/budget_bound: `replay`.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash replay/compare.sh PROC_DIR OUT_DIR RUN_DIR [RUN_DIR ...]" >&2
  exit 2
fi
PROC=$1; OUT=$2; shift 2
PY=${PY:-.venv/bin/python}
TARGET_CPA=${TARGET_CPA:-50}
mkdir -p "$OUT"
"$PY" -m calibration.calibrate --method isotonic,adacalib,adacalib_trend --history-split train \
  --run "$@" --data "$PROC" --field app_id --out "$OUT/calibration"
if [ $# -eq 1 ]; then CAL="$OUT/calibration"; else CAL="$OUT/calibration/{run}"; fi
for setting in "cpa_bound 1.0" "budget_bound 0.3"; do
  set -- $setting "${@}"
  name=$1 share=$2; shift 2
  "$PY" -m replay --data "$PROC" --runs "$@" \
    --calibrators "$CAL/isotonic" "$CAL/adacalib" "$CAL/adacalib_trend" --target-cpa "$TARGET_CPA" \
    --budget-share "$share" --pacing-slots 24 --out "$OUT/$name" --no-progress
done
