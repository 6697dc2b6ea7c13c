#!/usr/bin/env bash
# Session 7, device call D (nvidia-h200): where an isolated fwd+bwd call spends the time beyond
# its kernels (first bf16 shape, torch.profiler), and fwd+bwd timed through torch.autograd.grad
# against y.backward() into .grad (which adds every gradient into .grad from the second call on).
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 python3 scripts/gpu_step_trace.py --shape 0 --dtype bf16 > "$OUT/trace_bwd.txt" 2>&1; echo "trace rc=$?"
timeout 60 python3 scripts/gpu_step_trace.py --shape 0 --dtype bf16 --fwd-only > "$OUT/trace_fwd.txt" 2>&1; echo "trace fwd rc=$?"
timeout 200 python3 scripts/gpu_fwd_probe.py --shapes 0,1,2 --dtypes bf16,fp32 --bwd --accumulate \
  > "$OUT/probe.txt" 2>&1; echo "probe rc=$?"
head -40 "$OUT/trace_bwd.txt"; head -12 "$OUT/trace_fwd.txt"; cat "$OUT/probe.txt"
