#!/usr/bin/env bash
# Session 7, device call A (nvidia-h200): the backward's pass 2 over two blocks of states
# (nsplit_bwd 2) and the PTX cvt in the backward at N = 64. Correctness at odd N on the device's
# compile first, then N = 64 forward+backward, the variants alternated over two rounds.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/core/ops/test_selective_scan_triton.py \
  -k state_blocks > "$OUT/gpu_tests.txt" 2>&1; echo "tests rc=$?"; tail -3 "$OUT/gpu_tests.txt"
timeout 300 python3 scripts/gpu_fwd_probe.py --shapes 2 --dtypes bf16,fp32 --bwd --rounds 2 \
  --variants '[{}, {"nsplit_bwd": 2}, {"_asm_bwd": 1}, {"nsplit_bwd": 2, "_asm_bwd": 1}]' > "$OUT/probe64.txt" 2>&1
echo "probe rc=$?"; cat "$OUT/probe64.txt"
