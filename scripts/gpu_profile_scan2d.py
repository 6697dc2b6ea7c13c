"""Kernel-level split of the SS2D scan-core pipelines of `ssmkit bench scan2d` (torch.profiler).

    PYTHONPATH=core:apps python3 scripts/gpu_profile_scan2d.py [--size 64] [--variants fused_cl,materialized]

For each variant, forward (no_grad) and forward+backward, the top CUDA kernels by self time over
5 steps: where a pipeline's milliseconds go (the scan kernels vs sums, copies, conversions).
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from ssmkit.bench.scan2d import VARIANTS, make_case


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--variants", default="fused_cl,materialized")
    p.add_argument("--top", type=int, default=8)
    args = p.parse_args()
    dev = torch.device("cuda")
    layer, x, s = make_case(8, 192, 16, args.size, "cross", torch.bfloat16, dev)
    leaves = [x, s["x_cl"], s["delta"], s["B"], s["C"]]
    for name in args.variants.split(","):
        fn = VARIANTS["op"][name]
        for mode in ("fwd", "fwdbwd"):
            for t in leaves:
                t.requires_grad_(mode == "fwdbwd")

            def step():
                if mode == "fwd":
                    with torch.no_grad():
                        return fn(layer, x, s)
                out = fn(layer, x, s)
                out.backward(torch.ones_like(out))
                for t in leaves:
                    t.grad = None

            for _ in range(3):
                step()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    step()
                torch.cuda.synchronize()
            print(f"\n== {name} {mode} {args.size}x{args.size} (5 steps)")
            print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.top,
                                            max_name_column_width=70))


if __name__ == "__main__":
    main()
