#!/usr/bin/env bash
# Session 7, device call B (nvidia-h200): call A's two-block backward lost in bf16 because the
# dB/dC reduce-scatter came on with the 32-state blocks (now off from N = 64 on, as before). The
# two-block backward again, with its tile choices, in both dtypes, alternated over two rounds; then
# N = 16 with and without it.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
probe bf16_64 2 bf16 2 '[{}, {"nsplit_bwd": 2}, {"nsplit_bwd": 2, "T_bwd": 8}, {"nsplit_bwd": 2, "_asm_bwd": 1}, {"nsplit_bwd": 2, "lane_rs": 2}]'
probe fp32_64 2 fp32 2 '[{}, {"nsplit_bwd": 2}, {"nsplit_bwd": 2, "T_bwd": 4}, {"nsplit_bwd": 2, "spw_bwd": 512, "T_bwd": 2}]'
probe n16 0 bf16,fp32 1 '[{}, {"nsplit_bwd": 2}]'
