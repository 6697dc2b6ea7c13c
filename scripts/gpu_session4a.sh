#!/usr/bin/env bash
# Session 4, device call A: issue 5's SS2D pipelines with the path_index fused mode (first GPU
# timing), then issue 6 in one process with fla's configs pinned (scripts/gpu_gated_blocks.py).
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/card.txt"
echo "== scan2d op"; timeout 170 python3 -c "
import sys; from ssmkit.bench.scan2d import run; sys.exit(run(sys.argv[1:]))" --gpu --level op --reps 5 --json "$OUT/scan2d_op.json" > "$OUT/scan2d.txt" 2>&1; echo "rc=$?"
echo "== gated blocks"; timeout 330 python3 scripts/gpu_gated_blocks.py --out "$OUT" > "$OUT/gated_stdout.txt" 2> "$OUT/gated_stderr.txt"; echo "rc=$?"
tail -5 "$OUT/gated_stderr.txt"; tail -40 "$OUT/gated_stdout.txt"
tail -14 "$OUT/scan2d.txt"
