#!/usr/bin/env bash
# Session 6, device call D (nvidia-h200): the shipped rules (asm_cvt below N = 64 only; spw_fwd
# 128 for 4-byte inputs below N = 64): correctness at odd shapes and the gpu pytest, then the
# issue-4 table as isolated calls and device-only.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 100 python3 scripts/gpu_scan_check.py --out "$OUT" --skip-table --skip-full > "$OUT/check.txt" 2>&1
echo "check rc=$?"; grep -E "FAIL|PASSED|FAILED|Error" "$OUT/check.txt" | head -5
issue4_table table
issue4_table table_dev --device-only
tail -8 "$OUT/table.txt"; tail -7 "$OUT/table_dev.txt"
timeout 250 python3 -m pytest -q -m gpu -p no:cacheprovider tests/core/ops/test_selective_scan_triton.py \
  tests/core/ops/test_path_scan_triton.py > "$OUT/gpu_tests.txt" 2>&1; echo "tests rc=$?"; tail -3 "$OUT/gpu_tests.txt"
