#!/usr/bin/env bash
# Session 4, device call C: issue 5's channels-last path mode (GPU tests, then the op-level
# bench with the fused, fused-channels-last, batched and materialised pipelines) and a profile
# of mega's fwd+bwd (20x its forward in call B).
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/card.txt"
echo "== gpu tests (path scan, selective scan)"; timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider \
  tests/core/ops/test_path_scan_triton.py tests/core/ops/test_selective_scan_triton.py > "$OUT/gpu_tests.txt" 2>&1; echo "rc=$?"; tail -3 "$OUT/gpu_tests.txt"
echo "== scan2d op"; timeout 240 python3 -c "
import sys; from ssmkit.bench.scan2d import run; sys.exit(run(sys.argv[1:]))" --gpu --level op --reps 5 --json "$OUT/scan2d_op.json" > "$OUT/scan2d.txt" 2>&1; echo "rc=$?"
echo "== mega profile"; timeout 60 python3 scripts/gpu_profile_block.py mega --top 14 > "$OUT/mega_profile.txt" 2>&1; echo "rc=$?"
cut -c1-200 "$OUT/mega_profile.txt" | head -22
tail -14 "$OUT/scan2d.txt"
