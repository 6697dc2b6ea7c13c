#!/usr/bin/env bash
# Session 4, device call E: SS3D with a channels-first conv and one channels-last copy (call D:
# the channels-last depthwise Conv3d made SS3D fwd+bwd 5x slower), the SS2D GPU test with TF32 off.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/card.txt"
echo "== blocks"; timeout 120 python3 -c "
import sys; from ssmkit.bench.blocks import run; sys.exit(run(sys.argv[1:]))" --gpu --no-pairs \
  --blocks ss3d,ss2d,mega --json "$OUT/blocks.json" > "$OUT/blocks.txt" 2>&1; echo "rc=$?"
echo "== gpu tests"; timeout 150 python3 -m pytest -v -m gpu -p no:cacheprovider tests/core/layers/test_ss2d.py > "$OUT/gpu_tests.txt" 2>&1; echo "rc=$?"
grep -E "FAILED|ERROR|passed|failed" "$OUT/gpu_tests.txt" | tail -6
tail -6 "$OUT/blocks.txt"
