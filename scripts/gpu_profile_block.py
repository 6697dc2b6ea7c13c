"""Where one registered block's forward+backward spends its GPU time: torch.profiler's top ops.

    PYTHONPATH=core:apps python3 scripts/gpu_profile_block.py mega [--dtype bf16] [--top 12]

Built at `ssmkit bench blocks`' standard size (B=8, L=1024, d=256), so it explains that table's
rows (for example mega's fwd+bwd at 20x its forward on the H100).
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from ssmkit.bench.blocks import STANDARD, make_input  # the bench's own inputs
from ssmkit.registry import create_block


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("block")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    dev = torch.device("cuda")
    torch.manual_seed(0)
    block = create_block(args.block, d_model=STANDARD["d_model"]).to(dev, dtype).train()
    x = make_input(block, STANDARD["d_model"], STANDARD, dev, dtype)
    inputs = [t.requires_grad_() if t.is_floating_point() else t for t in (x if isinstance(x, tuple) else (x,))]

    def step():
        out = block(*inputs)
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.float().mean().backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.top, max_name_column_width=60))


if __name__ == "__main__":
    main()
