"""One GPU run for the Triton selective scan: correctness at odd and full shapes, then timings.

    PYTHONPATH=core:apps python3 scripts/gpu_scan_check.py --out DIR [--skip-table] [--sweep]
        [--variants] [--skip-full] [--sweep-shapes 0,1,2] [--sweep-dtypes bf16,fp32]

1. Odd shapes (D not a power of two, G=2, L not a multiple of the chunk) against the reference in
   float64 on the GPU: outputs, final state and every gradient, for forward/reverse, packed
   sequences, float32/bfloat16/float64 inputs; once with every torch.empty in the kernel module
   poisoned with NaN to catch unwritten elements.
2. Full issue shapes: Triton against the chunked PyTorch path (float32 math) in float32 and bf16.
3. Optional: every backward variant of the sweep at one odd case (--variants), the tile and
   mode sweep (--sweep: the default and its variants side by side), then the issue's table
   (ssmkit.bench.scan_gpu.gpu_table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from ssmkit.bench.scan_gpu import ISSUE_SHAPES, cuda_time_ms, fwd_bwd_call, gpu_table, make_inputs, run_scan
from ssmkit.ops.selective_scan import selective_scan
from ssmkit.ops.selective_scan import triton_scan

def rel(a, e) -> float:
    a, e = a.detach().double(), e.detach().double()
    if torch.isnan(a).any():
        return float("nan")
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-12))


def odd_inputs(batch, dim, L, N, G, dtype, device, varlen, with_init):
    g = torch.Generator().manual_seed(1234 + L + N)
    r = lambda *s, sc=1.0, sh=0.0: (torch.randn(*s, generator=g) * sc + sh)
    if varlen:
        batch = 1
        cuts = sorted(torch.randint(0, L + 1, (3,), generator=g).tolist())
        cu = torch.tensor([0, *cuts, L], dtype=torch.int32, device=device)
        nseq = cu.numel() - 1
    else:
        cu, nseq = None, batch
    ins = dict(u=r(batch, dim, L), delta=r(batch, dim, L, sc=0.5, sh=-1.0), A=-torch.exp(r(dim, N) * 0.5),
               B=r(batch, G, N, L), C=r(batch, G, N, L), D=r(dim), z=r(batch, dim, L), delta_bias=r(dim, sc=0.1),
               initial_state=r(nseq, dim, N) if with_init else None)
    out = {}
    for k, v in ins.items():
        if v is None:
            out[k] = None
            continue
        keep32 = k in ("A", "D", "delta_bias", "initial_state") and dtype != torch.float64
        out[k] = v.to(device=device, dtype=torch.float32 if keep32 else dtype)
    return out, cu


def grads_of(ins, cu, backend, reverse, gy, gh):
    leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in ins.items()}
    y, hT = selective_scan(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves["D"],
                           z=leaves["z"], delta_bias=leaves["delta_bias"], initial_state=leaves["initial_state"],
                           return_final_state=True, reverse=reverse, cu_seqlens=cu, backend=backend)
    ((y.double() * gy).sum() + (hT.double() * gh).sum()).backward()
    return y, hT, {k: v.grad for k, v in leaves.items() if v is not None}


def check_odd(device, log, cases=None) -> bool:
    ok = True
    cases = cases or [
        # (batch, dim, L, N, G, dtype, varlen, reverse, init)
        (2, 48, 301, 16, 2, torch.float32, False, False, True),
        (2, 48, 301, 16, 2, torch.float32, False, True, True),
        (1, 40, 500, 16, 1, torch.float32, True, False, True),
        (1, 40, 500, 16, 2, torch.float32, True, True, False),
        (3, 24, 77, 64, 3, torch.float32, False, False, True),
        (2, 48, 301, 16, 2, torch.bfloat16, False, False, True),
        (1, 40, 500, 64, 2, torch.bfloat16, True, True, True),
        (2, 12, 130, 4, 2, torch.float64, False, True, True),
        (2, 6, 1, 16, 3, torch.float32, False, False, True),
    ]
    for batch, dim, L, N, G, dtype, varlen, reverse, init in cases:
        ins, cu = odd_inputs(batch, dim, L, N, G, dtype, device, varlen, init)
        ref_ins = {k: (v.double() if v is not None else None) for k, v in ins.items()}
        gy = torch.randn(ins["u"].shape, device=device, dtype=torch.float64)
        nseq = cu.numel() - 1 if cu is not None else ins["u"].shape[0]
        gh = torch.randn(nseq, dim, N, device=device, dtype=torch.float64)
        y, hT, g = grads_of(ins, cu, "triton", reverse, gy, gh)
        yr, hr, gr = grads_of(ref_ins, cu, "reference", reverse, gy, gh)
        errs = {"y": rel(y, yr), "hT": rel(hT, hr)}
        errs.update({"d" + k: rel(g[k], gr[k]) for k in g})
        tol = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float64: 1e-10}[dtype]
        worst = max(errs.values(), key=lambda v: float("inf") if v != v else v)
        good = worst == worst and worst < tol and y.dtype == ins["u"].dtype and hT.dtype == (
            torch.float64 if dtype == torch.float64 else torch.float32)
        ok &= good
        log(f"odd B={batch} D={dim} L={L} N={N} G={G} {str(dtype)[6:]} varlen={varlen} rev={reverse} "
            f"init={init}: worst {worst:.2e} (tol {tol:g}) {'OK' if good else 'FAIL ' + json.dumps(errs)}")
    return ok


def check_poison(device, log, L: int = 333) -> bool:
    real_empty, real_like = triton_scan._empty, triton_scan._empty_like

    def nan_empty(*a, **k):
        t = real_empty(*a, **k)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    def nan_like(*a, **k):
        t = real_like(*a, **k)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    ins, cu = odd_inputs(1, 40, L, 16, 2, torch.float32, device, True, True)
    gy = torch.randn(ins["u"].shape, device=device, dtype=torch.float64)
    gh = torch.randn(cu.numel() - 1, 40, 16, device=device, dtype=torch.float64)
    base = grads_of(ins, cu, "triton", False, gy, gh)
    triton_scan._empty, triton_scan._empty_like = nan_empty, nan_like
    try:
        poisoned = grads_of(ins, cu, "triton", False, gy, gh)
    finally:
        triton_scan._empty, triton_scan._empty_like = real_empty, real_like
    finite = all(bool(torch.isfinite(t).all()) for t in [poisoned[0], poisoned[1], *poisoned[2].values()])
    same = rel(poisoned[0], base[0]) == 0 and all(rel(poisoned[2][k], base[2][k]) < 1e-6 for k in base[2])
    log(f"NaN-poisoned buffers: all finite={finite}, same as unpoisoned={same}")
    return finite and same


def check_full(device, log) -> bool:
    ok = True
    for shape in ISSUE_SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            ins = make_inputs(shape, dtype, device, requires_grad=True, seed=7)
            gy = torch.randn(shape[0], shape[1], shape[2], device=device, dtype=dtype)
            y = run_scan(ins, "triton")
            y.backward(gy)
            got = {"y": y.detach()} | {k: v.grad for k, v in ins.items()}
            for v in ins.values():
                v.grad = None
            # The chunked path in float32 on the same (possibly bf16-rounded) inputs.
            ins32 = {k: v.detach().float().requires_grad_(True) for k, v in ins.items()}
            y32 = run_scan(ins32, "chunked")
            y32.backward(gy.float())
            want = {"y": y32.detach()} | {k: v.grad for k, v in ins32.items()}
            errs = {k: rel(got[k], want[k]) for k in got}
            tol = 1e-4 if dtype == torch.float32 else 1e-2
            worst = max(errs.values())
            good = worst < tol
            ok &= good
            log(f"full {shape} {str(dtype)[6:]}: worst {worst:.2e} (tol {tol:g}) "
                f"{'OK' if good else 'FAIL'} {json.dumps({k: float(f'{v:.2e}') for k, v in errs.items()})}")
            del ins, ins32, got, want, y, y32
            torch.cuda.empty_cache()
    return ok


# Variants timed side by side by --sweep, the default first. v4 history (docs/benchmarks.md): the
# v3 backward (shifted-decay adjoint, 3 exp2) and per-block dB/dC partial sums lost to the
# shipped q adjoint with atomics; pf 0 is the v3-style loop without register prefetch.
# v5: the backward split into parts (parts=0: automatic count, 8: fixed) and a register cap so that
# more one-warp programs fit on an SM.
BWD_VARIANTS = [dict(), dict(regs_bwd=168), dict(T_bwd=8), dict(T_bwd=8, regs_bwd=168), dict(spw_bwd=256),
                dict(T_bwd=2), dict(pf=0), dict(regs_bwd=192)]
FWD_VARIANTS = [dict()]


def _cfg_name(cfg: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in cfg.items()) or "default"


def sweep(device, log, shapes=(0, 1, 2), dtypes=("bf16", "fp32")) -> None:
    """Time forward and forward+backward variants (triton_scan.set_tile_config) side by side."""
    from ssmkit.bench.scan_gpu import DTYPES

    for si in shapes:
        shape = ISSUE_SHAPES[si]
        for dname in dtypes:
            dtype = DTYPES[dname]
            ins = make_inputs(shape, dtype, device)
            for cfg in FWD_VARIANTS:
                triton_scan.set_tile_config(**cfg)
                with torch.no_grad():
                    ms = cuda_time_ms(lambda: run_scan(ins, "triton"), reps=10)
                log(f"sweep fwd {shape} {dname} {_cfg_name(cfg)}: {ms:.3f} ms")
                triton_scan.set_tile_config()
            insg = make_inputs(shape, dtype, device, requires_grad=True)
            gy = torch.randn(shape[0], shape[1], shape[2], device=device, dtype=dtype)
            for cfg in BWD_VARIANTS:
                triton_scan.set_tile_config(**cfg)
                try:
                    ms = cuda_time_ms(fwd_bwd_call(insg, "triton", gy), reps=10)
                    log(f"sweep fwd+bwd {shape} {dname} {_cfg_name(cfg)}: {ms:.3f} ms")
                except torch.cuda.OutOfMemoryError:
                    log(f"sweep fwd+bwd {shape} {dname} {_cfg_name(cfg)}: out of memory")
                triton_scan.set_tile_config()
                torch.cuda.empty_cache()
            del ins, insg
            torch.cuda.empty_cache()


def check_variants(device, log) -> bool:
    """Every backward variant of the sweep against the reference at one odd case (packed, reversed)."""
    ok = True
    for cfg in BWD_VARIANTS:
        triton_scan.set_tile_config(**cfg)
        log(f"variant {_cfg_name(cfg)}:")
        ok &= check_odd(device, log, cases=[(1, 40, 500, 16, 2, torch.float32, True, True, True)])
        triton_scan.set_tile_config()
    return ok


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--skip-table", action="store_true")
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--sweep-shapes", default="0,1,2", help="issue shape indices for the sweep")
    p.add_argument("--sweep-dtypes", default="bf16,fp32")
    p.add_argument("--sweep-first", action="store_true", help="run the sweep before the correctness checks")
    p.add_argument("--variants", action="store_true", help="check every backward variant for correctness")
    p.add_argument("--skip-full", action="store_true", help="skip the full-shape check against chunked")
    p.add_argument("--skip-odd", action="store_true", help="skip the odd-shape and poisoned-buffer checks")
    p.add_argument("--table-args", default="", help="extra flags for gpu_table, space-separated")
    p.add_argument("--bwd-variants", default="",
                   help='knob sets for the sweep and --variants, a JSON list such as \'[{}, {"lane_rs": 0}]\'')
    p.add_argument("--fwd-variants", default="", help="knob sets for the forward sweep, JSON like --bwd-variants")
    args = p.parse_args()
    if args.fwd_variants:
        FWD_VARIANTS[:] = json.loads(args.fwd_variants)
    if args.bwd_variants:
        BWD_VARIANTS[:] = json.loads(args.bwd_variants)
    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "gpu_scan_check.log"), "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    import triton

    device = torch.device("cuda")
    log(f"{torch.cuda.get_device_name(device)} torch {torch.__version__} triton {triton.__version__}")
    t0 = time.time()
    sweep_args = dict(shapes=[int(i) for i in args.sweep_shapes.split(",") if i],
                      dtypes=[d for d in args.sweep_dtypes.split(",") if d])
    if args.sweep and args.sweep_first:
        sweep(device, log, **sweep_args)
    ok = True
    if not args.skip_odd:
        ok &= check_odd(device, log)
        ok &= check_poison(device, log)
    if args.variants:
        ok &= check_variants(device, log)
    if not args.skip_full:
        ok &= check_full(device, log)
    log(f"correctness {'PASSED' if ok else 'FAILED'} in {time.time() - t0:.0f} s")
    for shape in ISSUE_SHAPES:
        saved = triton_scan.forward_saved_bytes(*shape)
        u_bytes = shape[0] * shape[1] * shape[2] * 2
        log(f"forward saves {saved / 2**20:.1f} MiB for {shape} ({saved / u_bytes:.2f}x the bf16 u tensor)")
    if args.sweep and not args.sweep_first:
        sweep(device, log, **sweep_args)
    if not args.skip_table:
        rows = gpu_table(["--json", os.path.join(args.out, "table.json"), *args.table_args.split()])
        for r in rows:
            log(json.dumps(r))
    log(f"total {time.time() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
