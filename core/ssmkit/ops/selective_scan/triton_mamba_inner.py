"""The Mamba mixer's inner computation as one autograd Function over Triton kernels and matmuls.

For input [B, L, d_model] and d_inner channels, the forward is

    xz    = W_in @ h^T (+ b_in)             [2*d_inner, B*L]  (one matmul, channel-major)
    xc    = silu(causal_conv1d(x))          [d_inner, B*L]    (x = xz[:d_inner], Triton)
    x_dbl = W_x @ xc                        [R + 2*G*N, B*L]
    delta = W_dt @ x_dbl[:R]                [d_inner, B*L]    (bias and softplus in the scan)
    y     = scan(xc, delta, A, B, C, D, z)  [d_inner, B*L]    (B, C: rows of x_dbl; z = xz[d_inner:])
    out   = y^T @ W_out^T (+ b_out)         [B*L, d_model]

Every [C, B*L] tensor is read as [B, C, L] through its strides (batch stride L, channel stride
B*L), which both Triton kernels take: no tensor is transposed or copied between the matmuls and
the kernels, in either direction. The backward writes dx and dz straight into the two halves of
one [2*d_inner, B*L] gradient, and dB/dC into one float32 buffer in x_dbl's layout.

Saved for the backward: xz, x_dbl (R + 2GN rows), the scan's segment states and the weights.
The conv output, delta and the gated scan output are recomputed there (one conv, one small
matmul, and one extra store in the scan's backward kernel) rather than kept, as mamba-ssm's
``mamba_inner_fn`` does; the scan keeps no copy of B or C and no pre-gate output.
"""

from __future__ import annotations

import torch

from ssmkit.ops.causal_conv1d.triton_conv import conv_backward, conv_forward
from ssmkit.ops.selective_scan.triton_scan import _InferenceCtx, make_problem, scan_backward, scan_forward


def _as_bdl(t2d: torch.Tensor, batch: int) -> torch.Tensor:
    """[C, B*L] -> its [B, C, L] view (strides L, B*L, 1)."""
    C, BL = t2d.shape
    return t2d.view(C, batch, BL // batch).transpose(0, 1)


def _as_bgnl(t2d: torch.Tensor, batch: int, G: int, N: int) -> torch.Tensor:
    """[G*N, B*L] -> its [B, G, N, L] view (strides L, N*B*L, B*L, 1)."""
    BL = t2d.shape[1]
    return t2d.view(G, N, batch, BL // batch).permute(2, 0, 1, 3)


class _MambaInnerTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz, conv_w, conv_b, x_proj_w, dt_proj_w, out_proj_w, out_proj_b, A, Dskip, dt_bias,
                batch, G, reverse):
        with torch.autocast(xz.device.type, enabled=False):
            compute = torch.float64 if xz.dtype == torch.float64 else torch.float32
            di = xz.shape[0] // 2
            R = dt_proj_w.shape[1]
            N = A.shape[1]
            x, z = _as_bdl(xz[:di], batch), _as_bdl(xz[di:], batch)
            xc = torch.empty(di, xz.shape[1], device=xz.device, dtype=xz.dtype)
            conv_forward(x, conv_w, conv_b, _as_bdl(xc, batch), True, reverse)
            x_dbl = torch.mm(x_proj_w, xc)
            delta = torch.mm(dt_proj_w, x_dbl[:R])
            Bm = _as_bgnl(x_dbl[R:R + G * N], batch, G, N)
            Cm = _as_bgnl(x_dbl[R + G * N:], batch, G, N)
            u, dl = _as_bdl(xc, batch), _as_bdl(delta, batch)
            p = make_problem(u, dl, Bm, compute, True, reverse)
            needs_grad = any(ctx.needs_input_grad[:10])
            hsave = torch.empty(batch, di, p.nseg, N, device=xz.device, dtype=compute) if needs_grad else None
            y = torch.empty_like(xc)
            scan_forward(p, u, dl, A, Bm, Cm, Dskip, z, dt_bias, None, _as_bdl(y, batch), None, hsave)
            out = torch.mm(y.t(), out_proj_w.t()) if out_proj_b is None else torch.addmm(out_proj_b, y.t(),
                                                                                           out_proj_w.t())
        ctx.save_for_backward(xz, conv_w, conv_b, x_dbl, x_proj_w, dt_proj_w, out_proj_w, A, Dskip, dt_bias, hsave)
        ctx.meta = (batch, G, bool(reverse), p, out_proj_b is not None)
        return out

    @staticmethod
    def backward(ctx, dout):
        xz, conv_w, conv_b, x_dbl, x_proj_w, dt_proj_w, out_proj_w, A, Dskip, dt_bias, hsave = ctx.saved_tensors
        batch, G, reverse, p, has_out_bias = ctx.meta
        with torch.autocast(xz.device.type, enabled=False):
            di, BL = xz.shape[0] // 2, xz.shape[1]
            R, N = dt_proj_w.shape[1], A.shape[1]
            dout = dout.contiguous()
            x, z = _as_bdl(xz[:di], batch), _as_bdl(xz[di:], batch)
            # Recomputed rather than saved: the conv output and delta.
            xc = torch.empty(di, BL, device=xz.device, dtype=xz.dtype)
            conv_forward(x, conv_w, conv_b, _as_bdl(xc, batch), True, reverse)
            delta = torch.mm(dt_proj_w, x_dbl[:R])
            Bm = _as_bgnl(x_dbl[R:R + G * N], batch, G, N)
            Cm = _as_bgnl(x_dbl[R + G * N:], batch, G, N)
            dy = torch.mm(out_proj_w.t(), dout.t())  # [d_inner, B*L]: d(gated scan output)
            dxz = torch.empty_like(xz)
            du = torch.empty_like(xc)
            ddelta = torch.empty_like(delta)
            y = torch.empty_like(xc)  # the gated output, rewritten by the scan's backward
            dBC = torch.zeros(2 * G * N, BL, device=xz.device, dtype=p.compute)
            dA, dD, dbias, _ = scan_backward(
                p, _as_bdl(xc, batch), _as_bdl(delta, batch), A, Bm, Cm, Dskip, _as_bdl(xz[di:], batch), dt_bias,
                hsave, _as_bdl(dy, batch), None, _as_bdl(du, batch), _as_bdl(ddelta, batch), _as_bdl(dxz[di:], batch),
                _as_bgnl(dBC[:G * N], batch, G, N), _as_bgnl(dBC[G * N:], batch, G, N), y_out=_as_bdl(y, batch),
                need_dh0=False)
            del dy, delta, z  # the peak is here; free what the rest does not read
            d_out_w = torch.mm(dout.t(), y.t())
            d_out_b = dout.sum(0) if has_out_bias else None
            del y
            d_x_dbl = torch.empty_like(x_dbl)
            torch.mm(dt_proj_w.t(), ddelta, out=d_x_dbl[:R])
            d_x_dbl[R:].copy_(dBC)
            del dBC
            d_dt_w = torch.mm(ddelta, x_dbl[:R].t())
            del ddelta
            d_x_w = torch.mm(d_x_dbl, xc.t())
            del xc
            du.addmm_(x_proj_w.t(), d_x_dbl)  # d(conv output) = the scan's du + the x_proj path's
            d_conv_w, d_conv_b = conv_backward(x, conv_w, conv_b, _as_bdl(du, batch), _as_bdl(dxz[:di], batch),
                                               True, reverse)
        return (dxz, d_conv_w.to(conv_w.dtype), d_conv_b.to(conv_b.dtype) if conv_b is not None else None,
                d_x_w, d_dt_w, d_out_w, d_out_b, dA, dD, dbias, None, None, None)


def mamba_inner_triton(hidden: torch.Tensor, in_proj_w: torch.Tensor, in_proj_b: torch.Tensor | None,
                       conv_w: torch.Tensor, conv_b: torch.Tensor | None, x_proj_w: torch.Tensor,
                       dt_proj_w: torch.Tensor, dt_proj_b: torch.Tensor, A: torch.Tensor, Dskip: torch.Tensor,
                       out_proj_w: torch.Tensor, out_proj_b: torch.Tensor | None, ngroups: int = 1,
                       reverse: bool = False) -> torch.Tensor:
    """A Mamba mixer's forward, hidden [B, L, d_model] -> [B, L, d_model], on CUDA (or the interpreter).

    Weights as the layer holds them: in_proj_w [2*d_inner, d_model], conv_w [d_inner, K],
    x_proj_w [R + 2*G*N, d_inner], dt_proj_w [d_inner, R], out_proj_w [d_model, d_inner]; A
    [d_inner, N], Dskip and dt_proj_b [d_inner] in float32 (float64 for a float64 module).
    ``reverse`` runs right to left (anti-causal conv, reverse scan). Under autocast the input and
    weights are cast to the autocast dtype first, as the matmuls would be.
    """
    batch, L, d_model = hidden.shape
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dt = torch.get_autocast_dtype(device_type)
        hidden, in_proj_w, conv_w, x_proj_w, dt_proj_w, out_proj_w = (
            t.to(dt) for t in (hidden, in_proj_w, conv_w, x_proj_w, dt_proj_w, out_proj_w))
        in_proj_b = in_proj_b.to(dt) if in_proj_b is not None else None
        conv_b = conv_b.to(dt) if conv_b is not None else None
        out_proj_b = out_proj_b.to(dt) if out_proj_b is not None else None
    with torch.autocast(device_type, enabled=False):
        h2d = hidden.reshape(batch * L, d_model)
        # One matmul gives xz channel-major, [2*d_inner, B*L]: the layout the kernels read.
        xz = torch.mm(in_proj_w, h2d.t()) if in_proj_b is None else torch.addmm(in_proj_b[:, None], in_proj_w,
                                                                                  h2d.t())
    if conv_w.stride(-1) != 1:
        conv_w = conv_w.contiguous()
    args = (xz, conv_w, conv_b, x_proj_w, dt_proj_w, out_proj_w, out_proj_b, A.contiguous(), Dskip.contiguous(),
            dt_proj_b.contiguous(), batch, ngroups, reverse)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args[:10]):
        out = _MambaInnerTriton.apply(*args)
    else:
        out = _MambaInnerTriton.forward(_InferenceCtx(), *args)
    return out.view(batch, L, -1)


__all__ = ["mamba_inner_triton"]
