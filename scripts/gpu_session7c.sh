#!/usr/bin/env bash
# Session 7, device call C (nvidia-h200): candidate defaults from N = 64 on, T_bwd 8 for every
# dtype with the two-block pass 2, and the backward's PTX cvt at every N, against the previous
# defaults (asm_cvt 0 reproduces them at N = 64, where the forward never converted by cvt);
# then the gpu tests and the issue-4 table with the candidates.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
probe bf16_64 2 bf16 2 '[{}, {"asm_cvt": 0, "T_bwd": 4, "nsplit_bwd": 1}, {"T_bwd": 4, "nsplit_bwd": 1}]'
timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider tests/core/ops/test_selective_scan_triton.py \
  tests/core/ops/test_path_scan_triton.py > "$OUT/gpu_tests.txt" 2>&1; echo "tests rc=$?"; tail -3 "$OUT/gpu_tests.txt"
issue4_table table
issue4_table table_dev --device-only
tail -8 "$OUT/table.txt"; tail -7 "$OUT/table_dev.txt"
