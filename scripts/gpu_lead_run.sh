#!/usr/bin/env bash
# One device call: GPU tests of the non-scan kernels, then the scan2d / blocks / anomaly
# benchmarks. Run from the repo root on a CUDA machine; writes logs under $OUT.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/card.txt"
echo "== gpu tests"; timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider \
  tests/core/ops/test_path_scan_triton.py tests/core/ops/test_gla.py tests/core/layers/test_gated_blocks_a.py \
  tests/core/layers/test_mamba.py ${GPU_TEST_ARGS:-} > "$OUT/gpu_tests.txt" 2>&1; tail -5 "$OUT/gpu_tests.txt"
echo "== mamba dispatch"; python3 -c "
import torch; from ssmkit.ops.selective_scan import resolve_backend
print('auto on cuda ->', resolve_backend('auto', torch.device('cuda')))" 2>&1 | tee -a "$OUT/gpu_tests.txt"
echo "== scan2d"; for lvl in op layer; do timeout 150 python3 -c "
import sys; from ssmkit.bench.scan2d import run; sys.exit(run(sys.argv[1:]))" --gpu --level $lvl --json "$OUT/scan2d_$lvl.json" 2>&1 | tee -a "$OUT/scan2d.txt"; done
echo "== blocks"; timeout 150 python3 -c "
import sys; from ssmkit.bench.blocks import run; sys.exit(run(sys.argv[1:]))" --gpu --json "$OUT/blocks.json" 2>&1 | tee "$OUT/blocks.txt"
echo "== anomaly"; timeout 90 python3 -c "
import sys; from ssmkit_apps.anomaly.bench import bench_anomaly as run; sys.exit(run(sys.argv[1:]))" --gpu 2>&1 | tail -20 | tee "$OUT/anomaly.txt"
