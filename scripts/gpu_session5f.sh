#!/usr/bin/env bash
# Session 5, device call F: the final code (A scaled by log2 e inside the kernels, no host-side
# kernel per call): the gpu tests of the scan and the path scan, the op-level scan2d bench and
# the issue-4 table.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 280 python3 -m pytest -q -m gpu -p no:cacheprovider tests/core/ops/test_selective_scan_triton.py \
  tests/core/ops/test_path_scan_triton.py > "$OUT/gpu_tests.txt" 2>&1; echo "tests rc=$?"; tail -2 "$OUT/gpu_tests.txt"
timeout 120 python3 -c "
import sys; from ssmkit.bench.scan2d import run; sys.exit(run(sys.argv[1:]))" --gpu --level op --reps 10 \
  --json "$OUT/scan2d_op.json" > "$OUT/scan2d.txt" 2>&1; echo "scan2d rc=$?"
timeout 150 python3 -c "
import sys; from ssmkit.bench.scan_gpu import gpu_table; gpu_table(sys.argv[1:])" --chunked-reps 1 \
  --json "$OUT/table.json" > "$OUT/table.txt" 2>&1; echo "table rc=$?"
tail -13 "$OUT/scan2d.txt"
tail -13 "$OUT/table.txt"
