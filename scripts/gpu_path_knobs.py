"""Sweep the Triton scan's backward knobs for the fused channels-last path scan (SS2D op level).

    PYTHONPATH=core:apps python3 scripts/gpu_path_knobs.py [--size 64] [--reps 10]

Each row: one `set_tile_config(...)` setting, the fused_cl fwd+bwd median (CUDA events), with the
default setting re-timed first and last so drift shows.
"""

from __future__ import annotations

import argparse
import json

import torch

from ssmkit.bench.scan2d import make_case, op_fused_cl, time_ms
from ssmkit.ops.selective_scan import triton_scan

SETTINGS = [{}, {"regs_bwd": 255}, {"regs_bwd": 168}, {"T_bwd": 8}, {"spw_bwd": 256}, {"spw_bwd": 64}, {}]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--reps", type=int, default=10)
    args = p.parse_args()
    dev = torch.device("cuda")
    layer, x, s = make_case(8, 192, 16, args.size, "cross", torch.bfloat16, dev)
    leaves = [s["x_cl"], s["delta"], s["B"], s["C"]]
    for t in leaves:
        t.requires_grad_(True)

    def fwd_bwd():
        out = op_fused_cl(layer, x, s)
        out.backward(torch.ones_like(out))
        for t in leaves:
            t.grad = None

    for knobs in SETTINGS:
        triton_scan.set_tile_config(**knobs) if knobs else triton_scan.set_tile_config()
        ms = time_ms({"f": fwd_bwd}, dev, args.reps, warmup=2)["f"]
        print(json.dumps({"size": args.size, "knobs": knobs, "fwdbwd_ms": round(ms, 3)}), flush=True)
    triton_scan.set_tile_config()


if __name__ == "__main__":
    main()
