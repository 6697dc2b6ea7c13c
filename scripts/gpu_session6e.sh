#!/usr/bin/env bash
# Session 6, device call E (nvidia-h200): the inference fast path (no autograd.Function when no
# input needs a gradient): its outputs against the autograd path's on the GPU, host time per call
# and the isolated-call tables; then register caps for the N = 64 backward, the thinnest cell.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 60 python3 -c "
import torch
from ssmkit.bench.scan_gpu import make_inputs, run_scan
for dt in (torch.bfloat16, torch.float32):
    ins = make_inputs((2, 48, 301, 16), dt, 'cuda', seed=3)
    with torch.no_grad():
        a = run_scan(ins, 'triton')
    g = {k: v.clone().requires_grad_(True) for k, v in ins.items()}
    b = run_scan(g, 'triton')
    print('inference path == autograd path', dt, torch.equal(a, b.detach()), a.grad_fn is None)
" 2>&1 | tail -3
issue4_table table
scan2d_table scan2d_op --level op
timeout 70 python3 scripts/gpu_fwd_probe.py --shapes 0 --dtypes bf16 > "$OUT/probe_host.txt" 2>&1
timeout 150 python3 scripts/gpu_fwd_probe.py --shapes 2 --dtypes bf16 --bwd \
  --variants '[{}, {"regs_bwd": 168}, {"regs_bwd": 200}, {}]' > "$OUT/probe_n64.txt" 2>&1; echo "probe rc=$?"
tail -8 "$OUT/table.txt"; sed -n 3,7p "$OUT/scan2d_op.txt"; grep -A4 "issue anchor" "$OUT/scan2d_op.txt" | cut -c1-100
cat "$OUT/probe_host.txt" "$OUT/probe_n64.txt" | grep -v "^$"
