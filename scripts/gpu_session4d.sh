#!/usr/bin/env bash
# Session 4, device call D: the GPU tests of the path scan (channels-last included) and the
# selective scan, then the blocks whose code changed (mega's relative bias backward; SS2D/SS3D
# and the blocks built on them, now channels-last into the fused path scan on CUDA).
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/card.txt"
echo "== blocks"; timeout 150 python3 -c "
import sys; from ssmkit.bench.blocks import run; sys.exit(run(sys.argv[1:]))" --gpu --no-pairs \
  --blocks mega,ss2d,ss3d,vss_block,gamba_cell,gamba_block --json "$OUT/blocks.json" > "$OUT/blocks.txt" 2>&1; echo "rc=$?"
echo "== gpu tests"; timeout 300 python3 -m pytest -v -m gpu -p no:cacheprovider \
  tests/core/ops/test_path_scan_triton.py tests/core/ops/test_selective_scan_triton.py tests/core/layers/test_ss2d.py > "$OUT/gpu_tests.txt" 2>&1; echo "rc=$?"
grep -cE "PASSED" "$OUT/gpu_tests.txt"; grep -E "FAILED|ERROR|passed|failed" "$OUT/gpu_tests.txt" | tail -8
tail -9 "$OUT/blocks.txt"
