#!/usr/bin/env bash
# Session 7, device call G (nvidia-h200): after moving the dB/dC lane reduce-scatter into its own
# module (no change to the kernels' code), the gpu tests that run it (CUDA only), 8 workers.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
gpu_tests tests/core/ops/test_selective_scan_triton.py \
  tests/core/ops/test_path_scan_triton.py tests/core/layers/test_mamba.py tests/core/layers/test_ss2d.py
