#!/usr/bin/env bash
# Session 5, device call E: the gpu tests with the final backward defaults (call D ran out of
# time in them), the op-level scan2d bench, and, since call D's forward sweep moved by up to 20%
# between repeats of the same config, the forward tiles again in alternating order, plus the
# segment length of the bf16 backward at the first issue shape.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 280 python3 -m pytest -q -m gpu -p no:cacheprovider tests/core/ops/test_selective_scan_triton.py \
  tests/core/ops/test_path_scan_triton.py > "$OUT/gpu_tests.txt" 2>&1; echo "tests rc=$?"; tail -2 "$OUT/gpu_tests.txt"
timeout 150 python3 -c "
import sys; from ssmkit.bench.scan2d import run; sys.exit(run(sys.argv[1:]))" --gpu --level op --reps 10 \
  --json "$OUT/scan2d_op.json" > "$OUT/scan2d.txt" 2>&1; echo "scan2d rc=$?"
tail -6 "$OUT/scan2d.txt"
timeout 150 python3 scripts/gpu_scan_check.py --out "$OUT/fwd" --skip-odd --skip-full --skip-table --sweep \
  --sweep-shapes 0,1 --bwd-variants '[]' \
  --fwd-variants '[{}, {"T_fwd": 16, "spw_fwd": 128}, {}, {"T_fwd": 16, "spw_fwd": 128}]' \
  > "$OUT/fwd.txt" 2>&1; echo "fwd rc=$?"; grep -E "sweep fwd" "$OUT/fwd.txt"
timeout 100 python3 scripts/gpu_scan_check.py --out "$OUT/seg" --skip-odd --skip-full --skip-table --sweep \
  --sweep-shapes 0 --sweep-dtypes bf16 --fwd-variants '[]' \
  --bwd-variants '[{}, {"seg": 256}, {"seg": 64}, {}]' > "$OUT/seg.txt" 2>&1; echo "seg rc=$?"; grep -E "sweep fwd\+bwd" "$OUT/seg.txt"
