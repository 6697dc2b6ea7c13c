#!/usr/bin/env bash
# Short final device call: SS2D cross-scan core (op level) and the GatedAttention diagnostic.
set -u; OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=core:apps PYTHONUNBUFFERED=1
timeout 60 python3 scripts/gpu_diag_attention.py 2>&1 | tee "$OUT/attn.txt"
timeout 120 python3 -c "
import sys; from ssmkit.bench.scan2d import run; sys.exit(run(sys.argv[1:]))" --gpu --level op --reps 5 --json "$OUT/scan2d_op.json" 2>&1 | tail -30 | tee "$OUT/scan2d.txt"
