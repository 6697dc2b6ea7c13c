#!/usr/bin/env bash
# Session 5, device call B: the shipped defaults (lane reduce-scatter at T_bwd = 4, sigmoid from
# the softplus's exp). Odd-shape correctness, lane_rs 1 vs 0 at the bf16 N = 16 shapes, the
# issue-4 table, and the op-level scan2d bench (default, then lane_rs 0 at 64x64); N = 64 tiles.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 scripts/gpu_scan_check.py --out "$OUT" --skip-full --skip-table --sweep --sweep-shapes 0,1 \
  --sweep-dtypes bf16 --bwd-variants '[{}, {"lane_rs": 0}]' > "$OUT/check.txt" 2>&1; echo "check rc=$?"
grep -E "PASSED|FAILED|FAIL |sweep fwd\+bwd" "$OUT/check.txt"
# N = 64 backward tiles: T_bwd 8 (default) spills ~1.2 KB per thread in the CPU-side compile, 4 spills less.
timeout 150 python3 scripts/gpu_scan_check.py --out "$OUT/n64" --skip-odd --skip-full --skip-table --sweep \
  --sweep-shapes 2 --sweep-dtypes bf16 \
  --bwd-variants '[{}, {"T_bwd": 4}, {"T_bwd": 4, "spw_bwd": 64}, {"T_bwd": 4, "spw_bwd": 256}, {"spw_bwd": 64}]' \
  > "$OUT/n64.txt" 2>&1; echo "n64 rc=$?"; grep "sweep fwd+bwd" "$OUT/n64.txt"
timeout 150 python3 -c "
import sys; from ssmkit.bench.scan2d import run; sys.exit(run(sys.argv[1:]))" --gpu --level op --reps 10 \
  --json "$OUT/scan2d_op.json" > "$OUT/scan2d.txt" 2>&1; echo "scan2d rc=$?"
timeout 60 python3 -c "
import sys; from ssmkit.ops.selective_scan import triton_scan; triton_scan.set_tile_config(lane_rs=0)
from ssmkit.bench.scan2d import run; sys.exit(run(sys.argv[1:]))" --gpu --level op --reps 10 --sizes 64 \
  --modes fwdbwd > "$OUT/scan2d_rs0.txt" 2>&1; echo "scan2d lane_rs=0 rc=$?"
timeout 170 python3 -m ssmkit.cli bench scan --gpu --chunked-reps 1 --json "$OUT/table.json" > "$OUT/table.txt" 2>&1; echo "table rc=$?"
tail -5 "$OUT/scan2d_rs0.txt"
tail -13 "$OUT/scan2d.txt"
tail -12 "$OUT/table.txt"
