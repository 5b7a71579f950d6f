#!/usr/bin/env bash
# The rasterizer's GPU check (device machine: CUDA JAX + flax preinstalled, no registry access), run from the
# repository root: `OUT=/tmp/out bash launch/device_raster.sh`. Expected ~2-3 min in all (compiles included):
#   1. the train step's grid path (8 trajectories x 49 frames, 480x832, room on device, jitter, random colours)
#      per method, profile and mode: frames/s, compile s, program and peak device memory, overflow;
#   2. opencv-profile parity against OpenCV on every sample trajectory, both methods (bound 0.25 grey levels).
# Every step has its own timeout and the script keeps going when one fails; logs (JSON lines) go to $OUT.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
OUT=${OUT:-/tmp/device_raster}
mkdir -p "$OUT"
step() {  # step NAME SECONDS COMMAND...: run with a timeout, log to $OUT/NAME.log, report the exit status
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s (limit $limit)" | tee -a "$OUT/summary.txt"
  grep -v '^\s*$' "$OUT/$name.log" | tail -n 12
}
nvidia-smi -L 2>&1 | tee "$OUT/summary.txt"
python3 -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee -a "$OUT/summary.txt"
for method in scatter tiled; do
  step "device_path_$method" 75 python3 -m omnidirector_jax.cli bench raster --device-path --method "$method" \
    --batch 8 --frames 49 --size 480x832 --repeats 2 --json
done
step parity 60 python3 -m omnidirector_jax.cli bench raster --parity --json
echo "== total $SECONDS s" | tee -a "$OUT/summary.txt"
