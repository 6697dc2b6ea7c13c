"""``ssmkit bench streaming``: the streaming step costs O(1) per token, however long the stream.

Runs ``selective_state_update`` (the op) and ``Mamba.step`` (the layer, projections and conv
included) over streams of L tokens and prints the time per token at each L next to its ratio to
the shortest stream. Flat ratios (about 1.0) are the claim; a cost that grew with the history
would show up as a ratio growing with L.

The per-token figure is the median over 256-token windows, which keeps a scheduler hiccup on a
shared machine from moving the number; the mean is printed beside it. ``--clock cpu`` counts the
process's CPU time instead of wall time (CPU only), which is what to use on a machine that other
jobs share: time spent waiting for a core is then not billed to the step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ssmkit.bench.table import Column, format_table
from ssmkit.registry import register_bench

WINDOW = 256
WARMUP = 1024
COLUMNS = [Column("variant", "variant", width=48), Column("L", "L", "d", width=7),
           Column("us/token (median)", "median_us", ".1f"), Column("mean", "mean_us", ".1f", width=8),
           Column("vs first L", "ratio", ".2f", width=10), Column("state bytes", "state_bytes", "d")]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_stream(step, L: int, device: torch.device, clock=time.perf_counter) -> tuple[float, float]:
    """Run ``step(t)`` for t < L; return (median, mean) microseconds per token over windows."""
    windows = []
    t = 0
    while t < L:
        n = min(WINDOW, L - t)
        _sync(device)
        start = clock()
        for i in range(t, t + n):
            step(i)
        _sync(device)
        windows.append((clock() - start) / n * 1e6)
        t += n
    return statistics.median(windows), statistics.fmean(windows)


def _op_stepper(batch: int, dim: int, nstate: int, device: torch.device):
    from ssmkit.ops.selective_scan import selective_state_update

    state = torch.zeros(batch, dim, nstate, device=device)
    A = -torch.rand(dim, nstate, device=device).mul(4.0).add(0.1)
    D, dt_bias = torch.randn(dim, device=device), torch.randn(dim, device=device)
    # A small pool of pre-drawn tokens, cycled, so input generation is not what gets timed.
    pool = 64
    x, dt, z = (torch.randn(pool, batch, dim, device=device) for _ in range(3))
    B, C = (torch.randn(pool, batch, 1, nstate, device=device) for _ in range(2))

    def step(i: int) -> None:
        j = i % pool
        selective_state_update(state, x[j], dt[j], A, B[j], C[j], D=D, z=z[j], dt_bias=dt_bias)

    return step, state


def _layer_stepper(batch: int, d_model: int, nstate: int, device: torch.device):
    from ssmkit.layers.mamba import Mamba

    mixer = Mamba(d_model, d_state=nstate).to(device).eval()
    cache = mixer.allocate_inference_cache(batch)
    pool = 64
    tokens = torch.randn(pool, batch, d_model, device=device)

    def step(i: int) -> None:
        mixer.step(tokens[i % pool], cache)

    return step, cache.ssm_state


@register_bench("streaming")
def main(argv: list[str] | None = None) -> int:
    """Streaming step: time per token and state size from L=1k to L=64k."""
    parser = argparse.ArgumentParser(prog="ssmkit bench streaming", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dim", type=int, default=256, help="D channels of the op (d_inner)")
    parser.add_argument("--d-model", type=int, default=128, help="width of the Mamba layer (d_inner = 2x)")
    parser.add_argument("--nstate", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--gpu", action="store_true", help="run on CUDA")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or this process's CPU time (CPU runs on a shared machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.gpu else "cpu")
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu given but no CUDA device is available")
    if args.gpu and args.clock == "cpu":
        raise SystemExit("--clock cpu measures host CPU time; use the wall clock with --gpu")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    variants = {
        f"selective_state_update B={args.batch} D={args.dim} N={args.nstate}":
            lambda: _op_stepper(args.batch, args.dim, args.nstate, device),
        f"Mamba.step B={args.batch} d_model={args.d_model} N={args.nstate}":
            lambda: _layer_stepper(args.batch, args.d_model, args.nstate, device),
    }
    where = torch.cuda.get_device_name(device) if args.gpu else f"{torch.get_num_threads()} threads"
    print(f"device: {device} ({where}), clock: {args.clock}")
    print(format_table([], COLUMNS))
    with torch.no_grad():
        for label, make in variants.items():
            base = None
            for L in args.lengths:
                step, state = make()
                for i in range(WARMUP):  # warm-up: allocator, dispatch caches, CPU caches
                    step(i)
                median, mean = _time_stream(step, L, device, clock)
                base = median if base is None else base
                row = {"variant": label, "L": L, "median_us": median, "mean_us": mean, "ratio": median / base,
                       "state_bytes": state.numel() * state.element_size()}
                print(format_table([row], COLUMNS, header=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
