#!/usr/bin/env bash
# One prepared GPU check (the device machine: CUDA JAX and flax preinstalled, no registry access).
# Runs the device-marked tests, the rasterizer tests on the GPU, and both benchmarks; logs go to $OUT.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 JAX_PLATFORMS=cuda
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
nvidia-smi -L
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m device tests/models/test_attention.py -rs 2>&1 \
  | tee "$OUT/device_tests.log"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/camera/test_raster.py \
  -k "grid_scenes or vmap or gradient or tiled or cut_frames" 2>&1 | tee "$OUT/raster_gpu_tests.log"
timeout 100 python3 -m omnidirector_jax.cli bench raster --frames 49 --repeats 3 2>&1 | tee "$OUT/bench_raster.log"
timeout 90 python3 -m omnidirector_jax.cli bench model --config configs/bench_cpu.yaml 2>&1 | tee "$OUT/bench_model.log"
