"""GPU selective-scan benchmark: the Triton path and the chunked PyTorch path at three reference shapes.

``gpu_table(argv)`` times forward (no grad) and forward+backward, float32 and bfloat16, with
CUDA events (median of ``--reps``), and reports each time against two floors measured in the
same run: the memory floor (bytes that must cross HBM over the measured device-to-device copy
bandwidth) and the exp floor (B·D·L·N exp2 over the measured exp2 throughput of a Triton
kernel). It also prints mamba-ssm v2.3.2's CUDA times quoted for these shapes (H100 80GB HBM3) and
the ratio to them. Inputs: variable B/C with G=1, z, D, delta_bias, softplus.

`ssmkit bench scan --gpu` (core/ssmkit/bench/scan.py) calls ``gpu_table``. Nothing here
imports Triton or touches CUDA until a function runs, so the registry can import this module on
any machine.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

# (B, D, L, N) and mamba-ssm's quoted times in ms: {dtype: (fwd, fwd+bwd)}.
TABLE_SHAPES: list[tuple[int, int, int, int]] = [(8, 1536, 4096, 16), (4, 2048, 16384, 16), (8, 1536, 4096, 64)]
MAMBA_MS: dict[tuple[tuple[int, int, int, int], str], tuple[float, float]] = {
    ((8, 1536, 4096, 16), "fp32"): (1.83, 5.97),
    ((8, 1536, 4096, 16), "bf16"): (0.894, 4.60),
    ((4, 2048, 16384, 16), "fp32"): (5.06, 15.9),
    ((4, 2048, 16384, 16), "bf16"): (2.81, 12.8),
    ((8, 1536, 4096, 64), "fp32"): (6.49, 21.5),
    ((8, 1536, 4096, 64), "bf16"): (3.00, 17.3),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def make_inputs(shape, dtype: torch.dtype, device, requires_grad: bool = False, groups: int = 1, seed: int = 0):
    """Random table inputs: u, delta [B, D, L]; A [D, N]; B, C [B, G, N, L]; D, delta_bias [D]; z."""
    batch, dim, L, N = shape
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*s, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*s, generator=g) * scale + shift).to(device=device, dtype=dt)

    ins = {
        "u": rnd(batch, dim, L),
        "delta": rnd(batch, dim, L, scale=0.5, shift=-2.0),  # softplus(-2 +- 0.5): dt ~ 0.13
        "A": -torch.exp(torch.randn(dim, N, generator=g) * 0.5).to(device),
        "B": rnd(batch, groups, N, L),
        "C": rnd(batch, groups, N, L),
        "D": rnd(dim, dt=torch.float32),
        "z": rnd(batch, dim, L),
        "delta_bias": rnd(dim, scale=0.1, dt=torch.float32),
    }
    if requires_grad:
        for t in ins.values():
            t.requires_grad_(True)
    return ins


def run_scan(ins: dict, backend: str):
    from ssmkit.ops.selective_scan import selective_scan

    return selective_scan(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], D=ins["D"], z=ins["z"],
                          delta_bias=ins["delta_bias"], delta_softplus=True, backend=backend)


def fwd_bwd_call(ins: dict, backend: str, gy: torch.Tensor):
    """A closure running the scan's forward and backward once, for timing. It goes through
    torch.autograd.grad, which hands the gradients back instead of adding them into .grad: from the
    second call on, y.backward() would also time one read-modify-write of every input-sized
    gradient (0.2-0.5 ms at the table's shapes), which is not the op's work (docs/benchmarks.md)."""
    leaves = [t for t in ins.values() if t is not None and t.requires_grad]
    return lambda: torch.autograd.grad(run_scan(ins, backend), leaves, gy)


def cuda_time_ms(fn, reps: int = 10, warmup: int = 2, device_only: bool = False) -> float:
    """Median over ``reps`` of CUDA-event times around ``fn()``, after ``warmup`` calls.

    By default the GPU is idle when the start event is recorded, so the time also holds the host
    work (Python, launches) before ``fn``'s first kernel reaches the GPU: what a caller of an
    isolated op waits for. With ``device_only`` a ~1 ms spin kernel is queued first, so the host
    work overlaps it and the events bracket only the GPU's execution of ``fn``'s kernels (and any
    gaps between them): the time a busy pipeline would see."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    spin = 2_000_000 if device_only else 0  # cycles: about 1 ms at the H100/H200's ~2 GHz
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if spin:
            torch.cuda._sleep(spin)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(device, nbytes: int = 1 << 30, reps: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    src = torch.empty(nbytes // 4, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda: dst.copy_(src), reps=reps)
    return 2 * nbytes / (ms * 1e-3)


def exp2_rate(device, reps: int = 10) -> float:
    """Measured exp2 throughput (exp2 per second) of a Triton kernel with many independent chains."""
    import triton
    import triton.language as tl

    @triton.jit
    def _exp2_chain(x_ptr, out_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        acc = tl.load(x_ptr + offs)
        for _ in range(ITERS):
            acc = tl.exp2(acc * -0.75)  # stays in (0.5, 1]: no denormals, no overflow
        tl.store(out_ptr + offs, acc)

    props = torch.cuda.get_device_properties(device)
    block, iters = 2048, 512
    nprog = props.multi_processor_count * 16
    x = torch.rand(nprog * block, device=device)
    out = torch.empty_like(x)
    ms = cuda_time_ms(lambda: _exp2_chain[(nprog,)](x, out, ITERS=iters, BLOCK=block, num_warps=8), reps=reps)
    return x.numel() * iters / (ms * 1e-3)


def floor_bytes(shape, elem: int, backward: bool) -> int:
    """Fewest HBM bytes: forward reads u, delta, z, B, C and writes y; the backward reads
    u, delta, z, dy, B, C and writes du, ddelta, dz, dB, dC (B, C and their grads at G=1)."""
    batch, dim, L, N = shape
    x = batch * dim * L * elem
    bc = batch * N * L * elem
    fwd = 4 * x + 2 * bc
    if not backward:
        return fwd
    return fwd + 7 * x + 4 * bc


def floor_exps(shape, backward: bool) -> int:
    """exp2 count: B·D·L·N forward; the backward needs the same decays again (recomputed)."""
    batch, dim, L, N = shape
    return batch * dim * L * N * (2 if backward else 1)


def measure(shape, dname: str, backend: str, reps: int, device, device_only: bool = False) -> tuple[float, float]:
    """(forward ms without grad, forward+backward ms) for one shape, dtype and backend."""
    dtype = DTYPES[dname]
    ins = make_inputs(shape, dtype, device)
    with torch.no_grad():
        fwd = cuda_time_ms(lambda: run_scan(ins, backend), reps=reps, device_only=device_only)
    insg = make_inputs(shape, dtype, device, requires_grad=True)
    gy = torch.randn(shape[0], shape[1], shape[2], device=device, dtype=dtype)

    both = cuda_time_ms(fwd_bwd_call(insg, backend, gy), reps=reps, device_only=device_only)
    del ins, insg
    torch.cuda.empty_cache()
    return fwd, both


def gpu_table(argv: list[str] | None = None) -> list[dict]:
    """The reference table on this GPU; returns one dict per (shape, dtype, backend)."""
    p = argparse.ArgumentParser(prog="ssmkit bench scan --gpu",
                                description="Triton vs chunked selective scan at three reference shapes, with floors")
    p.add_argument("--shapes", default="0,1,2", help="indices into TABLE_SHAPES (default: all three)")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--backends", default="triton,chunked")
    p.add_argument("--reps", type=int, default=10, help="timed runs per cell (median)")
    p.add_argument("--chunked-reps", type=int, default=3, help="timed runs for the slow chunked path")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--device-only", action="store_true",
                   help="time only the kernels (host work hidden behind a spin kernel), not the isolated call")
    args = p.parse_args(argv or [])
    if not torch.cuda.is_available():
        raise RuntimeError("ssmkit bench scan --gpu needs a CUDA device")
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    bw = copy_bandwidth(device)
    ex = exp2_rate(device)
    print(f"# {name}: copy {bw / 1e12:.2f} TB/s (read+write), Triton exp2 {ex / 1e12:.2f} Texp2/s"
          + (", device time only" if args.device_only else ", isolated calls (host time included)"))
    if "H100" not in name:
        print(f"# the mamba column was measured on an H100 80GB, not this {name}: its ratios are cross-card")
    rows = []
    head = (f"{'shape (B,D,L,N)':<22}{'dtype':<6}{'backend':<9}{'fwd ms':>8}{'mamba':>7}{'x':>6}"
            f"{'mem%':>6}{'exp%':>6}{'fwd+bwd':>9}{'mamba':>7}{'x':>6}{'mem%':>6}{'exp%':>6}")
    print(head)
    for si in (int(s) for s in args.shapes.split(",") if s):
        shape = TABLE_SHAPES[si]
        for dname in (d for d in args.dtypes.split(",") if d):
            elem = torch.empty((), dtype=DTYPES[dname]).element_size()
            mf, mb = MAMBA_MS[(shape, dname)]
            for backend in (b for b in args.backends.split(",") if b):
                reps = args.reps if backend == "triton" else args.chunked_reps
                try:
                    fwd, both = measure(shape, dname, backend, reps, device, args.device_only)
                except torch.cuda.OutOfMemoryError:
                    print(f"{str(shape):<22}{dname:<6}{backend:<9} out of memory")
                    torch.cuda.empty_cache()
                    continue
                row = dict(shape=shape, dtype=dname, backend=backend, device=name, fwd_ms=fwd, fwdbwd_ms=both,
                           mamba_fwd_ms=mf, mamba_fwdbwd_ms=mb,
                           mem_floor_fwd_ms=floor_bytes(shape, elem, False) / bw * 1e3,
                           mem_floor_fwdbwd_ms=floor_bytes(shape, elem, True) / bw * 1e3,
                           exp_floor_fwd_ms=floor_exps(shape, False) / ex * 1e3,
                           exp_floor_fwdbwd_ms=floor_exps(shape, True) / ex * 1e3,
                           copy_TBps=bw / 1e12, exp2_T_per_s=ex / 1e12, device_only=args.device_only)
                rows.append(row)
                print(f"{str(shape):<22}{dname:<6}{backend:<9}{fwd:8.3f}{mf:7.2f}{mf / fwd:6.2f}"
                      f"{100 * row['mem_floor_fwd_ms'] / fwd:6.0f}{100 * row['exp_floor_fwd_ms'] / fwd:6.0f}"
                      f"{both:9.3f}{mb:7.2f}{mb / both:6.2f}"
                      f"{100 * row['mem_floor_fwdbwd_ms'] / both:6.0f}{100 * row['exp_floor_fwdbwd_ms'] / both:6.0f}",
                      flush=True)
    print("x = mamba-ssm ms / ours (above 1: faster); mem%/exp% = floor / measured")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


__all__ = ["TABLE_SHAPES", "MAMBA_MS", "copy_bandwidth", "exp2_rate", "floor_bytes",
           "floor_exps", "gpu_table", "make_inputs"]
