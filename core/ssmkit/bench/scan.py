"""``ssmkit bench scan``: the selective scan's reference, chunked path and step loop side by side.

``--cpu`` (the default) times, at B=2, D=256, float32, G=1 and L in {512, 2048, 8192} x N in
{16, 64}: the forward (no grad) and forward+backward of the chunked path and the loop reference
(forward at the smallest L, forward+backward there at N=16 only: its autograd backward
grows as L^2), and a loop of ``selective_state_update`` calls (forward only: streaming
inference has no backward). It prints milliseconds, each variant's ratio to the chunked path,
and the peak memory the chunked forward+backward allocates, as a multiple of its inputs plus
outputs.

Times are medians, wall-clock by default; on a shared machine ``--clock cpu`` with
OMP_NUM_THREADS=1 measures the work instead of the wait. The header prints the load average.
``--gpu`` runs :func:`ssmkit.bench.scan_gpu.gpu_table`: the Triton scan at three reference shapes
(or ``--sweep``), with ``--vs mamba-ssm`` beside mamba-ssm's CUDA scan in the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch

from ssmkit.bench.measure import CLOCKS, median_ms, peak_bytes
from ssmkit.bench.table import Column, format_table
from ssmkit.ops.selective_scan import selective_scan, selective_state_update
from ssmkit.ops.selective_scan.samples import call_scan, sample_inputs
from ssmkit.registry import register_bench

BATCH, DIM = 2, 256
LENGTHS, STATES = (512, 2048, 8192), (16, 64)
REFERENCE_MAX_L = 512
# The reference's autograd backward costs O(B·D·N·L^2) (every time slice gets a full-size
# gradient): 18 s at L=512, N=16 on one core here, four times that at N=64.
REFERENCE_BWD = {(512, 16)}
COLUMNS = [
    Column("L", "L", "d", width=6), Column("N", "N", "d", width=3), Column("variant", "variant", width=10),
    Column("fwd ms", "fwd_ms", ".1f", width=9), Column("x chunked", "fwd_x", ".2f", width=9),
    Column("fwd+bwd ms", "fwdbwd_ms", ".1f", width=10), Column("x chunked", "fwdbwd_x", ".2f", width=9),
    Column("peak/io", lambda r: r["peak_bytes"] / r["io_bytes"] if r.get("peak_bytes") else None, ".2f", width=7),
    Column("peak MiB", lambda r: r["peak_bytes"] / 2**20 if r.get("peak_bytes") else None, ".1f", width=8),
    Column("io MiB", lambda r: r["io_bytes"] / 2**20 if r.get("io_bytes") else None, ".1f", width=6),
]


def make_inputs(L: int, nstate: int, requires_grad: bool = False, seed: int = 0) -> dict:
    """The table's inputs: dt = softplus(delta) around 0.3, A in [-4.5, -0.5], G=1, float32, no
    D, z, delta_bias or initial state."""
    return sample_inputs(BATCH, DIM, L, nstate, skip=False, gate=False, bias=False, init=False, delta_scale=0.3,
                         decay=(0.5, 4.5), seed=seed, requires_grad=requires_grad)


def _scan(ins: dict, backend: str) -> torch.Tensor:
    return call_scan(selective_scan, ins, backend=backend)


def _step_loop(ins: dict) -> torch.Tensor:
    u, delta, A, B, C = ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"]
    state = u.new_zeros(BATCH, DIM, A.shape[1])
    ys = [selective_state_update(state, u[..., t], delta[..., t], A, B[..., t], C[..., t]) for t in range(u.shape[-1])]
    return torch.stack(ys, dim=-1)


def _fwd_bwd(ins: dict, backend: str):
    def run():
        y = _scan(ins, backend)
        y.backward(torch.ones_like(y))
        for t in ins.values():
            if t is not None:
                t.grad = None

    return run


def chunked_peak_bytes(L: int, nstate: int) -> int | None:
    """Peak memory of one chunked forward+backward, measured in a fresh interpreter.

    A fresh process keeps the allocator state of earlier cells (the reference's autograd graph,
    say) out of the reading; the call is warmed up once first.
    """
    code = ("from ssmkit.bench.measure import peak_bytes; from ssmkit.bench.scan import _fwd_bwd, make_inputs; "
            f"f = _fwd_bwd(make_inputs({L}, {nstate}, requires_grad=True), 'chunked'); f(); "
            "print(peak_bytes(f))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or lines[-1] == "None":
        return None
    return int(lines[-1])


def cpu_table(args) -> list[dict]:
    lengths = (512, 2048) if args.quick else LENGTHS
    states = (16,) if args.quick else STATES
    reps = 3 if args.quick else args.reps
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# selective scan, CPU: B={BATCH} D={DIM} G=1 float32, softplus; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores, load average {load:.1f}, "
          f"{args.clock} clock, median of {reps}")
    print(format_table([], COLUMNS))
    rows = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(format_table([row], COLUMNS, header=False), flush=True)

    for L in lengths:
        for nstate in states:
            ins = make_inputs(L, nstate)
            insg = make_inputs(L, nstate, requires_grad=True)
            with torch.no_grad():
                fwd = median_ms(lambda ins=ins: _scan(ins, "chunked"), reps=reps, clock=args.clock)
            both = median_ms(_fwd_bwd(insg, "chunked"), reps=reps, clock=args.clock)
            io = sum(t.numel() * t.element_size() for t in ins.values() if t is not None) + BATCH * DIM * L * 4
            emit({"L": L, "N": nstate, "variant": "chunked", "fwd_ms": fwd, "fwd_x": 1.0, "fwdbwd_ms": both,
                  "fwdbwd_x": 1.0, "peak_bytes": chunked_peak_bytes(L, nstate), "io_bytes": io})
            if L <= REFERENCE_MAX_L:
                with torch.no_grad():
                    rf = median_ms(lambda ins=ins: _scan(ins, "reference"), reps=1, clock=args.clock)
                # One timed call, no warm-up: the reference backward takes seconds.
                timed = not args.quick and (L, nstate) in REFERENCE_BWD
                rb = median_ms(_fwd_bwd(insg, "reference"), reps=1, warmup=0, clock=args.clock) if timed else None
                emit({"L": L, "N": nstate, "variant": "reference", "fwd_ms": rf, "fwd_x": rf / fwd, "fwdbwd_ms": rb,
                      "fwdbwd_x": rb / both if timed else None})
            with torch.no_grad():
                sf = median_ms(lambda ins=ins: _step_loop(ins), reps=1, clock=args.clock)
            emit({"L": L, "N": nstate, "variant": "step loop", "fwd_ms": sf, "fwd_x": sf / fwd})
    print("x chunked = variant ms / chunked ms (above 1: slower than chunked); - = not timed; "
          "peak/io = peak bytes allocated during chunked fwd+bwd / bytes of inputs plus output")
    return rows


def gpu_table(args) -> list[dict]:
    """The Triton scan on the GPU, optionally beside mamba-ssm (``ssmkit.bench.scan_gpu`` owns the details)."""
    from ssmkit.bench.scan_gpu import gpu_table as triton_gpu_table

    extra = ["--shapes", "0"] if args.quick else []
    extra += ["--device-only"] if args.device_only else []
    extra += ["--json", args.json] if args.json else []
    extra += ["--vs", args.vs] + (["--peer-dir", args.peer_dir] if args.peer_dir else [])
    extra += ["--sweep"] if args.sweep else []
    return triton_gpu_table(extra)


@register_bench("scan")
def run(argv: list[str]) -> int:
    """Selective scan: reference, chunked and step loop side by side (CPU); Triton, vs mamba-ssm (--gpu)."""
    p = argparse.ArgumentParser(prog="ssmkit bench scan",
                                description="selective scan: reference vs chunked vs step loop (CPU), "
                                            "triton, beside mamba-ssm with --vs (GPU)")
    p.add_argument("--cpu", action="store_true", help="CPU table (the default when neither flag is given)")
    p.add_argument("--gpu", action="store_true",
                   help="GPU table: the triton scan at three reference shapes, with floors")
    p.add_argument("--quick", action="store_true", help="L in {512, 2048}, N=16, 3 reps, no reference backward")
    p.add_argument("--reps", type=int, default=5, help="timed runs per cell (median); default 5")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall (default) or cpu: process CPU time, which on a shared machine measures the "
                        "work rather than the wait (use with OMP_NUM_THREADS=1; with more threads it "
                        "also counts OpenMP spin-waiting)")
    p.add_argument("--device-only", action="store_true",
                   help="GPU table: time only the kernels, with the host work hidden behind a spin kernel")
    p.add_argument("--json", default=None, help="GPU table: also write its rows to this JSON file")
    p.add_argument("--vs", choices=("none", "mamba-ssm"), default="none",
                   help="GPU table: time mamba-ssm's CUDA scan beside ours in the same run (installed mamba_ssm, "
                        "or --peer-dir)")
    p.add_argument("--peer-dir", default=None,
                   help="GPU table: folder with mamba-ssm's build_and_load.py (default: $SSMKIT_PEER_DIR)")
    p.add_argument("--sweep", action="store_true",
                   help="GPU table: the full sweep of shapes, dtypes and modes instead of the three reference shapes")
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f"--reps must be at least 1; got {args.reps}")
    if args.cpu or not args.gpu:
        cpu_table(args)
    if args.gpu:
        gpu_table(args)
    return 0


__all__ = ["chunked_peak_bytes", "cpu_table", "gpu_table", "make_inputs", "peak_bytes", "run"]
