"""Triton depthwise causal conv1d (+ SiLU), forward and backward, for CUDA and TRITON_INTERPRET=1.

Layout: x, y and their gradients are [B, D, L] with the time axis contiguous and any (batch,
channel) strides, so a channel slice of a Mamba layer's [2*D, B*L] in_proj output is read in
place and gradients are written straight into the slices of one [2*D, B*L] buffer. weight is
[D, K] (taps contiguous), bias [D].

Each program owns a [BD, BL] tile (BD channels, BL steps of one batch row) with the lanes along
time, so every load is a contiguous run; the K taps are K shifted loads of the same rows, which
L1 serves. The forward reads x once and writes y once. The backward needs d(pre-activation) at
the K positions each x[t] feeds (t .. t+K-1 for the causal conv); a register tile cannot be
shifted, so it recomputes the pre-activation at each shift from x (K*K loads of the tile, all
from L1) rather than writing it to memory: HBM traffic stays one read of x and dy and one write
of dx. Weight and bias gradients are reduced over the tile's steps in registers and written as
one [BD, K + 1] partial per program, summed on the host by one call.

Math in float32 (float64 for float64 inputs); outputs in the input dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Buffers the kernels fill are allocated through this name, so a test can swap in NaN-filled ones.
_empty = torch.empty


@triton.jit
def _preact(xrow, w_ptr, b_ptr, d, d_ok, t, L, SWD, COMPUTE: tl.constexpr, K: tl.constexpr,
            HAS_BIAS: tl.constexpr, REVERSE: tl.constexpr):
    # Pre-activation [BD, BT] at steps t (anywhere; inputs outside [0, L) read as zeros): bias +
    # sum_k w[k] * x[t -+ (K-1-k)]. xrow: [BD, 1] row pointers of the program's channels.
    acc = tl.zeros([d.shape[0], t.shape[0]], dtype=COMPUTE)
    if HAS_BIAS:
        acc += tl.load(b_ptr + d, mask=d_ok, other=0.0).to(COMPUTE)[:, None]
    for k in tl.static_range(K):
        if REVERSE:
            src = t + (K - 1 - k)
        else:
            src = t - (K - 1 - k)
        ok = (src >= 0) & (src < L)
        xv = tl.load(xrow + src[None, :], mask=d_ok[:, None] & ok[None, :], other=0.0).to(COMPUTE)
        wk = tl.load(w_ptr + d * SWD + k, mask=d_ok, other=0.0).to(COMPUTE)
        acc += wk[:, None] * xv
    return acc


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, D, L, SXB, SXD, SYB, SYD, SWD,
                     COMPUTE: tl.constexpr, K: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr, REVERSE: tl.constexpr):
    pid_l = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    d = pid_d * BD + tl.arange(0, BD)
    t = pid_l * BL + tl.arange(0, BL)
    d_ok = d < D
    xrow = x_ptr + pid_b * SXB + d.to(tl.int64)[:, None] * SXD
    pre = _preact(xrow, w_ptr, b_ptr, d, d_ok, t, L, SWD, COMPUTE, K, HAS_BIAS, REVERSE)
    y = pre
    if SILU:
        y = pre * tl.sigmoid(pre)
    yrow = y_ptr + pid_b * SYB + d.to(tl.int64)[:, None] * SYD
    tl.store(yrow + t[None, :], y.to(y_ptr.dtype.element_ty), mask=d_ok[:, None] & (t < L)[None, :])


@triton.jit
def _dpre(xrow, gyrow, w_ptr, b_ptr, d, d_ok, p, L, SWD, COMPUTE: tl.constexpr, K: tl.constexpr,
          HAS_BIAS: tl.constexpr, SILU: tl.constexpr, REVERSE: tl.constexpr):
    # d(loss)/d(pre-activation) at steps p, 0 outside [0, L).
    p_ok = (p >= 0) & (p < L)
    g = tl.load(gyrow + p[None, :], mask=d_ok[:, None] & p_ok[None, :], other=0.0).to(COMPUTE)
    if SILU:
        pre = _preact(xrow, w_ptr, b_ptr, d, d_ok, p, L, SWD, COMPUTE, K, HAS_BIAS, REVERSE)
        s = tl.sigmoid(pre)
        g = g * s * (1.0 + pre * (1.0 - s))
    return g


@triton.jit
def _conv_bwd_kernel(x_ptr, w_ptr, b_ptr, gy_ptr, dx_ptr, part_ptr, D, L, NPL, SXB, SXD, SGB, SGD, SDB, SDD, SWD,
                     COMPUTE: tl.constexpr, K: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr, REVERSE: tl.constexpr):
    pid_l = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    d = pid_d * BD + tl.arange(0, BD)
    t = pid_l * BL + tl.arange(0, BL)
    d_ok = d < D
    t_ok = t < L
    d64 = d.to(tl.int64)[:, None]
    xrow = x_ptr + pid_b * SXB + d64 * SXD
    gyrow = gy_ptr + pid_b * SGB + d64 * SGD
    # x[t] feeds the outputs at t + j (t - j when reversed) through tap K-1-j.
    g0 = _dpre(xrow, gyrow, w_ptr, b_ptr, d, d_ok, t, L, SWD, COMPUTE, K, HAS_BIAS, SILU, REVERSE)
    dx = tl.load(w_ptr + d * SWD + (K - 1), mask=d_ok, other=0.0).to(COMPUTE)[:, None] * g0
    for j in tl.static_range(1, K):
        if REVERSE:
            p = t - j
        else:
            p = t + j
        g = _dpre(xrow, gyrow, w_ptr, b_ptr, d, d_ok, p, L, SWD, COMPUTE, K, HAS_BIAS, SILU, REVERSE)
        dx += tl.load(w_ptr + d * SWD + (K - 1 - j), mask=d_ok, other=0.0).to(COMPUTE)[:, None] * g
    tl.store(dx_ptr + pid_b * SDB + d64 * SDD + t[None, :], dx.to(dx_ptr.dtype.element_ty),
             mask=d_ok[:, None] & t_ok[None, :])
    # Weight and bias gradients of this tile: sum over its steps of g0 times the input each tap
    # read (g0 is 0 past the end), one [BD, K + 1] row of partials per program.
    part = part_ptr + ((pid_b * NPL + pid_l) * D + d64) * (K + 1)
    for k in tl.static_range(K):
        if REVERSE:
            src = t + (K - 1 - k)
        else:
            src = t - (K - 1 - k)
        ok = (src >= 0) & (src < L)
        xv = tl.load(xrow + src[None, :], mask=d_ok[:, None] & ok[None, :], other=0.0).to(COMPUTE)
        tl.store(part + k, tl.sum(g0 * xv, axis=1)[:, None], mask=d_ok[:, None])
    tl.store(part + K, tl.sum(g0, axis=1)[:, None], mask=d_ok[:, None])


def _tiles(L: int) -> tuple[int, int]:
    """(BD, BL): 16 channels x up to 256 steps, 4096 values per 4-warp program."""
    BL = min(256, max(16, triton.next_power_of_2(max(1, L))))
    return max(1, 4096 // BL // 16) * 16 if BL < 256 else 16, BL


def _compute(x: torch.Tensor) -> tuple[torch.dtype, object]:
    return (torch.float64, tl.float64) if x.dtype == torch.float64 else (torch.float32, tl.float32)


def conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
                 silu: bool, reverse: bool) -> torch.Tensor:
    """Write act(conv(x)) into ``out``. x, out: [B, D, L] with a contiguous time axis (any other
    strides); weight [D, K] with contiguous taps; bias [D] or None."""
    batch, dim, L = x.shape
    if batch == 0 or dim == 0 or L == 0:
        return out
    BD, BL = _tiles(L)
    _, tl_compute = _compute(x)
    _conv_fwd_kernel[(triton.cdiv(L, BL), triton.cdiv(dim, BD), batch)](
        x, weight, bias if bias is not None else weight, out, dim, L, x.stride(0), x.stride(1),
        out.stride(0), out.stride(1), weight.stride(0),
        COMPUTE=tl_compute, K=weight.shape[1], BD=BD, BL=BL, HAS_BIAS=bias is not None, SILU=bool(silu),
        REVERSE=bool(reverse), num_warps=4,
    )
    return out


def conv_backward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gy: torch.Tensor,
                  dx: torch.Tensor, silu: bool, reverse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Write d(loss)/dx into ``dx`` from the gradient ``gy`` of the (activated) output; return
    (dweight [D, K], dbias [D] or None) in the compute dtype. Layouts as in :func:`conv_forward`."""
    batch, dim, L = x.shape
    K = weight.shape[1]
    compute, tl_compute = _compute(x)
    if batch == 0 or dim == 0 or L == 0:
        dx.zero_()
        dwb = torch.zeros(dim, K + 1, device=x.device, dtype=compute)
    else:
        BD, BL = _tiles(L)
        npl = triton.cdiv(L, BL)
        part = _empty(batch * npl, dim, K + 1, device=x.device, dtype=compute)
        _conv_bwd_kernel[(npl, triton.cdiv(dim, BD), batch)](
            x, weight, bias if bias is not None else weight, gy, dx, part, dim, L, npl,
            x.stride(0), x.stride(1), gy.stride(0), gy.stride(1), dx.stride(0), dx.stride(1), weight.stride(0),
            COMPUTE=tl_compute, K=K, BD=BD, BL=BL, HAS_BIAS=bias is not None, SILU=bool(silu),
            REVERSE=bool(reverse), num_warps=4,
        )
        dwb = part[0] if part.shape[0] == 1 else part.sum(0)
    return dwb[:, :K], (dwb[:, K] if bias is not None else None)


def _time_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


class _CausalConv1dTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu, reverse):
        x = _time_contiguous(x)
        w = weight if weight.stride(-1) == 1 else weight.contiguous()
        b = bias.contiguous() if bias is not None else None
        out = _empty(x.shape, device=x.device, dtype=x.dtype)
        conv_forward(x, w, b, out, silu, reverse)
        ctx.save_for_backward(x, w, b)
        ctx.flags = (bool(silu), bool(reverse), weight.dtype, None if bias is None else bias.dtype)
        return out

    @staticmethod
    def backward(ctx, gy):
        x, w, b = ctx.saved_tensors
        silu, reverse, w_dtype, b_dtype = ctx.flags
        gy = _time_contiguous(gy)
        dx = _empty(x.shape, device=x.device, dtype=x.dtype)
        dw, db = conv_backward(x, w, b, gy, dx, silu, reverse)
        return dx, dw.to(w_dtype), (db.to(b_dtype) if db is not None else None), None, None


def causal_conv1d_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                         activation: str | None = None, reverse: bool = False) -> torch.Tensor:
    """Triton causal conv1d with the semantics of :func:`causal_conv1d_reference`; x [B, D, L],
    weight [D, K], bias [D]; not validated here (the public ``causal_conv1d`` does that)."""
    silu = activation == "silu"
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _CausalConv1dTriton.apply(x, weight, bias, silu, reverse)
    x = _time_contiguous(x)
    out = _empty(x.shape, device=x.device, dtype=x.dtype)
    return conv_forward(x, weight if weight.stride(-1) == 1 else weight.contiguous(),
                        bias.contiguous() if bias is not None else None, out, silu, reverse)


__all__ = ["causal_conv1d_triton", "conv_backward", "conv_forward"]
