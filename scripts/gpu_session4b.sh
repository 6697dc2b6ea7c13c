#!/usr/bin/env bash
# Session 4, device call B: issue 6 again, with every fla GLA kernel pinned in process (call A
# showed chunk_fwd_kernel_h / chunk_bwd_kernel_dh use plain triton.autotune, 48 configs each).
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/card.txt"
timeout 420 python3 scripts/gpu_gated_blocks.py --out "$OUT" > "$OUT/gated_stdout.txt" 2> "$OUT/gated_stderr.txt"; echo "rc=$?"
grep -E "passed|failed|error" "$OUT/gated_stdout.txt" | tail -5; cat "$OUT/gated_blocks.log" | cut -c1-300
grep -A30 "ssmkit bench blocks" "$OUT/gated_stdout.txt" | tail -25
