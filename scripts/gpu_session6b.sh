#!/usr/bin/env bash
# Session 6, device call B (nvidia-h200): the PTX upcast of 2-byte inputs (ASM_CVT). Correctness
# first (odd shapes, NaN-poisoned buffers), then bf16 side by side with and without it and with
# spw_fwd 128, the issue-4 table and the op-level scan2d bench (isolated calls and device-only),
# and last the gpu pytest of the scan and the path scan.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 python3 scripts/gpu_scan_check.py --out "$OUT" --skip-table --skip-full > "$OUT/check.txt" 2>&1
echo "check rc=$?"; grep -c OK "$OUT/check.txt"; grep -E "FAIL|PASSED|FAILED|Error" "$OUT/check.txt" | head -5
timeout 200 python3 scripts/gpu_fwd_probe.py --shapes 0,1,2 --dtypes bf16 --bwd \
  --variants '[{}, {"asm_cvt": 0}, {"spw_fwd": 128}]' > "$OUT/probe.txt" 2>&1; echo "probe rc=$?"
issue4_table table
issue4_table table_dev --device-only
scan2d_table scan2d --level op
scan2d_table scan2d_dev --level op --device-only
cat "$OUT/probe.txt"
tail -8 "$OUT/table.txt"; tail -7 "$OUT/table_dev.txt"
tail -6 "$OUT/scan2d.txt"; tail -6 "$OUT/scan2d_dev.txt"
timeout 280 python3 -m pytest -q -m gpu -p no:cacheprovider tests/core/ops/test_selective_scan_triton.py \
  tests/core/ops/test_path_scan_triton.py > "$OUT/gpu_tests.txt" 2>&1; echo "tests rc=$?"; tail -3 "$OUT/gpu_tests.txt"
