#!/usr/bin/env bash
# Session 5, device call A: the dB/dC lane reduce-scatter (knob lane_rs). Correctness first (odd
# shapes and every variant against the float64 reference, the gpu tests of the scan and the path
# scan), then lane_rs 1 vs 0 side by side at the issue shapes, then the op-level scan2d bench.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 420 python3 scripts/gpu_scan_check.py --out "$OUT" --skip-full --skip-table --variants --sweep \
  --bwd-variants '[{}, {"lane_rs": 0}, {"regs_bwd": 168}, {"T_bwd": 8}]' > "$OUT/check.txt" 2>&1; echo "check rc=$?"
grep -E "PASSED|FAILED|worst|sweep" "$OUT/check.txt" | tail -40
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/core/ops/test_selective_scan_triton.py \
  tests/core/ops/test_path_scan_triton.py > "$OUT/gpu_tests.txt" 2>&1; echo "tests rc=$?"; tail -3 "$OUT/gpu_tests.txt"
