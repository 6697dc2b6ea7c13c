"""Run the Triton selective scan's forward+backward a few times at one issue shape, for a profiler.

    ncu --clock-control none -k regex:_scan_bwd_kernel --launch-skip 2 --launch-count 1 \
        python3 scripts/gpu_scan_profile.py --shape 0 --dtype bf16 [--knob T_bwd=8 ...]
"""

from __future__ import annotations

import argparse

import torch

from ssmkit.bench.scan_gpu import DTYPES, ISSUE_SHAPES, make_inputs, run_scan
from ssmkit.ops.selective_scan import triton_scan


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", type=int, default=0)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--knob", action="append", default=[], help="tile knob NAME=VALUE (repeatable)")
    p.add_argument("--iters", type=int, default=3)
    args = p.parse_args()
    triton_scan.set_tile_config(**{k: int(v) for k, v in (kv.split("=") for kv in args.knob)})
    shape = ISSUE_SHAPES[args.shape]
    dev = torch.device("cuda")
    ins = make_inputs(shape, DTYPES[args.dtype], dev, requires_grad=True)
    gy = torch.randn(shape[0], shape[1], shape[2], device=dev, dtype=DTYPES[args.dtype])
    for _ in range(args.iters):
        run_scan(ins, "triton").backward(gy)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
