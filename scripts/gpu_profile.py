"""Where GPU time goes: profiler views of the selective scan, the SS2D scan core and the blocks.

    python scripts/gpu_profile.py scan-trace [--shape 0] [--dtype bf16] [--fwd-only]
    ncu --clock-control none -k regex:_scan_bwd_kernel --launch-skip 2 --launch-count 1 \\
        python scripts/gpu_profile.py scan-loop [--shape 0] [--dtype bf16] [--knob T_bwd=8 ...]
    python scripts/gpu_profile.py scan2d [--size 64] [--variants fused_cl,materialized] [--top 8]
    python scripts/gpu_profile.py block mega [--dtype bf16] [--top 12]
    python scripts/gpu_profile.py host [--size 64] [--variant fused_cl]

- ``scan-trace``: one isolated call of the Triton scan at a GPU-table shape (torch.profiler with
  CUPTI): every kernel's start relative to the call's start, its duration and name, the call's
  host span, and the host ops with the most self time. It shows where an isolated call's time
  beyond its kernels goes: host work before the first kernel, gaps, the small kernels around it.
- ``scan-loop``: the scan's forward+backward a few times under the given tile knobs, for an
  external profiler such as Nsight Compute (``ncu``).
- ``scan2d``: the top CUDA kernels of ``ssmkit bench scan2d``'s op-level variants, forward and
  forward+backward, over 5 steps.
- ``block``: the top CUDA ops of one registered block's forward+backward at ``ssmkit bench
  blocks``' standard size.
- ``host``: the host (Python) time per call of a scan2d variant with the GPU kept busy, then the
  top host functions by own time (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from ssmkit.bench.scan_gpu import DTYPES, TABLE_SHAPES, fwd_bwd_call, make_inputs, run_scan

DEVICE = torch.device("cuda")


def _warm(step, n: int = 3) -> None:
    for _ in range(n):
        step()
    torch.cuda.synchronize()


def scan_trace(args) -> None:
    shape = TABLE_SHAPES[args.shape]
    ins = make_inputs(shape, DTYPES[args.dtype], DEVICE, requires_grad=not args.fwd_only)
    gy = torch.randn(shape[:3], device=DEVICE, dtype=DTYPES[args.dtype])
    fwd_bwd = fwd_bwd_call(ins, "triton", gy)

    def step():
        if args.fwd_only:
            with torch.no_grad():
                run_scan(ins, "triton")
        else:
            fwd_bwd()

    _warm(step)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            with record_function("call"):
                step()
            torch.cuda.synchronize()
    events = list(prof.events())
    calls = sorted((e for e in events if e.name == "call" and e.device_type == DeviceType.CPU),
                   key=lambda e: e.time_range.start)
    t0, t1 = calls[-1].time_range.start, calls[-1].time_range.end
    kernels = sorted((e for e in events if e.device_type == DeviceType.CUDA and e.time_range.start >= t0),
                     key=lambda e: e.time_range.start)
    kernels = [k for k in kernels if k.time_range.start < t1 + 100_000]
    print(f"# {torch.cuda.get_device_name(DEVICE)} {shape} {args.dtype} {'fwd' if args.fwd_only else 'fwd+bwd'}: "
          f"host span of the call {t1 - t0:.1f} us; kernels (start after the call's start, duration, name):")
    for k in kernels:
        print(f"  {k.time_range.start - t0:9.1f} {k.time_range.end - k.time_range.start:9.1f}  {k.name[:90]}")
    if kernels:
        end = max(k.time_range.end for k in kernels)
        busy = sum(k.time_range.end - k.time_range.start for k in kernels)
        print(f"# first kernel at {kernels[0].time_range.start - t0:.1f} us, last ends at {end - t0:.1f} us, "
              f"kernels busy {busy:.1f} us, {len(kernels)} kernels")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=50))


def scan_loop(args) -> None:
    from ssmkit.ops.selective_scan import triton_scan

    triton_scan.set_tile_config(**{k: int(v) for k, v in (kv.split("=") for kv in args.knob)})
    shape = TABLE_SHAPES[args.shape]
    ins = make_inputs(shape, DTYPES[args.dtype], DEVICE, requires_grad=True)
    gy = torch.randn(shape[:3], device=DEVICE, dtype=DTYPES[args.dtype])
    step = fwd_bwd_call(ins, "triton", gy)
    for _ in range(args.iters):
        step()
    torch.cuda.synchronize()


def scan2d(args) -> None:
    from ssmkit.bench.scan2d import VARIANTS, make_case

    layer, x, s = make_case(8, 192, 16, args.size, "cross", torch.bfloat16, DEVICE)
    leaves = [x, s["x_cl"], s["delta"], s["B"], s["C"]]
    for name in args.variants.split(","):
        fn = VARIANTS["op"][name]
        for mode in ("fwd", "fwdbwd"):
            for t in leaves:
                t.requires_grad_(mode == "fwdbwd")

            def step(fn=fn, mode=mode):
                if mode == "fwd":
                    with torch.no_grad():
                        return fn(layer, x, s)
                out = fn(layer, x, s)
                torch.autograd.grad(out, [t for t in leaves if t.requires_grad], torch.ones_like(out),
                                    allow_unused=True)

            _warm(step)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    step()
                torch.cuda.synchronize()
            print(f"\n== {name} {mode} {args.size}x{args.size} (5 steps)")
            print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.top,
                                            max_name_column_width=70))


def block(args) -> None:
    from ssmkit.bench.blocks import STANDARD, make_input
    from ssmkit.registry import create_block

    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    mod = create_block(args.name, d_model=STANDARD["d_model"]).to(DEVICE, dtype).train()
    x = make_input(mod, STANDARD["d_model"], STANDARD, DEVICE, dtype)
    inputs = [t.requires_grad_() if t.is_floating_point() else t for t in (x if isinstance(x, tuple) else (x,))]

    def step():
        out = mod(*inputs)
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.float().mean().backward()

    _warm(step)
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.top, max_name_column_width=60))


def host(args) -> None:
    from ssmkit.bench.scan2d import VARIANTS, make_case

    layer, x, s = make_case(8, 192, 16, args.size, "cross", torch.bfloat16, DEVICE)
    fn = VARIANTS["op"][args.variant]
    with torch.no_grad():
        _warm(lambda: fn(layer, x, s), 5)
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU work queued ahead, so launches never block
        t0 = time.perf_counter()
        for _ in range(50):
            fn(layer, x, s)
        per_call = (time.perf_counter() - t0) / 50 * 1e3
        torch.cuda.synchronize()
        print(f"{args.variant} {args.size}x{args.size} fwd: host time per call {per_call:.3f} ms")
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(50):
            fn(layer, x, s)
        prof.disable()
        torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(16)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring for what each view shows.")
    sub = p.add_subparsers(dest="view", required=True)
    for name, helptext in (("scan-trace", "timeline of one isolated scan call"),
                           ("scan-loop", "the scan's fwd+bwd in a loop, for ncu")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("--shape", type=int, default=0, help="index into TABLE_SHAPES (default 0)")
        q.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
        if name == "scan-trace":
            q.add_argument("--fwd-only", action="store_true", help="profile the no-grad forward instead")
        else:
            q.add_argument("--knob", action="append", default=[], help="tile knob NAME=VALUE (repeatable)")
            q.add_argument("--iters", type=int, default=3, help="fwd+bwd calls (default 3)")
    q = sub.add_parser("scan2d", help="top kernels of the SS2D scan-core variants")
    q.add_argument("--size", type=int, default=64, help="H = W (default 64)")
    q.add_argument("--variants", default="fused_cl,materialized", help="comma-separated op-level variants")
    q.add_argument("--top", type=int, default=8, help="kernels listed (default 8)")
    q = sub.add_parser("block", help="top CUDA ops of one registered block's fwd+bwd")
    q.add_argument("name", help="a registered block (ssmkit list block)")
    q.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    q.add_argument("--top", type=int, default=12, help="ops listed (default 12)")
    q = sub.add_parser("host", help="host time per call of a scan2d variant, and its cProfile")
    q.add_argument("--size", type=int, default=64, help="H = W (default 64)")
    q.add_argument("--variant", default="fused_cl", help="an op-level scan2d variant (default fused_cl)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        p.error("needs a CUDA device")
    {"scan-trace": scan_trace, "scan-loop": scan_loop, "scan2d": scan2d, "block": block, "host": host}[args.view](args)


if __name__ == "__main__":
    main()
