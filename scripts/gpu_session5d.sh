#!/usr/bin/env bash
# Session 5, device call D: the new backward defaults (T_bwd 4 for fp32 at N = 16, T_bwd 4 with
# 4 channels per program for bf16 at N = 64). Correctness (odd shapes, every listed variant, the
# gpu tests), forward tile variants (bf16 loads 8 bytes of a 32-byte sector per row per T = 8
# chunk, fp32 16: does T_fwd 16 close bf16's gap to fp32?), then the issue-4 table.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 220 python3 scripts/gpu_scan_check.py --out "$OUT/fwd" --skip-full --skip-table --sweep --variants \
  --bwd-variants '[]' \
  --fwd-variants '[{}, {"T_fwd": 16, "spw_fwd": 128}, {"T_fwd": 16}, {"spw_fwd": 128}, {"T_fwd": 4, "spw_fwd": 512}]' \
  > "$OUT/fwd.txt" 2>&1; echo "check rc=$?"; grep -E "PASSED|FAILED|FAIL |sweep fwd" "$OUT/fwd.txt"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/core/ops/test_selective_scan_triton.py \
  tests/core/ops/test_path_scan_triton.py > "$OUT/gpu_tests.txt" 2>&1; echo "tests rc=$?"; tail -2 "$OUT/gpu_tests.txt"
timeout 200 python3 -c "
import sys; from ssmkit.bench.scan_gpu import gpu_table; gpu_table(sys.argv[1:])" --chunked-reps 1 \
  --json "$OUT/table.json" > "$OUT/table.txt" 2>&1; echo "table rc=$?"
tail -12 "$OUT/table.txt"
