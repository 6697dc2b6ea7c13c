#!/usr/bin/env bash
# Session 4, device call H: after the host-side trims, the op-level scan2d bench again, the host
# time per fused call, and the path-scan GPU tests.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 60 python3 scripts/gpu_host_overhead.py --variant fused_cl 2>&1 | head -1
timeout 120 python3 -c "
import sys; from ssmkit.bench.scan2d import run; sys.exit(run(sys.argv[1:]))" --gpu --level op --reps 10 --json "$OUT/scan2d_op.json" > "$OUT/scan2d.txt" 2>&1; echo "rc=$?"
timeout 130 python3 -m pytest -q -m gpu -p no:cacheprovider tests/core/ops/test_path_scan_triton.py > "$OUT/gpu_tests.txt" 2>&1; echo "rc=$?"; tail -2 "$OUT/gpu_tests.txt"
tail -13 "$OUT/scan2d.txt"
