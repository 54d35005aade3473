#!/usr/bin/env bash
# A sweep of SNDL-BCE variants (temperature, BCE weight, crop augmentation) trained side by
# side on one GPU, each evaluated on the test split. Same set-up as bench/gpu_full.sh.
set -u
ARCHIVE=${ARCHIVE:-.device/ucm}
OUT=${OUT:-runs/gpu-sweep}
RUNS=${RUNS:-/tmp/grn-sweep}
MAX_MINUTES=${MAX_MINUTES:-3.5}
# shellcheck source=bench/gpu_setup.sh
source "$(dirname "$0")/gpu_setup.sh"
declare -A variants=(
  [t010]="--temperature 0.1"
  [t020]="--temperature 0.2"
  [bce5]="--bce-weight 5"
  [crop]="--crop-scale 0.5"
)
common=(--archive "$ARCHIVE" --mode full --epochs 130 --dihedral --quiet --max-minutes "$MAX_MINUTES" --loss sndl_bce)
for name in "${!variants[@]}"; do
  # shellcheck disable=SC2086
  python3 -m service.cli train "${common[@]}" ${variants[$name]} --out "$RUNS/$name" > "$RUNS/$name.log" 2>&1 &
done
wait
for name in "${!variants[@]}"; do
  python3 -m service.cli evaluate --model "$RUNS/$name" --archive "$ARCHIVE" --out "$RUNS/$name/eval" --quiet > /dev/null 2>&1 &
done
wait
python3 -m bench.collect_runs "$RUNS"/* > "$OUT/summary.json"
python3 - "$OUT/summary.json" <<'PY'
import json, sys
for run in json.load(open(sys.argv[1])):
    t = run.get("test", {})
    print(run["run"], "epochs", run["epochs_run"], "s/epoch", round(run["median_train_seconds_per_epoch"], 2),
          "val", round(run["best_val"]["val_knn_sample_f1"], 4),
          "knnF1", round(t.get("knn_sample_f1", float("nan")), 4), "mAP", round(t.get("map", float("nan")), 4),
          "clsF1", round(t.get("classifier_sample_f1", float("nan")), 4))
PY
