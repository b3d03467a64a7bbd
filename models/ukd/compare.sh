#!/bin/bash
# The UKD comparison of issue 15 on one processed dataset, every step a documented command:
#   1. the teacher (models/configs/ukd_teacher_4m.yaml) for 3 seeds; seed 0 writes the
#      pseudo-labelled copy OUT/proc_pl (models.pseudolabel);
#   2. the same grid budget for every model, chosen on the validation day (models.sweep, 4
#      settings x 1 seed, rule best on the validation CTCVR AUC): the learning rate for naive,
#      ESMM and ESCM2-IPS; alpha for ukd_base; lambda x alpha for ukd;
#   3. each chosen setting at seeds 0-2 (seed 0 is the sweep's run, copied) on the test day;
#   4. one report (models.evaluate) with every model, the teacher and the oracle: OUT/report.
# With SETTINGS_FROM (the OUT of an earlier call), step 2 is skipped and every model runs at the
# setting chosen there: a test of the choice on data it was not tuned on (another generator seed).
# Finished runs are reused and interrupted ones resumed, so a crashed call can be restarted.
# Usage, from the repository root:  bash models/ukd/compare.sh PROC OUT [SETTINGS_FROM]
set -euo pipefail
[ $# -eq 2 ] || [ $# -eq 3 ] || {
  echo "usage: bash models/ukd/compare.sh PROC OUT [SETTINGS_FROM]" >&2; exit 2; }
PROC=$1 OUT=$2 SETTINGS=${3:-$2}
PY=${PY:-.venv/bin/python}
BASELINES="naive esmm escm2_ips"
mkdir -p "$OUT"
log() { echo "[$(date +%H:%M:%S)] $*"; }

log "teacher, 3 seeds"
$PY -m models.compare --data "$PROC" --out "$OUT/teacher" --models ukd_teacher --seeds 3 \
    --config models/configs/ukd_teacher_4m.yaml --split valid --no-progress \
    > "$OUT/teacher.log" 2>&1
[ -d "$OUT/proc_pl" ] || $PY -m models.pseudolabel --teacher "$OUT/teacher/runs/ukd_teacher_seed0" \
    --data "$PROC" --out "$OUT/proc_pl" --no-progress > "$OUT/pseudolabel.log" 2>&1

sweep() {  # MODEL DATA --param ... --values ...
  local model=$1 data=$2; shift 2
  log "validation sweep: $model"
  $PY -m models.sweep --model "$model" --data "$data" --out "$OUT/sweep_$model" --seeds 1 \
      --rule best "$@" --no-progress > "$OUT/sweep_$model.log" 2>&1
}
if [ "$SETTINGS" = "$OUT" ]; then
  for m in $BASELINES; do
    sweep $m "$PROC" --param train.learning_rate --values 0.002 0.001 0.004 0.008
  done
  sweep ukd_base "$OUT/proc_pl" --param model.ukd_alpha --values 0.5 0.25 1.0 2.0
  sweep ukd "$OUT/proc_pl" --param model.ukd_lambda --values 30 300 \
      --param model.ukd_alpha --values 0.5 1.0
fi

RUNS=()
for m in $BASELINES ukd_base ukd; do
  data=$PROC; case $m in ukd|ukd_base) data=$OUT/proc_pl;; esac
  label=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['chosen_label'])" \
          "$SETTINGS/sweep_$m/summary/sweep.json")
  log "test day: $m at $label, 3 seeds"
  mkdir -p "$OUT/final_$m/runs"
  if [ "$SETTINGS" = "$OUT" ] && [ ! -d "$OUT/final_$m/runs/${m}_seed0" ]; then
    cp -a "$OUT/sweep_$m/$label/runs/${m}_seed0" "$OUT/final_$m/runs/"
  fi
  $PY -m models.compare --data "$data" --out "$OUT/final_$m" --models $m --seeds 3 \
      --config "$SETTINGS/sweep_$m/$label/config.yaml" --no-progress > "$OUT/final_$m.log" 2>&1
  RUNS+=("$OUT"/final_$m/runs/${m}_seed{0,1,2})
done
RUNS+=("$OUT"/teacher/runs/ukd_teacher_seed{0,1,2})
log "report"
$PY -m models.evaluate --data "$OUT/proc_pl" --out "$OUT/report" --runs "${RUNS[@]}" \
    > "$OUT/report.log" 2>&1
cat "$OUT/report/report.md"
