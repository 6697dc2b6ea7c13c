"""``ssmkit bench scan``: the selective scan's reference, chunked path and step loop side by side.

``--cpu`` (the default) times, at B=2, D=256, float32, G=1 and L in {512, 2048, 8192} x N in
{16, 64}: the forward (no grad) and forward+backward of the chunked path and the loop reference
(forward at the smallest L, forward+backward there at N=16 only: its autograd backward
grows as L^2), and a loop of
``selective_state_update`` calls (forward only: streaming inference has no backward). It prints
milliseconds, each variant's ratio to the chunked path, and the peak memory the chunked
forward+backward allocates, as a multiple of its inputs plus outputs.

Times are medians, wall-clock by default; on a shared machine ``--clock cpu`` with
OMP_NUM_THREADS=1 measures the work instead of the wait. The header prints the load average.
``--gpu`` runs :func:`gpu_table` (Triton and chunked side by side at the issue-4 shapes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from ssmkit.registry import register_bench

BATCH, DIM = 2, 256
LENGTHS, STATES = (512, 2048, 8192), (16, 64)
REFERENCE_MAX_L = 512
# The reference's autograd backward costs O(B·D·N·L^2) (every time slice gets a full-size
# gradient): 18 s at L=512, N=16 on one core here, four times that at N=64.
REFERENCE_BWD = {(512, 16)}


def make_inputs(L: int, nstate: int, requires_grad: bool = False, seed: int = 0) -> dict:
    """Issue-3 inputs: dt = softplus(delta) around 0.3, A in [-4.5, -0.5], G=1, float32."""
    g = torch.Generator().manual_seed(seed)
    ins = {
        "u": torch.randn(BATCH, DIM, L, generator=g),
        "delta": torch.randn(BATCH, DIM, L, generator=g) * 0.3 - 1.0,
        "A": -(0.5 + 4.0 * torch.rand(DIM, nstate, generator=g)),
        "B": torch.randn(BATCH, 1, nstate, L, generator=g),
        "C": torch.randn(BATCH, 1, nstate, L, generator=g),
    }
    for t in ins.values():
        t.requires_grad_(requires_grad)
    return ins


def _scan(ins: dict, backend: str) -> torch.Tensor:
    from ssmkit.ops.selective_scan import selective_scan

    return selective_scan(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], backend=backend)


def _state_update_fn():
    """The streaming step op if its module exists (another part of issue 3), else None."""
    try:
        from ssmkit.ops.selective_scan.state_update import selective_state_update
    except ImportError:
        return None
    return selective_state_update


def _step_loop(ins: dict, step_fn) -> torch.Tensor:
    u, delta, A, B, C = ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"]
    state = u.new_zeros(BATCH, DIM, A.shape[1])
    ys = [step_fn(state, u[..., t], delta[..., t], A, B[..., t], C[..., t]) for t in range(u.shape[-1])]
    return torch.stack(ys, dim=-1)


_CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _median_ms(fn, reps: int) -> float:
    fn()  # warm-up: first-call allocations and lazy imports are not what we measure
    times = []
    for _ in range(reps):
        start = _clock()
        fn()
        times.append((_clock() - start) * 1e3)
    return statistics.median(times)


def _once_ms(fn) -> float:
    """One timed call, no warm-up: for the reference backward, which takes seconds."""
    start = _clock()
    fn()
    return (_clock() - start) * 1e3


def _fwd_bwd(ins: dict, backend: str):
    def run():
        y = _scan(ins, backend)
        y.backward(torch.ones_like(y))
        for t in ins.values():
            t.grad = None

    return run


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def peak_memory_bytes(fn) -> int | None:
    """Peak resident memory ``fn()`` adds above what was resident when it started, or None.

    Linux only: the kernel's high-water mark (VmHWM) is reset through /proc/self/clear_refs.
    glibc is told to serve every block of 64 KiB or more by mmap, so a freed tensor leaves the
    resident set at once and the mark tracks live tensors (temporaries, outputs, gradients).
    """
    import ctypes
    import gc

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: fixed, no dynamic growth
        libc.mallopt(-1, 64 * 1024)  # M_TRIM_THRESHOLD: give freed heap tops back too
        gc.collect()
        libc.malloc_trim(0)
        base = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        fn()
        return max(0, _status_kib("VmHWM") - base) * 1024
    except (OSError, AttributeError, ValueError):
        return None


def chunked_peak_bytes(L: int, nstate: int) -> int | None:
    """Peak memory of one chunked forward+backward, measured in a fresh interpreter.

    A fresh process keeps the allocator state of earlier cells (the reference's autograd graph,
    say) out of the reading; the call is warmed up once first.
    """
    code = ("import sys; from ssmkit.bench.scan import _fwd_bwd, make_inputs, peak_memory_bytes; "
            f"f = _fwd_bwd(make_inputs({L}, {nstate}, requires_grad=True), 'chunked'); f(); "
            "print(peak_memory_bytes(f))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or lines[-1] == "None":
        return None
    return int(lines[-1])


def cpu_table(args) -> list[dict]:
    lengths = (512, 2048) if args.quick else LENGTHS
    states = (16,) if args.quick else STATES
    reps = 3 if args.quick else args.reps
    step_fn = _state_update_fn()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# selective scan, CPU: B={BATCH} D={DIM} G=1 float32, softplus; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores, load average {load:.1f}, "
          f"{args.clock} clock, median of {reps}")
    if step_fn is None:
        print("# step loop: ssmkit.ops.selective_scan.state_update is not available; column skipped")
    head = (f"{'L':>6}{'N':>4}  {'variant':<10}{'fwd ms':>10}{'x chunked':>10}"
            f"{'fwd+bwd ms':>12}{'x chunked':>10}{'peak/io':>9}")
    print(head)
    rows = []
    for L in lengths:
        for nstate in states:
            ins = make_inputs(L, nstate)
            insg = make_inputs(L, nstate, requires_grad=True)
            with torch.no_grad():
                fwd = _median_ms(lambda ins=ins: _scan(ins, "chunked"), reps)
            both = _median_ms(_fwd_bwd(insg, "chunked"), reps)
            io = sum(t.numel() * t.element_size() for t in ins.values()) + BATCH * DIM * L * 4
            peak = chunked_peak_bytes(L, nstate)
            row = {"L": L, "N": nstate, "variant": "chunked", "fwd_ms": fwd, "fwdbwd_ms": both,
                   "peak_bytes": peak, "io_bytes": io}
            rows.append(row)
            ratio = "n/a" if peak is None else f"{peak / io:.2f}"
            mib = "n/a" if peak is None else f"{peak / 2**20:.1f}"
            print(f"{L:>6}{nstate:>4}  {'chunked':<10}{fwd:>10.1f}{1.0:>10.2f}{both:>12.1f}{1.0:>10.2f}"
                  f"{ratio:>9}   (peak {mib} MiB, io {io / 2**20:.1f} MiB)")
            if L <= REFERENCE_MAX_L:
                with torch.no_grad():
                    rf = _median_ms(lambda ins=ins: _scan(ins, "reference"), 1)
                timed = not args.quick and (L, nstate) in REFERENCE_BWD
                rb = _once_ms(_fwd_bwd(insg, "reference")) if timed else float("nan")
                rows.append({"L": L, "N": nstate, "variant": "reference", "fwd_ms": rf, "fwdbwd_ms": rb})
                rb_txt = f"{rb:.1f}" if timed else "skipped"
                rb_ratio = f"{rb / both:.1f}" if timed else ""
                print(f"{'':>10}  {'reference':<10}{rf:>10.1f}{rf / fwd:>10.1f}{rb_txt:>12}{rb_ratio:>10}")
            if step_fn is not None:
                with torch.no_grad():
                    sf = _median_ms(lambda ins=ins: _step_loop(ins, step_fn), 1)
                rows.append({"L": L, "N": nstate, "variant": "step loop", "fwd_ms": sf,
                             "fwdbwd_ms": float("nan")})
                print(f"{'':>10}  {'step loop':<10}{sf:>10.1f}{sf / fwd:>10.1f}{'-':>12}{'':>10}")
    print("x chunked = variant ms / chunked ms (above 1: slower than chunked); "
          "peak/io = peak bytes allocated during chunked fwd+bwd / bytes of inputs plus output")
    return rows


def gpu_table(args) -> None:
    """GPU side: Triton vs chunked at the issue-4 shapes (the Triton bench owns the details)."""
    try:
        from ssmkit.bench.scan_gpu import gpu_table as triton_gpu_table
    except ImportError:
        triton_gpu_table = None
    if triton_gpu_table is not None:
        extra = ["--shapes", "0"] if args.quick else []
        extra += ["--device-only"] if args.device_only else []
        extra += ["--json", args.json] if args.json else []
        triton_gpu_table(extra)
        return
    from ssmkit.ops.selective_scan import triton_status

    if not torch.cuda.is_available():
        raise RuntimeError("ssmkit bench scan --gpu needs a CUDA device")
    device = torch.device("cuda")
    ok, why = triton_status(device)
    backends = ["triton", "chunked"] if ok else ["chunked"]
    if not ok:
        print(f"# triton column skipped: {why}")
    shape = (8, 1536, 4096, 16)
    g = torch.Generator(device="cpu").manual_seed(0)
    batch, dim, L, nstate = shape
    ins = {k: v.to(device) for k, v in {
        "u": torch.randn(batch, dim, L, generator=g), "delta": torch.randn(batch, dim, L, generator=g) * 0.5 - 2,
        "A": -torch.rand(dim, nstate, generator=g) * 4 - 0.5, "B": torch.randn(batch, 1, nstate, L, generator=g),
        "C": torch.randn(batch, 1, nstate, L, generator=g)}.items()}
    for backend in backends:
        with torch.no_grad():
            ms = _median_ms(lambda b=backend: (_scan(ins, b), torch.cuda.synchronize()), args.reps)
        print(f"{shape!s:<24}{backend:<9}{ms:9.2f} ms fwd")


@register_bench("scan")
def run(argv: list[str]) -> int:
    """Selective scan: reference, chunked and step loop side by side (CPU); Triton vs chunked (--gpu)."""
    p = argparse.ArgumentParser(prog="ssmkit bench scan",
                                description="selective scan: reference vs chunked vs step loop (CPU), "
                                            "triton vs chunked (GPU)")
    p.add_argument("--cpu", action="store_true", help="CPU table (the default when neither flag is given)")
    p.add_argument("--gpu", action="store_true", help="GPU table: triton and chunked at the issue-4 shapes")
    p.add_argument("--quick", action="store_true", help="L in {512, 2048}, N=16, 3 reps, no reference backward")
    p.add_argument("--reps", type=int, default=5, help="timed runs per cell (median); default 5")
    p.add_argument("--clock", choices=sorted(_CLOCK), default="wall",
                   help="wall (default) or cpu: process CPU time, which on a shared machine measures the "
                        "work rather than the wait (use with OMP_NUM_THREADS=1; with more threads it "
                        "also counts OpenMP spin-waiting)")
    p.add_argument("--device-only", action="store_true",
                   help="GPU table: time only the kernels, with the host work hidden behind a spin kernel")
    p.add_argument("--json", default=None, help="GPU table: also write its rows to this JSON file")
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f"--reps must be at least 1; got {args.reps}")
    global _clock
    _clock = _CLOCK[args.clock]
    if args.cpu or not args.gpu:
        cpu_table(args)
    if args.gpu:
        gpu_table(args)
    return 0


__all__ = ["chunked_peak_bytes", "cpu_table", "gpu_table", "make_inputs", "peak_memory_bytes", "run"]
