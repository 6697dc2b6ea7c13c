#!/usr/bin/env bash
# Session 6, device call C (nvidia-h200): the shipped asm_cvt rule (off in the N = 64 backward)
# against asm_cvt 2 (everywhere), spw_fwd 128 again for both dtypes at N = 16, then the issue-4
# table and the scan2d bench (op and layer level; isolated calls and device-only).
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 scripts/gpu_fwd_probe.py --shapes 2 --dtypes bf16,fp32 --bwd \
  --variants '[{}, {"asm_cvt": 2}, {}, {"asm_cvt": 2}]' > "$OUT/probe_n64.txt" 2>&1; echo "probe n64 rc=$?"
timeout 150 python3 scripts/gpu_fwd_probe.py --shapes 0,1 --dtypes fp32,bf16 \
  --variants '[{}, {"spw_fwd": 128}, {}, {"spw_fwd": 128}]' > "$OUT/probe_spw.txt" 2>&1; echo "probe spw rc=$?"
issue4_table table
issue4_table table_dev --device-only
for lvl in op layer; do scan2d_table scan2d_$lvl --level $lvl; done
scan2d_table scan2d_op_dev --level op --device-only
cat "$OUT/probe_n64.txt" "$OUT/probe_spw.txt" | grep -v "^$"
tail -8 "$OUT/table.txt"; tail -7 "$OUT/table_dev.txt"
for f in scan2d_op scan2d_op_dev scan2d_layer; do sed -n 3,7p "$OUT/$f.txt"; done
grep -A4 "issue anchor" "$OUT/scan2d_op.txt" | cut -c1-90
