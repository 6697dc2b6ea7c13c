#!/usr/bin/env bash
# Session 5, device call C: backward tiles at N = 64 (call B: T_bwd 4 with 4 channels per program
# beat the default T_bwd 8 with 2, 16.6 vs 20.6 ms bf16), with and without the lane reduce-scatter,
# fp32 N = 16 at T_bwd 4 (where the reduce-scatter applies), then the issue-4 table.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 scripts/gpu_scan_check.py --out "$OUT/n64" --skip-odd --skip-full --skip-table --sweep \
  --sweep-shapes 2 --sweep-dtypes bf16,fp32 \
  --bwd-variants '[{}, {"T_bwd": 4, "spw_bwd": 256}, {"T_bwd": 4, "spw_bwd": 256, "lane_rs": 2}, {"T_bwd": 4, "spw_bwd": 512}, {"T_bwd": 4, "spw_bwd": 512, "lane_rs": 2}]' \
  > "$OUT/n64.txt" 2>&1; echo "n64 rc=$?"; grep "sweep fwd+bwd" "$OUT/n64.txt"
timeout 120 python3 scripts/gpu_scan_check.py --out "$OUT/n16" --skip-odd --skip-full --skip-table --sweep \
  --sweep-shapes 0,1 --sweep-dtypes fp32 --bwd-variants '[{}, {"T_bwd": 4}, {"T_bwd": 4, "lane_rs": 0}]' \
  > "$OUT/n16.txt" 2>&1; echo "n16 rc=$?"; grep "sweep fwd+bwd" "$OUT/n16.txt"
timeout 200 python3 -c "
import sys; from ssmkit.bench.scan_gpu import gpu_table; gpu_table(sys.argv[1:])" --chunked-reps 1 \
  --json "$OUT/table.json" > "$OUT/table.txt" 2>&1; echo "table rc=$?"
tail -12 "$OUT/table.txt"
