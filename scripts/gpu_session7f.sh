#!/usr/bin/env bash
# Session 7, device call F (nvidia-h200): backward-direction scans as an explicit recursion over
# halves of the time axis instead of flipped tiles (Triton 3.6 recomputed exp2 in the flipped
# layout). The gpu tests (scan, path scan, Mamba, SS2D/SS3D), the issue-4 table and the op-level
# SS2D table.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
gpu_tests tests/core/ops/test_selective_scan_triton.py \
  tests/core/ops/test_path_scan_triton.py tests/core/layers/test_mamba.py tests/core/layers/test_ss2d.py
issue4_table table
issue4_table table_dev --device-only
scan2d_table scan2d --level op
tail -8 "$OUT/table.txt"; tail -7 "$OUT/table_dev.txt"; tail -12 "$OUT/scan2d.txt"
