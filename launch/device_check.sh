#!/usr/bin/env bash
# One prepared GPU check (device machine: CUDA JAX + flax preinstalled, no registry access), run from the
# repository root: `OUT=/tmp/out bash launch/device_check.sh`. Each step has its own timeout and the script goes
# on when one fails; logs go to $OUT (summary.txt has one line per step). About 8-9 minutes in all:
#   1. the rasterizer's train-step grid path and parity (launch/device_raster.sh)          issue 14
#   2. `bench train` of base_480p at batch 1, cuDNN attention: whole-step MFU              issue 12
#   3. `bench model` of the Wan 2.1 1.3B backbone with the conditions, cuDNN               issue 16
#   4. TransNetV2 frames/s with batched windows (random weights: no torch on the device)   issue 15
#   5. `bench sample` of base_480p at batch 1 (CFG: forward batch 2), 50 Euler steps, cuDNN  issue 13
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda} XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
step() {  # step NAME SECONDS COMMAND...: run with a timeout, log to $OUT/NAME.log, report the exit status
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s (limit $limit)" | tee -a "$OUT/summary.txt"
  grep -v '^\s*$' "$OUT/$name.log" | grep -v "WARNING" | tail -n 14
}
nvidia-smi -L 2>&1 | tee "$OUT/summary.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" 2>&1 \
  | tee -a "$OUT/summary.txt"
step raster 200 env OUT="$OUT/raster" bash launch/device_raster.sh
step bench_train_base_480p 150 python3 -m omnidirector_jax.cli bench train --config configs/base_480p.yaml \
  --set model.attention=cudnn --batch 1 --steps 2 --json
step bench_model_wan_1_3b 110 python3 -m omnidirector_jax.cli bench model --config configs/wan_1_3b_480p.yaml \
  --set model.attention=cudnn --set shape.batch_size=1 --set model.remat=save_dots --set bench.warmup=1 \
  --steps 2 --json
step bench_shots 45 python3 -m omnidirector_jax.cli bench shots --frames 3000 --window-batch 32 --json
step bench_sample_base_480p 200 python3 -m omnidirector_jax.cli bench sample --config configs/base_480p.yaml \
  --set model.attention=cudnn --set conditions.vae_dtype=bfloat16 --batch 1 --steps 50 --guidance adaptive --repeats 1 --json
echo "== total $SECONDS s" | tee -a "$OUT/summary.txt"
