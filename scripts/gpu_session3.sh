#!/usr/bin/env bash
# One device call (2026-11-28): the issue-4 table with the v5 defaults, the gated-block GPU tests
# and benchmarks (issue 6) and the SS2D pipelines (issue 5). Logs under $OUT; short table last.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/card.txt"
echo "== scan table"; timeout 200 python3 -c "
import sys, json; from ssmkit.bench.scan_gpu import gpu_table
rows = gpu_table(sys.argv[1:])" --json "$OUT/scan_table.json" --chunked-reps 2 > "$OUT/scan_table.txt" 2>&1; tail -25 "$OUT/scan_table.txt"
echo "== gpu tests (gla, gated blocks, mamba)"; timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider \
  tests/core/ops/test_gla.py tests/core/layers/test_gated_blocks_a.py tests/core/layers/test_mamba.py > "$OUT/gpu_tests.txt" 2>&1; tail -4 "$OUT/gpu_tests.txt"
echo "== gla over fla"; timeout 90 python3 -c "
from ssmkit.bench.blocks_a import gla_fla_overhead
import json, torch
rows = gla_fla_overhead()
print(json.dumps(rows, indent=1))" > "$OUT/gla_fla.txt" 2>&1; tail -30 "$OUT/gla_fla.txt"
echo "== blocks"; timeout 120 python3 -c "
import sys; from ssmkit.bench.blocks import run; sys.exit(run(sys.argv[1:]))" --gpu --no-pairs --json "$OUT/blocks.json" > "$OUT/blocks.txt" 2>&1; tail -25 "$OUT/blocks.txt"
echo "== scan2d"; timeout 120 python3 -c "
import sys; from ssmkit.bench.scan2d import run; sys.exit(run(sys.argv[1:]))" --gpu --level op --reps 5 --json "$OUT/scan2d_op.json" > "$OUT/scan2d.txt" 2>&1; tail -20 "$OUT/scan2d.txt"
