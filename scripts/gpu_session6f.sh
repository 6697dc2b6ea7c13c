#!/usr/bin/env bash
# Session 6, device call F (nvidia-h200): the gpu tests of the layers built on the scan (Mamba,
# SS2D/SS3D, the gated blocks, GLA) with the final kernels.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider tests/core/layers/test_mamba.py \
  tests/core/layers/test_ss2d.py tests/core/layers/test_gated_blocks_a.py tests/core/ops/test_gla.py \
  > "$OUT/gpu_layer_tests.txt" 2>&1; echo "tests rc=$?"; tail -15 "$OUT/gpu_layer_tests.txt"
