"""Where the Triton scan's time goes at the issue shapes: host vs device, and forward tile variants.

    PYTHONPATH=core:apps python3 scripts/gpu_fwd_probe.py [--shapes 0,1] [--dtypes bf16,fp32] \
        [--variants '[{}, {"spw_fwd": 128}]'] [--bwd] [--rounds 2] [--profile-host]

For each shape, dtype and knob set (triton_scan.set_tile_config) it prints the forward's time as
an isolated call (CUDA events with the GPU idle at the start: host work included), its device
time (a spin kernel queued first hides the host work), and the host time per call with the GPU
kept busy; --bwd adds forward+backward both ways (torch.autograd.grad; --accumulate also times
y.backward(), which from the second call on adds every gradient into .grad). --profile-host
prints the top host functions of the default forward (cProfile). Times are medians of 10;
--rounds R times the variants R times in turn, so drift over the run shows up as a spread rather
than as a difference between variants. A variant's "_asm_bwd": 1 (not a knob) converts 2-byte
inputs by PTX cvt in the backward at every N, whatever the forward does: it measured that rule
before it became the shipped one (session 7), and now times the same as the default.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time

import torch

from ssmkit.bench.scan_gpu import (DTYPES, ISSUE_SHAPES, cuda_time_ms, fwd_bwd_call, make_inputs,
                                   run_scan)
from ssmkit.ops.selective_scan import triton_scan


def host_ms(fn, calls: int = 50) -> float:
    """Host time per call with the GPU busy (no waiting on the GPU inside the timed loop)."""
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU work queued ahead, so launches never block
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    ms = (time.perf_counter() - t0) / calls * 1e3
    torch.cuda.synchronize()
    return ms


_SHIPPED_ASM_RULE = triton_scan._asm_upcast


def _asm_rule(asm_bwd: int):
    """The shipped PTX-upcast rule, or (asm_bwd) that rule with the backward converting at every N."""
    if not asm_bwd:
        return _SHIPPED_ASM_RULE

    def rule(plan, compute, device, backward=False):
        if backward:
            return bool(plan["asm_cvt"]) and device.type == "cuda" and compute == torch.float32
        return _SHIPPED_ASM_RULE(plan, compute, device)

    return rule


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="0,1")
    p.add_argument("--dtypes", default="bf16,fp32")
    p.add_argument("--variants", default="[{}]")
    p.add_argument("--bwd", action="store_true")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--accumulate", action="store_true", help="also time fwd+bwd with y.backward() into .grad")
    p.add_argument("--profile-host", action="store_true")
    args = p.parse_args()
    dev = torch.device("cuda")
    print(f"# {torch.cuda.get_device_name(dev)}; ms: isolated call / device only / host per call")
    for si in (int(s) for s in args.shapes.split(",")):
        shape = ISSUE_SHAPES[si]
        for dname in args.dtypes.split(","):
            ins = make_inputs(shape, DTYPES[dname], dev)
            insg = make_inputs(shape, DTYPES[dname], dev, requires_grad=True) if args.bwd else None
            gy = torch.randn(shape[:3], device=dev, dtype=DTYPES[dname]) if args.bwd else None
            for cfg in json.loads(args.variants) * args.rounds:
                cfg = dict(cfg)
                asm_bwd = cfg.pop("_asm_bwd", 0)
                triton_scan._asm_upcast = _asm_rule(asm_bwd)
                triton_scan.set_tile_config(**cfg)
                name = ",".join([f"{k}={v}" for k, v in cfg.items()] + ["asm_bwd"] * bool(asm_bwd)) or "default"
                with torch.no_grad():
                    fwd = lambda: run_scan(ins, "triton")
                    iso, dev_ms, host = cuda_time_ms(fwd), cuda_time_ms(fwd, device_only=True), host_ms(fwd)
                line = f"{str(shape):<22}{dname:<5}{name:<28} fwd {iso:7.3f} {dev_ms:7.3f} {host:6.3f}"
                if args.bwd:
                    both = fwd_bwd_call(insg, "triton", gy)
                    line += f"   fwd+bwd {cuda_time_ms(both):7.3f} {cuda_time_ms(both, device_only=True):7.3f}"
                    if args.accumulate:  # the pre-session-7 timing: y.backward() adds into .grad
                        acc = lambda: run_scan(insg, "triton").backward(gy)
                        line += f"   into .grad {cuda_time_ms(acc):7.3f} {cuda_time_ms(acc, device_only=True):7.3f}"
                print(line, flush=True)
                triton_scan.set_tile_config()
                triton_scan._asm_upcast = _SHIPPED_ASM_RULE
            if args.profile_host and si == 0:
                with torch.no_grad():
                    fwd = lambda: run_scan(ins, "triton")
                    prof = cProfile.Profile()
                    torch.cuda._sleep(200_000_000)
                    prof.enable()
                    for _ in range(50):
                        fwd()
                    prof.disable()
                    torch.cuda.synchronize()
                pstats.Stats(prof).sort_stats("tottime").print_stats(14)
            del ins, insg
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
