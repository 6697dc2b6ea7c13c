"""Timeline of one isolated call of the Triton scan at an issue shape (torch.profiler, CUPTI).

    PYTHONPATH=core:apps python3 scripts/gpu_step_trace.py [--shape 0] [--dtype bf16] [--fwd-only]

Runs the call (forward+backward through torch.autograd.grad, or the no-grad forward) a few times,
profiles three more with the GPU idle at each start, and prints for the last one every kernel's
start relative to the call's start, its duration and name, the call's host span, and the host ops
with the most self time. It shows where an isolated call's time beyond its kernels goes: host
work before the first kernel, gaps between kernels, and the small kernels around the scan.
"""

from __future__ import annotations

import argparse

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from ssmkit.bench.scan_gpu import DTYPES, ISSUE_SHAPES, fwd_bwd_call, make_inputs, run_scan


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", type=int, default=0)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--fwd-only", action="store_true")
    a = p.parse_args()
    dev = torch.device("cuda")
    shape = ISSUE_SHAPES[a.shape]
    ins = make_inputs(shape, DTYPES[a.dtype], dev, requires_grad=not a.fwd_only)
    gy = torch.randn(shape[:3], device=dev, dtype=DTYPES[a.dtype])
    fwd_bwd = fwd_bwd_call(ins, "triton", gy)

    def step():
        if a.fwd_only:
            with torch.no_grad():
                run_scan(ins, "triton")
        else:
            fwd_bwd()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            with record_function("call"):
                step()
            torch.cuda.synchronize()
    events = list(prof.events())
    calls = sorted((e for e in events if e.name == "call" and e.device_type == DeviceType.CPU),
                   key=lambda e: e.time_range.start)
    call = calls[-1]
    t0, t1 = call.time_range.start, call.time_range.end
    kernels = sorted((e for e in events if e.device_type == DeviceType.CUDA and e.time_range.start >= t0),
                     key=lambda e: e.time_range.start)
    kernels = [k for k in kernels if k.time_range.start < t1 + 100_000]
    print(f"# {torch.cuda.get_device_name(dev)} {shape} {a.dtype} {'fwd' if a.fwd_only else 'fwd+bwd'}: "
          f"host span of the call {t1 - t0:.1f} us; kernels (start after the call's start, duration, name):")
    for k in kernels:
        print(f"  {k.time_range.start - t0:9.1f} {k.time_range.end - k.time_range.start:9.1f}  {k.name[:90]}")
    if kernels:
        end = max(k.time_range.end for k in kernels)
        busy = sum(k.time_range.end - k.time_range.start for k in kernels)
        print(f"# first kernel at {kernels[0].time_range.start - t0:.1f} us, last ends at {end - t0:.1f} us, "
              f"kernels busy {busy:.1f} us, {len(kernels)} kernels")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=50))


if __name__ == "__main__":
    main()
