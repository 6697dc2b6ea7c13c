"""Fast paths against their references for the ops under the gated blocks: GLA (chunked vs the
recurrence, and ours vs raw fla-core on a GPU) and Mega's EMA (FFT vs the recurrence).

``ssmkit bench blocks`` prints these rows after the blocks (``--no-blocks`` for these alone).
Every helper returns a list of dicts ``{name, shape, ms_fast, ms_ref, ratio}`` with
``ratio = ms_ref / ms_fast``: for the fast-vs-reference comparisons it is the speed-up of the
fast form; for the fla overhead rows ``ms_fast`` is the raw fla-core call and ``ms_ref`` ours, so
the ratio is our cost relative to raw fla (the target is <= 1.10).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ssmkit.bench.measure import median_ms
from ssmkit.bench.table import Column, format_table
from ssmkit.ops.ema import ema
from ssmkit.ops.gla import fla_status, gla

COLUMNS = [Column("comparison", "name"), Column("shape", "shape"), Column("ms_fast", "ms_fast", ".3f"),
           Column("ms_ref", "ms_ref", ".3f"), Column("ratio", "ratio", ".2f")]


def _row(name: str, shape: str, ms_fast: float, ms_ref: float) -> dict:
    return {"name": name, "shape": shape, "ms_fast": round(ms_fast, 3), "ms_ref": round(ms_ref, 3),
            "ratio": round(ms_ref / ms_fast, 3) if ms_fast > 0 else float("inf")}


def _fwd_bwd(fn: Callable[[], torch.Tensor | tuple], leaves: list[torch.Tensor], backward: bool):
    def run():
        out = fn()
        o = out[0] if isinstance(out, tuple) else out
        if backward:
            torch.autograd.grad(o.float().sum(), leaves)
    return run


def _gla_inputs(B, H, T, K, V, dtype, device, head_first=True, grad=False):
    shape_k = (B, H, T, K) if head_first else (B, T, H, K)
    shape_v = (B, H, T, V) if head_first else (B, T, H, V)
    q = torch.randn(shape_k, device=device, dtype=dtype)
    k = torch.randn(shape_k, device=device, dtype=dtype)
    v = torch.randn(shape_v, device=device, dtype=dtype)
    gk = F.logsigmoid(torch.randn(shape_k, device=device, dtype=torch.float32)) / 16
    return [t.requires_grad_(grad) for t in (q, k, v, gk)]


def gla_vs_recurrent(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     shapes: list[tuple[int, int, int, int, int]] | None = None,
                     backward: bool = False, iters: int = 3) -> list[dict]:
    """GLA chunked form vs the recurrent reference, per (B, H, T, K, V) shape.

    The default shape is what the GLA layer runs at the blocks bench's standard size (B=8,
    L=1024, d=256 with 4 heads: K = 32, V = 64).
    """
    device = torch.device(device)
    shapes = shapes or [(8, 4, 1024, 32, 64)]
    rows = []
    for B, H, T, K, V in shapes:
        ins = _gla_inputs(B, H, T, K, V, dtype, device, grad=backward)
        fast = _fwd_bwd(lambda ins=ins: gla(*ins, backend="chunked"), ins, backward)
        ref = _fwd_bwd(lambda ins=ins: gla(*ins, backend="reference"), ins, backward)
        tag = "fwd+bwd" if backward else "fwd"
        rows.append(_row(f"gla chunked vs recurrent ({tag}, {device.type}, {str(dtype)[6:]})",
                         f"B={B} H={H} T={T} K={K} V={V}",
                         median_ms(fast, device, reps=iters), median_ms(ref, device, reps=iters)))
    return rows


def ema_fft_vs_recurrence(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                          shapes: list[tuple[int, int, int, int]] | None = None,
                          backward: bool = False, iters: int = 3) -> list[dict]:
    """Mega's EMA: FFT convolution vs the recurrence, per (B, D, N, L) shape (default B=8,
    D=256, N=16, L=1024)."""
    device = torch.device(device)
    shapes = shapes or [(8, 256, 16, 1024)]
    rows = []
    for B, D, N, L in shapes:
        x = torch.randn(B, D, L, device=device, dtype=dtype, requires_grad=backward)
        params = [torch.sigmoid(torch.randn(D, N, device=device)), torch.sigmoid(torch.randn(D, N, device=device)),
                  torch.randn(D, N, device=device), torch.randn(D, N, device=device)]
        params = [p.requires_grad_(backward) for p in params]
        leaves = [x, *params]
        fast = _fwd_bwd(lambda x=x, params=params: ema(x, *params, backend="fft"), leaves, backward)
        ref = _fwd_bwd(lambda x=x, params=params: ema(x, *params, backend="reference"), leaves, backward)
        tag = "fwd+bwd" if backward else "fwd"
        rows.append(_row(f"ema fft vs recurrence ({tag}, {device.type}, {str(dtype)[6:]})",
                         f"B={B} D={D} N={N} L={L}",
                         median_ms(fast, device, reps=iters), median_ms(ref, device, reps=iters)))
    return rows


def gla_fla_overhead(B: int = 8, T: int = 4096, H: int = 16, K: int = 128, V: int = 128,
                     dtype: torch.dtype = torch.bfloat16, iters: int = 20) -> list[dict]:
    """On CUDA with fla-core: our GLA op and layer against the raw ``fla.ops.gla.chunk_gla`` call.

    Rows: (1) ``ssmkit.ops.gla.gla(..., head_first=False, backend="fla")`` vs raw chunk_gla, fwd
    and fwd+bwd, on identical [B, T, H, K] tensors (the layer's own call path: validation,
    dispatch, no layout copies); (2) the whole GLA layer (d_model = 2 * H * K, so H heads of
    K = V = 128; projections, gates, norm and output gate included) vs the raw call, as context
    for where the time goes. Raises RuntimeError when CUDA or fla-core is missing.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("gla_fla_overhead needs a CUDA device")
    ok, why = fla_status()
    if not ok:
        raise RuntimeError(f"gla_fla_overhead needs fla-core: {why}")
    from fla.ops.gla import chunk_gla

    from ssmkit.layers.gla import GLA

    dev = torch.device("cuda")
    shape = f"B={B} T={T} H={H} K={K} V={V} {str(dtype)[6:]}"
    rows = []
    for backward in (False, True):
        ins = _gla_inputs(B, H, T, K, V, dtype, dev, head_first=False, grad=backward)
        raw = _fwd_bwd(lambda ins=ins: chunk_gla(*ins, scale=K ** -0.5), ins, backward)
        ours = _fwd_bwd(lambda ins=ins: gla(*ins, scale=K ** -0.5, head_first=False, backend="fla"), ins, backward)
        tag = "fwd+bwd" if backward else "fwd"
        rows.append(_row(f"gla op ssmkit(fla) / raw chunk_gla ({tag})", shape,
                         median_ms(raw, dev, reps=iters, warmup=3), median_ms(ours, dev, reps=iters, warmup=3)))
        layer = GLA(d_model=2 * H * K, num_heads=H, expand_k=0.5, expand_v=V * H / (2 * H * K),
                    backend="fla").to(dev, dtype)
        x = torch.randn(B, T, 2 * H * K, device=dev, dtype=dtype, requires_grad=backward)
        lay = _fwd_bwd(lambda layer=layer, x=x: layer(x), [x, *layer.parameters()] if backward else [x], backward)
        rows.append(_row(f"GLA layer d={2 * H * K} (with projections) / raw chunk_gla ({tag})", shape,
                         median_ms(raw, dev, reps=iters, warmup=3), median_ms(lay, dev, reps=iters, warmup=3)))
        del layer, x, ins
        torch.cuda.empty_cache()
    return rows


def format_rows(rows: list[dict]) -> str:
    """The comparisons as a plain-text table."""
    return format_table(rows, COLUMNS)


__all__ = ["ema_fft_vs_recurrence", "format_rows", "gla_fla_overhead", "gla_vs_recurrent"]
