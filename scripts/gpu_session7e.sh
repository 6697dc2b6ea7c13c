#!/usr/bin/env bash
# Session 7, device call E (nvidia-h200): the final code. The gpu tests of the scan, the path
# scan, the Mamba layer and SS2D/SS3D (8 pytest workers: compiling dominates, and the machine has
# 16 cores), then the issue-4 table as isolated calls and device-only, fwd+bwd through
# torch.autograd.grad.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
gpu_tests tests/core/ops/test_selective_scan_triton.py \
  tests/core/ops/test_path_scan_triton.py tests/core/layers/test_mamba.py tests/core/layers/test_ss2d.py
issue4_table table
issue4_table table_dev --device-only
tail -8 "$OUT/table.txt"; tail -7 "$OUT/table_dev.txt"
