"""``ssmkit bench scan2d``: the SS2D multi-path scan core, fused vs "materialise K copies".

Two pipelines compute the same [B, Di, H, W] -> [B, Di, H, W] map, K paths of one strategy:

- ``materialized``: VMamba's pipeline: ``strategy.scan`` writes K permuted copies, one 1-D
  selective-scan call over K*Di channels (G=K groups, no z), then ``strategy.merge`` permutes
  the K outputs back and sums them.
- ``fused``: :func:`ssmkit.ops.path_scan.fused_path_scan` on the raster-order map.
- ``fused_cl`` (op level): the same on the map stored channels-last, the layout SS2D's in-proj
  produces; on CUDA the kernels then read each step's channels as one contiguous run, whatever
  the path's order.
- ``batched`` (op level): fused_path_scan's batched path (one gather, one 1-D scan, exact merge).

``--level layer`` times :meth:`SS2D.core` instead (the per-path x_proj/dt_proj included; the
fused core projects in raster order and gathers only the R + 2N projected channels).

Forward is timed under ``no_grad``; fwd+bwd backpropagates an output gradient of ones into the
map and every scan input. Peak memory is the extra memory over what was live before the call
(:func:`ssmkit.bench.measure.peak_bytes`). On the GPU at the default sizes the table is followed
by the quoted times of VMamba's pipeline on mamba-ssm 2.3.2's CUDA scan on an H100 80GB, for
reference (not rerun here).
"""

from __future__ import annotations

import argparse
import json

import torch

from ssmkit.bench.measure import median_ms, mmap_threshold, peak_bytes
from ssmkit.bench.table import Column, format_table
from ssmkit.registry import register_bench

# VMamba's pipeline (K copies, mamba-ssm 2.3.2's CUDA scan, merge) on an H100 80GB, bf16, B=8,
# d_inner=384, N=16, cross: quoted times, not rerun here. {size: (fwd ms, fwd+bwd ms, peak GB)}.
VMAMBA_H100 = {
    64: (1.31, 6.18, 0.85),
    128: (5.68, 24.2, 3.40),
}


def peak_mb(fn, device: torch.device) -> float:
    """Extra memory (MB) at the peak of ``fn()`` over what was live just before it (NaN: unknown)."""
    peak = peak_bytes(fn, device)
    return float("nan") if peak is None else peak / 2**20


# -------------------------------------------------------------------------------- variants
def make_case(batch: int, d_model: int, d_state: int, size: int, strategy: str, dtype, device, seed: int = 0):
    """An SS2D layer plus its core's inputs at one size: the conv output and the scan inputs."""
    from ssmkit.layers.ss2d import SS2D

    torch.manual_seed(seed)
    layer = SS2D(d_model=d_model, d_state=d_state, strategy=strategy, device=device).to(dtype)
    Di, K, L = layer.d_inner, layer.num_paths, size * size
    x = torch.randn(batch, Di, size, size, device=device, dtype=dtype)
    scan_in = {
        "delta": (0.5 * torch.randn(batch, K * Di, L, device=device) - 2.0).to(dtype),
        "A": -torch.exp(layer.A_log.detach().float()),
        "B": torch.randn(batch, K, d_state, L, device=device, dtype=dtype),
        "C": torch.randn(batch, K, d_state, L, device=device, dtype=dtype),
        "D": layer.D.detach().float().clone(),
        "delta_bias": layer.dt_proj_bias.detach().float().reshape(-1).repeat(K // layer.dt_proj_bias.shape[0]),
        # the same map stored channels-last, as SS2D's in-proj makes it ([B, *S, Di] storage)
        "x_cl": x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d),
    }
    return layer, x, scan_in


def op_materialized(layer, x, s):
    """VMamba: K copies -> one scan over K*Di channels -> merge."""
    from ssmkit.ops.selective_scan import selective_scan

    batch, Di, *shape = x.shape
    xs = layer.strategy.scan(x)
    K, L = xs.shape[1], xs.shape[-1]
    y = selective_scan(xs.view(batch, K * Di, L), s["delta"], s["A"], s["B"], s["C"], D=s["D"],
                       delta_bias=s["delta_bias"], backend=layer.backend)
    return layer.strategy.merge(y.view(batch, K, Di, L), tuple(shape))


def _path_scan(layer, x, s, backend):
    from ssmkit.ops.path_scan import fused_path_scan

    batch, Di, *shape = x.shape
    shape = tuple(shape)
    y = fused_path_scan(x.reshape(batch, Di, -1), s["delta"], s["A"], s["B"], s["C"],
                        layer.strategy.index(shape, x.device), D=s["D"], delta_bias=s["delta_bias"],
                        path_inverse=layer.strategy.inverse(shape, x.device), backend=backend)
    return y.view(batch, Di, *shape)


def op_fused(layer, x, s):
    """fused_path_scan on the raster-order map; on CUDA the Triton scan's path_index mode."""
    return _path_scan(layer, x, s, "triton" if x.is_cuda and layer.backend == "auto" else layer.backend)


def op_fused_cl(layer, x, s):
    """op_fused on the channels-last copy of the map: the kernels gather whole runs of channels."""
    return op_fused(layer, s["x_cl"], s)


def op_batched(layer, x, s):
    """fused_path_scan's batched path (one gather, one 1-D scan, exact merge): "auto"'s choice."""
    return _path_scan(layer, x, s, layer.backend)


VARIANTS = {
    "op": {"materialized": op_materialized, "fused": op_fused, "fused_cl": op_fused_cl, "batched": op_batched},
    "layer": {"materialized": lambda layer, x, s: layer.core(x, impl="materialized"),
              "fused": lambda layer, x, s: layer.core(x, impl="fused"),
              "fused_cl": lambda layer, x, s: layer.core(s["x_cl"], impl="fused")},
}


def _closures(fn, layer, x, s, level: str):
    def fwd():
        with torch.no_grad():
            return fn(layer, x, s)

    grads_of = [x, s["x_cl"]] + ([s["delta"], s["B"], s["C"]] if level == "op" else list(layer.parameters()))

    def fwd_bwd():
        for t in grads_of:
            t.grad = None
        out = fn(layer, x, s)
        out.backward(torch.ones_like(out))

    return fwd, fwd_bwd


def bench_size(args, size: int, device: torch.device, dtype) -> list[dict]:
    layer, x, s = make_case(args.batch, args.d_model, args.d_state, size, args.strategy, dtype, device)
    layer.backend = args.backend
    rows = []
    for mode in args.modes:
        if mode == "fwdbwd":
            x.requires_grad_(True)
            s["x_cl"].requires_grad_(True)
            if args.level == "op":
                for k in ("delta", "B", "C"):
                    s[k].requires_grad_(True)
        row = {"size": size, "mode": mode, "batch": args.batch, "d_inner": layer.d_inner, "K": layer.num_paths,
               "d_state": args.d_state, "dtype": str(dtype).replace("torch.", ""), "level": args.level,
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
        calls = {}
        for name, fn in VARIANTS[args.level].items():
            fwd, fwd_bwd = _closures(fn, layer, x, s, args.level)
            calls[name] = fwd if mode == "fwd" else fwd_bwd
        for name, ms in median_ms(calls, device, args.reps, device_only=args.device_only).items():
            row[f"{name}_ms"] = ms
        for name, call in calls.items():
            row[f"{name}_peak_mb"] = peak_mb(call, device)
        rows.append(row)
        x.grad = None
    with torch.no_grad():  # the two pipelines must agree, or the timing means nothing
        b = op_materialized(layer, x, s) if args.level == "op" else layer.core(x, impl="materialized")
        outs = [VARIANTS[args.level][v](layer, x, s) for v in ("fused", "fused_cl")]
        err = max(float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)) for a in outs)
    for row in rows:
        row["rel_err"] = err
    return rows


def print_table(rows: list[dict]) -> None:
    """Times, speed-ups over the materialised pipeline, peak memory and the pipelines' agreement."""
    def speedup(name):
        return lambda r: r["materialized_ms"] / r[f"{name}_ms"] if r.get(f"{name}_ms") else None

    cols = [Column("size", lambda r: f"{r['size']}x{r['size']}"), Column("mode", "mode"),
            Column("materialized ms", "materialized_ms", ".2f"), Column("fused ms", "fused_ms", ".2f"),
            Column("speedup", speedup("fused"), ".2f")]
    if any("fused_cl_ms" in r for r in rows):
        cols += [Column("fused CL ms", "fused_cl_ms", ".2f"), Column("speedup", speedup("fused_cl"), ".2f")]
    if any("batched_ms" in r for r in rows):
        cols += [Column("batched ms", "batched_ms", ".2f")]
    cols += [Column("mat. peak MB", "materialized_peak_mb", ".1f"), Column("fused peak MB", "fused_peak_mb", ".1f"),
             Column("rel err", "rel_err", ".1e")]
    print(format_table(rows, cols))


@register_bench("scan2d")
def run(argv: list[str]) -> int:
    """SS2D core: materialised K copies vs fused path scan vs batched path; time and peak memory."""
    p = argparse.ArgumentParser(prog="ssmkit bench scan2d", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--cpu", action="store_true", help="run on the CPU (default when no CUDA device)")
    where.add_argument("--gpu", action="store_true", help="run on the CUDA device")
    p.add_argument("--quick", action="store_true",
                   help="small shapes that finish in minutes on 2 CPU cores (B=2, d_model=48, 32x32 and 64x64)")
    p.add_argument("--sizes", type=str, default=None, help="comma-separated H=W sizes (default 64,128)")
    p.add_argument("--batch", type=int, default=None, help="B (default 8)")
    p.add_argument("--d-model", type=int, default=None, help="d_model; d_inner = 2 * d_model (default 192)")
    p.add_argument("--d-state", type=int, default=16, help="N (default 16)")
    p.add_argument("--strategy", default="cross", help="a registered scan strategy (default cross, K=4)")
    p.add_argument("--level", choices=["op", "layer"], default="op",
                   help="op: copies + scan + merge (the scope of VMamba's quoted times); layer: SS2D.core with "
                        "projections")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default bf16 on GPU, fp32 on CPU")
    p.add_argument("--modes", default="fwd,fwdbwd", help="comma-separated: fwd, fwdbwd")
    p.add_argument("--backend", default="auto", help="selective-scan backend of both pipelines")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 10 GPU, 3 CPU)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--device-only", action="store_true",
                   help="GPU: time only the kernels (host work hidden behind a spin kernel), not the isolated call")
    args = p.parse_args(argv)

    use_gpu = args.gpu or (not args.cpu and torch.cuda.is_available())
    if use_gpu and not torch.cuda.is_available():
        p.error("--gpu needs a CUDA device; none is visible (use --cpu)")
    device = torch.device("cuda" if use_gpu else "cpu")
    quick = args.quick
    args.batch = args.batch or (2 if quick else 8)
    args.d_model = args.d_model or (48 if quick else 192)
    sizes = [int(v) for v in (args.sizes or ("32,64" if quick else "64,128")).split(",") if v]
    args.modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in args.modes if m not in ("fwd", "fwdbwd")]
    if bad:
        p.error(f"--modes accepts fwd and fwdbwd; got {bad}")
    args.reps = args.reps or (10 if use_gpu else 3)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("bf16" if use_gpu else "fp32")]
    if not use_gpu:
        mmap_threshold(32 << 20)

    where = f"cuda: {torch.cuda.get_device_name()}" if use_gpu else f"cpu ({torch.get_num_threads()} threads)"
    print(f"ssmkit bench scan2d: {args.level} level, strategy={args.strategy}, B={args.batch}, "
          f"d_inner={2 * args.d_model}, N={args.d_state}, {str(dtype).replace('torch.', '')}, device={where}, "
          f"median of {args.reps}" + (", device time only" if args.device_only else ""))
    rows = []
    for size in sizes:
        rows.extend(bench_size(args, size, device, dtype))
    print_table(rows)
    if use_gpu and args.level == "op" and args.batch == 8 and args.d_model == 192 and args.d_state == 16:
        print("\nVMamba's pipeline on mamba-ssm 2.3.2's CUDA scan, H100 bf16 (quoted, not rerun):")
        for r in rows:
            ref = VMAMBA_H100.get(r["size"])
            if ref:
                ms = ref[0] if r["mode"] == "fwd" else ref[1]
                print(f"  {r['size']}x{r['size']} {r['mode']}: VMamba {ms:.2f} ms, fused {r['fused_ms']:.2f} ms "
                      f"({ms / r['fused_ms']:.2f}x), fused CL {r['fused_cl_ms']:.2f} ms "
                      f"({ms / r['fused_cl_ms']:.2f}x); VMamba peak {ref[2]:.2f} GB, "
                      f"fused {r['fused_peak_mb'] / 1024:.2f} GB, fused CL {r['fused_cl_peak_mb'] / 1024:.2f} GB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0
