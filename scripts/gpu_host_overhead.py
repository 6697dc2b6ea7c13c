"""Host (CPU) time of one fused-path-scan call on CUDA, and where it goes (cProfile).

    PYTHONPATH=core:apps python3 scripts/gpu_host_overhead.py [--size 64]

At small maps an isolated call is bound by the Python before its first kernel reaches the GPU;
this prints the per-call host time with the GPU kept busy, then the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch

from ssmkit.bench.scan2d import VARIANTS, make_case


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--variant", default="fused_cl")
    args = p.parse_args()
    layer, x, s = make_case(8, 192, 16, args.size, "cross", torch.bfloat16, torch.device("cuda"))
    fn = VARIANTS["op"][args.variant]
    with torch.no_grad():
        for _ in range(5):
            fn(layer, x, s)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(50):
            fn(layer, x, s)
        host = (time.perf_counter() - t0) / 50 * 1e3
        torch.cuda.synchronize()
        print(f"{args.variant} {args.size}x{args.size} fwd: host time per call {host:.3f} ms")
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(50):
            fn(layer, x, s)
        prof.disable()
        torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(16)


if __name__ == "__main__":
    main()
