"""``ssmkit bench mamba-layer``: the Mamba mixer users call, ssmkit's against mamba-ssm's.

``--gpu`` times :class:`ssmkit.layers.mamba.Mamba` (d_state 16, d_conv 4, expand 2, parameters in
the cell's dtype, the fused Triton path) at the five shapes of :data:`LAYER_SHAPES`: the forward
without grad and the forward+backward through ``torch.autograd.grad`` over the input and every
parameter, median of ``--reps`` CUDA-event runs, and the peak extra memory of one
forward+backward. With ``--vs mamba-ssm`` mamba-ssm's ``Mamba`` (its fast path: causal-conv1d and
the fused ``mamba_inner_fn``) is built with the same weights and timed in the same process on the
same inputs, the two interleaved round by round, after checking that the outputs and every
gradient agree. The peer is the installed ``mamba_ssm`` with ``causal_conv1d``, or the sources in
``--peer-dir`` (see :mod:`ssmkit.bench.scan_gpu`). ``--unfused`` adds ssmkit's step-by-step path
(``fused=False``) as a third variant.

``--cpu`` (the default) times the same layer on the CPU (its unfused path, the chunked scan) at
two small shapes, to check that the CPU path does not change.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from ssmkit.bench.measure import CLOCKS
from ssmkit.bench.table import Column, format_table
from ssmkit.registry import register_bench

# (B, L, d_model, dtype) of the GPU table: language-model blocks at L = 1024-4096, a short batch,
# and fp32.
LAYER_SHAPES: list[tuple[int, int, int, str]] = [(8, 2048, 1024, "bf16"), (16, 1024, 768, "bf16"),
                                                 (4, 4096, 2048, "bf16"), (2, 512, 768, "bf16"),
                                                 (8, 2048, 1024, "fp32")]
CPU_SHAPES: list[tuple[int, int, int]] = [(2, 256, 64), (1, 1024, 128)]
LAYER_KW = dict(d_state=16, d_conv=4, expand=2)

COLUMNS = [
    Column("B, L, d_model", "label", width=15), Column("dtype", "dtype", width=5),
    Column("variant", "variant", width=8),
    Column("fwd ms", "fwd_ms", ".3f", width=7), Column("x", "fwd_x", ".2f", width=5),
    Column("fwd+bwd ms", "fwdbwd_ms", ".3f", width=10), Column("x", "fwdbwd_x", ".2f", width=5),
    Column("peak MB", "peak_mb", ".0f", width=7), Column("err", "max_rel_err", ".1e", width=7),
]


def _rel(a: torch.Tensor, e: torch.Tensor) -> float:
    a, e = a.detach().float(), e.detach().float()
    if not bool(torch.isfinite(a).all()):
        return float("inf")
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-12))


def _layers(shape, device, peer, unfused: bool) -> dict:
    """{variant: module} with one set of weights: ssmkit's fused layer, optionally its unfused path
    and the peer's layer."""
    from ssmkit.bench.scan_gpu import DTYPES
    from ssmkit.layers.mamba import Mamba

    _, _, d_model, dname = shape
    kw = dict(LAYER_KW, device=device, dtype=DTYPES[dname])
    torch.manual_seed(0)
    ours = Mamba(d_model, **kw)
    out = {"ssmkit": ours}
    if unfused:
        plain = Mamba(d_model, fused=False, **kw)
        plain.load_state_dict(ours.state_dict())
        out["unfused"] = plain
    if peer is not None and peer.Mamba is not None:
        theirs = peer.Mamba(d_model, **kw)
        theirs.load_state_dict(ours.state_dict())
        out["mamba-ssm"] = theirs
    return out


def measure_shape(shape, device, peer, reps: int, device_only: bool, unfused: bool) -> list[dict]:
    """Check the variants against ssmkit's fused layer, then time them interleaved."""
    from ssmkit.bench.measure import median_ms, peak_bytes
    from ssmkit.bench.scan_gpu import DTYPES

    batch, L, d_model, dname = shape
    layers = _layers(shape, device, peer, unfused)
    x = torch.randn(batch, L, d_model, device=device, dtype=DTYPES[dname], requires_grad=True)
    gy = torch.randn(batch, L, d_model, device=device, dtype=DTYPES[dname])

    def fwd(m):
        return lambda: m(x)

    def both(m):
        leaves = [x, *m.parameters()]
        return lambda: torch.autograd.grad(m(x), leaves, gy)

    base = layers["ssmkit"]
    y0, g0 = base(x), both(base)()
    errs = {}
    for name, m in layers.items():
        if name != "ssmkit":
            y, g = m(x), both(m)()
            errs[name] = max([_rel(y, y0)] + [_rel(a, b) for a, b in zip(g, g0)])
    del y0, g0
    tol = 1e-3 if dname == "fp32" else 5e-2
    timed = {k: m for k, m in layers.items() if k == "ssmkit" or errs[k] < tol}
    with torch.no_grad():
        t_fwd = median_ms({k: fwd(m) for k, m in timed.items()}, device, reps=reps, warmup=2, device_only=device_only)
    t_both = median_ms({k: both(m) for k, m in timed.items()}, device, reps=reps, warmup=2, device_only=device_only)
    rows = []
    ref = "mamba-ssm" if "mamba-ssm" in timed else None
    for name, m in layers.items():
        row = dict(label=f"{batch}, {L}, {d_model}", dtype=dname, variant=name, max_rel_err=errs.get(name))
        if name in timed:
            f = both(m)
            f()
            peak = peak_bytes(f, device)
            row.update(fwd_ms=t_fwd[name], fwdbwd_ms=t_both[name], peak_mb=peak / 2**20 if peak is not None else None)
            if ref is not None and name != ref:
                row.update(fwd_x=t_fwd[ref] / t_fwd[name], fwdbwd_x=t_both[ref] / t_both[name])
        rows.append(row)
    layers.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def gpu_table(args) -> list[dict]:
    from ssmkit.bench.scan_gpu import load_peer

    if not torch.cuda.is_available():
        raise RuntimeError("ssmkit bench mamba-layer --gpu needs a CUDA device")
    device = torch.device("cuda")
    shapes = [LAYER_SHAPES[int(i)] for i in args.shapes.split(",") if i]
    if args.warm_only:
        for shape in shapes:
            for m in _layers(shape, device, None, args.unfused).values():
                x = torch.randn(shape[0], shape[1], shape[2], device=device, dtype=m.in_proj.weight.dtype,
                                requires_grad=True)
                with torch.no_grad():
                    m(x)
                m(x).sum().backward()
        torch.cuda.synchronize()
        print(f"# compiled {len(shapes)} shapes")
        return []
    import triton

    peer, how = load_peer(args.vs, args.peer_dir, layer=True)
    if peer is not None and peer.Mamba is None:
        how, peer = f"{how}; its Mamba layer needs causal-conv1d, which did not load", None
    print(f"# {torch.cuda.get_device_name(device)}; torch {torch.__version__}, triton {triton.__version__}; Mamba "
          f"d_state 16, d_conv 4, expand 2; " + ("device time only" if args.device_only else "isolated calls"))
    print(f"# peer: {how}" if peer is not None else f"# no peer was timed: {how}")
    print(format_table([], COLUMNS))
    rows = []
    for shape in shapes:
        for row in measure_shape(shape, device, peer, args.reps, args.device_only, args.unfused):
            rows.append(row)
            line = format_table([row], COLUMNS, header=False)
            if row.get("max_rel_err") is not None and "fwd_ms" not in row:
                line += "  DISAGREE: not timed"
            print(line, flush=True)
    print("x = mamba-ssm ms / variant ms (above 1: faster than mamba-ssm); peak MB = extra memory of one fwd+bwd; "
          "err = largest relative difference of the variant's output or gradients to ssmkit's fused layer")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(device=torch.cuda.get_device_name(device), torch=torch.__version__,
                           triton=triton.__version__, peer=how, rows=rows), fh, indent=1)
    return rows


def cpu_table(args) -> list[dict]:
    """ssmkit's Mamba on the CPU (the unfused path): forward and fwd+bwd, median of --reps."""
    now = CLOCKS[args.clock]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# Mamba on the CPU, float32, d_state 16, d_conv 4, expand 2; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {load:.1f}, {args.clock} clock, median of {args.reps}")
    cols = [Column("B, L, d_model", "label", width=15), Column("fwd ms", "fwd_ms", ".1f", width=8),
            Column("fwd+bwd ms", "fwdbwd_ms", ".1f", width=10)]
    print(format_table([], cols))
    from ssmkit.layers.mamba import Mamba

    rows = []
    for batch, L, d_model in CPU_SHAPES:
        torch.manual_seed(0)
        m = Mamba(d_model, **LAYER_KW)
        x = torch.randn(batch, L, d_model, requires_grad=True)
        leaves = [x, *m.parameters()]

        def timed(fn) -> float:
            fn()
            times = []
            for _ in range(args.reps):
                t0 = now()
                fn()
                times.append((now() - t0) * 1e3)
            return statistics.median(times)

        gy = torch.ones(batch, L, d_model)
        with torch.no_grad():
            f = timed(lambda m=m, x=x: m(x))
        b = timed(lambda m=m, x=x, leaves=leaves, gy=gy: torch.autograd.grad(m(x), leaves, gy))
        rows.append(dict(label=f"{batch}, {L}, {d_model}", fwd_ms=f, fwdbwd_ms=b))
        print(format_table(rows[-1:], cols, header=False), flush=True)
    return rows


@register_bench("mamba-layer")
def run(argv: list[str]) -> int:
    """The Mamba layer: ssmkit's on the CPU, or ssmkit's against mamba-ssm's on a GPU (--gpu --vs mamba-ssm)."""
    p = argparse.ArgumentParser(prog="ssmkit bench mamba-layer",
                                description="ssmkit's Mamba layer, beside mamba-ssm's Mamba (--gpu --vs mamba-ssm)")
    p.add_argument("--cpu", action="store_true", help="CPU table (the default when neither flag is given)")
    p.add_argument("--gpu", action="store_true", help="GPU table at the shapes of LAYER_SHAPES")
    p.add_argument("--vs", choices=("none", "mamba-ssm"), default="none",
                   help="GPU: time mamba-ssm's Mamba (with causal-conv1d) beside ssmkit's in the same run")
    p.add_argument("--peer-dir", default=None,
                   help="GPU: folder with mamba-ssm's build_and_load.py (default: $SSMKIT_PEER_DIR)")
    p.add_argument("--shapes", default=",".join(str(i) for i in range(len(LAYER_SHAPES))),
                   help="GPU: indices into LAYER_SHAPES (default: all)")
    p.add_argument("--unfused", action="store_true", help="GPU: also time ssmkit's step-by-step path (fused=False)")
    p.add_argument("--reps", type=int, default=None, help="timed runs per cell (median; default 10 GPU, 5 CPU)")
    p.add_argument("--device-only", action="store_true", help="GPU: time only the kernels, not the isolated call")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="CPU: wall (default) or cpu (process CPU time; use with OMP_NUM_THREADS=1)")
    p.add_argument("--warm-only", action="store_true", help="GPU: run each shape once to fill Triton's cache")
    p.add_argument("--json", default=None, help="GPU: also write the rows to this JSON file")
    args = p.parse_args(argv)
    args.reps = args.reps or (10 if args.gpu else 5)
    if args.reps < 1:
        p.error(f"--reps must be at least 1; got {args.reps}")
    start = time.perf_counter()
    if args.cpu or not args.gpu:
        cpu_table(args)
    if args.gpu:
        gpu_table(args)
    print(f"# {time.perf_counter() - start:.0f} s")
    return 0


__all__ = ["CPU_SHAPES", "LAYER_SHAPES", "cpu_table", "gpu_table", "measure_shape", "run"]
