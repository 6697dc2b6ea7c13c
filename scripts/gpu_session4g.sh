#!/usr/bin/env bash
# Session 4, device call G: where the 64x64 fused channels-last pipeline's time goes (profiler),
# and the layer-level scan2d bench (SS2D.core with projections) with the channels-last column.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 python3 scripts/gpu_profile_scan2d.py --size 64 --top 7 > "$OUT/profile64.txt" 2>&1; echo "rc=$?"
timeout 150 python3 -c "
import sys; from ssmkit.bench.scan2d import run; sys.exit(run(sys.argv[1:]))" --gpu --level layer --reps 5 --json "$OUT/scan2d_layer.json" > "$OUT/scan2d_layer.txt" 2>&1; echo "rc=$?"
grep -E "^==|Self CUDA time total|^ +[a-z_:]|^void|^triton|^_scan|Name" "$OUT/profile64.txt" | cut -c1-70,150-200 | head -80
tail -7 "$OUT/scan2d_layer.txt"
