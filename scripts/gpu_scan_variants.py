"""Time Triton scan tile-knob variants side by side on a GPU, and check that each computes the same.

    python scripts/gpu_scan_variants.py --variants '[{}, {"T_bwd": 8}, {"lane_rs": 0}]' --bwd --rounds 2
    python scripts/gpu_scan_variants.py --op path --size 64 --variants '[{}, {"regs_bwd": 168}]'
    python scripts/gpu_scan_variants.py --check --variants '[{"nsplit_bwd": 2}]'

A variant is a set of knobs for ``ssmkit.ops.selective_scan.triton_scan.set_tile_config``
(``{}`` is the default; docs/kernels.md lists the knobs). Every variant runs in the same process,
in turn, ``--rounds`` times, so drift over the run shows up as a spread between rounds rather
than as a difference between variants.

- ``--op scan`` (default): the 1-D scan at the GPU table's shapes (``--shapes`` indexes
  ``ssmkit.bench.scan_gpu.TABLE_SHAPES``). Prints, in ms, the forward as an isolated call (CUDA
  events, GPU idle at the start: host work included), its device time (host work hidden behind a
  spin kernel) and the host time per call with the GPU kept busy; ``--bwd`` adds forward+backward
  (``torch.autograd.grad``, both timings).
- ``--op path``: forward+backward of the channels-last path scan under SS2D (the ``fused_cl``
  variant of ``ssmkit bench scan2d``, bf16, B=8, d_inner=384, cross) at ``--size``.
- ``--check``: before timing, each variant's outputs and gradients against the chunked float32
  path at an odd packed, reversed case (exit 1 if one differs). Run
  ``pytest -m gpu tests/core/ops/test_selective_scan_triton.py`` for the full correctness suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ssmkit.bench.scan_gpu import DTYPES, TABLE_SHAPES, cuda_time_ms, fwd_bwd_call, make_inputs, run_scan
from ssmkit.ops.selective_scan import selective_scan, triton_scan
from ssmkit.ops.selective_scan.samples import call_scan, sample_inputs


def _name(knobs: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in knobs.items()) or "default"


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


def check(knobs: dict, device: torch.device) -> bool:
    """One variant against the chunked float32 path: packed sequences, reverse, odd sizes, bf16 and fp32."""
    ok = True
    triton_scan.set_tile_config(**knobs)  # read by the forward and the backward
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 1e-2)):
        cu = torch.tensor([0, 97, 97, 301], device=device)
        ins = sample_inputs(1, 40, 301, 16, groups=2, dtype=dtype, device=device, nseq=3, seed=11)
        results = []
        for backend, cast in (("triton", dtype), ("chunked", torch.float32)):
            leaves = {k: (v.detach().to(cast if v.dtype == dtype else v.dtype).requires_grad_(True)
                          if v is not None else None) for k, v in ins.items()}
            y, h = call_scan(selective_scan, leaves, cu_seqlens=cu, reverse=True, return_final_state=True,
                             backend=backend)
            grads = torch.autograd.grad(y.float().sum() + h.sum(), [v for v in leaves.values() if v is not None])
            results.append([y, h, *grads])
        pairs = [(a.detach().float(), b.detach().float()) for a, b in zip(*results)]
        errs = [float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in pairs]
        good = all(e < tol for e in errs)
        ok &= good
        print(f"check {_name(knobs)} {str(dtype)[6:]}: worst {max(errs):.2e} (tol {tol:g}) {'OK' if good else 'FAIL'}")
    triton_scan.set_tile_config()
    return ok


def time_scan(args, variants: list[dict], device: torch.device) -> None:
    print(f"# {torch.cuda.get_device_name(device)}; ms: isolated call / device only / host per call")
    for si in (int(s) for s in args.shapes.split(",") if s):
        shape = TABLE_SHAPES[si]
        for dname in (d for d in args.dtypes.split(",") if d):
            ins = make_inputs(shape, DTYPES[dname], device)
            insg = make_inputs(shape, DTYPES[dname], device, requires_grad=True) if args.bwd else None
            gy = torch.randn(shape[:3], device=device, dtype=DTYPES[dname]) if args.bwd else None
            for knobs in variants * args.rounds:
                triton_scan.set_tile_config(**knobs)
                with torch.no_grad():
                    def fwd(ins=ins):
                        return run_scan(ins, "triton")

                    iso, dev_ms, host = cuda_time_ms(fwd), cuda_time_ms(fwd, device_only=True), host_ms(fwd)
                line = f"{str(shape):<22}{dname:<5}{_name(knobs):<28} fwd {iso:7.3f} {dev_ms:7.3f} {host:6.3f}"
                if args.bwd:
                    both = fwd_bwd_call(insg, "triton", gy)
                    line += f"   fwd+bwd {cuda_time_ms(both):7.3f} {cuda_time_ms(both, device_only=True):7.3f}"
                print(line, flush=True)
                triton_scan.set_tile_config()
            del ins, insg
            torch.cuda.empty_cache()


def time_path(args, variants: list[dict], device: torch.device) -> None:
    from ssmkit.bench.measure import median_ms
    from ssmkit.bench.scan2d import make_case, op_fused_cl

    layer, x, s = make_case(8, 192, 16, args.size, "cross", torch.bfloat16, device)
    leaves = [s["x_cl"], s["delta"], s["B"], s["C"]]
    for t in leaves:
        t.requires_grad_(True)

    def fwd_bwd():
        out = op_fused_cl(layer, x, s)
        torch.autograd.grad(out, leaves, torch.ones_like(out))

    print(f"# {torch.cuda.get_device_name(device)}; fused channels-last path scan {args.size}x{args.size}, "
          "fwd+bwd ms (isolated / device only)")
    for knobs in variants * args.rounds:
        triton_scan.set_tile_config(**knobs)
        iso = median_ms(fwd_bwd, device, reps=args.reps, warmup=2)
        dev_ms = median_ms(fwd_bwd, device, reps=args.reps, warmup=0, device_only=True)
        print(f"{_name(knobs):<36} {iso:8.3f} {dev_ms:8.3f}", flush=True)
        triton_scan.set_tile_config()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring for examples.")
    p.add_argument("--op", choices=["scan", "path"], default="scan", help="the 1-D scan or the SS2D path scan")
    p.add_argument("--variants", default="[{}]", help="JSON list of knob dicts; {} is the default (default: [{}])")
    p.add_argument("--shapes", default="0,1", help="--op scan: indices into TABLE_SHAPES (default 0,1)")
    p.add_argument("--dtypes", default="bf16,fp32", help="--op scan: bf16, fp32 or both (default both)")
    p.add_argument("--bwd", action="store_true", help="--op scan: also time forward+backward")
    p.add_argument("--size", type=int, default=64, help="--op path: H = W of the map (default 64)")
    p.add_argument("--reps", type=int, default=10, help="--op path: timed calls per variant (median; default 10)")
    p.add_argument("--rounds", type=int, default=1, help="time every variant this many times in turn (default 1)")
    p.add_argument("--check", action="store_true", help="first check each variant against the chunked path")
    args = p.parse_args()
    if not torch.cuda.is_available():
        p.error("needs a CUDA device")
    variants = json.loads(args.variants)
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        p.error(f"--variants must be a JSON list of objects; got {args.variants!r}")
    device = torch.device("cuda")
    if args.check and not all([check(knobs, device) for knobs in variants]):
        return 1
    (time_scan if args.op == "scan" else time_path)(args, variants, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
