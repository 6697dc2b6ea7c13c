"""Triton multi-path selective scan, forward: gather along the path and scatter back in-kernel.

One program owns ``BD`` channels of one (batch, path) pair and walks the path in chunks of
``T`` steps. For each chunk it loads the path's raster positions ``path_index[k, t]``, reads
the shared map ``u`` [B, Di, L] at those positions (a gather, so the K permuted copies never
exist in memory), runs the recurrence as one ``tl.associative_scan`` over (decay, input) pairs
on a [BD, N, T] register tile, and writes ``y`` straight back to the raster positions: an fp32
atomic add into the merged [B, Di, L] output (the K paths of one position land from different
programs), or a plain store into [B, K, Di, L] for ``reduce="none"``.

Memory traffic per call: u is read K times through the gather, delta/B/C once, the merged
output written once; no [B, K*Di, L] copy of u and no [B, K*Di, L] un-merged output.

This file has the forward pass only; :func:`ssmkit.ops.path_scan.fused_path_scan` uses it
when no gradient is needed and otherwise runs the batched path (one gather, the 1-D Triton
scan, one merge), whose backward is the 1-D kernel's.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_LOG2E = 1.4426950408889634


@triton.jit
def _compose(a1, b1, a2, b2):
    # step (a1, b1) then (a2, b2): h -> a2 * (a1 * h + b1) + b2
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _softplus_f32(x):
    # Stable softplus: max(x, 0) + log(1 + exp(-|x|)).
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _path_scan_fwd_kernel(
    u_ptr, delta_ptr, a_ptr, b_ptr, c_ptr, d_ptr, bias_ptr, idx_ptr, out_ptr,
    Di, L, K, CH_PER_GROUP, G_PER_PATH,
    su_b, su_d, sd_b, sd_d, sb_b, sb_g, sb_n, sc_b, sc_g, sc_n,
    so_b, so_k, so_d,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ATOMIC: tl.constexpr,
    SCALE: tl.constexpr, LOG2E: tl.constexpr,
):
    pid_bk = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = pid_bk // K
    k = pid_bk % K
    d = pid_d * BD + tl.arange(0, BD)  # channel within the path
    dmask = d < Di
    ch = k * Di + d  # path-major channel of delta / A / D / bias
    n = tl.arange(0, N)
    grp = k * G_PER_PATH + d // CH_PER_GROUP  # the channel's B/C group

    A = tl.load(a_ptr + ch[:, None] * N + n[None, :], mask=dmask[:, None], other=0.0).to(tl.float32)
    A2 = A * LOG2E  # exp(x) = exp2(x * log2 e)
    Dv = tl.zeros([BD], tl.float32)
    if HAS_D:
        Dv = tl.load(d_ptr + ch, mask=dmask, other=0.0).to(tl.float32)
    bias = tl.zeros([BD], tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + ch, mask=dmask, other=0.0).to(tl.float32)
    h = tl.zeros([BD, N], tl.float32)
    last = (tl.arange(0, T) == T - 1)[None, None, :]
    b64 = b.to(tl.int64)

    for t0 in range(0, L, T):
        t = t0 + tl.arange(0, T)
        tmask = t < L
        m2 = dmask[:, None] & tmask[None, :]
        pos = tl.load(idx_ptr + k * L + t, mask=tmask, other=0)  # raster positions on this path
        u = tl.load(u_ptr + b64 * su_b + d[:, None] * su_d + pos[None, :], mask=m2, other=0.0).to(tl.float32)
        dt = tl.load(delta_ptr + b64 * sd_b + ch[:, None] * sd_d + t[None, :], mask=m2, other=0.0).to(tl.float32)
        dt = dt + bias[:, None]
        if SOFTPLUS:
            dt = _softplus_f32(dt)
        bc_off = grp[:, None, None] * sb_g + n[None, :, None] * sb_n + t[None, None, :]
        m3 = dmask[:, None, None] & tmask[None, None, :]
        Bt = tl.load(b_ptr + b64 * sb_b + bc_off, mask=m3, other=0.0).to(tl.float32)
        Ct = tl.load(c_ptr + b64 * sc_b + grp[:, None, None] * sc_g + n[None, :, None] * sc_n + t[None, None, :],
                     mask=m3, other=0.0).to(tl.float32)
        # Masked tail steps are identities (decay 1, input 0) so the last column is the state.
        a = tl.where(m3, tl.exp2(dt[:, None, :] * A2[:, :, None]), 1.0)
        x = tl.where(m3, (dt * u)[:, None, :] * Bt, 0.0)
        sa, sb = tl.associative_scan((a, x), axis=2, combine_fn=_compose)
        hs = sb + sa * h[:, :, None]
        y = tl.sum(hs * Ct, axis=1) + Dv[:, None] * u
        h = tl.sum(tl.where(last, hs, 0.0), axis=2)
        y = y * SCALE
        if ATOMIC:
            tl.atomic_add(out_ptr + b64 * so_b + d[:, None] * so_d + pos[None, :], y, mask=m2)
        else:
            tl.store(out_ptr + b64 * so_b + k * so_k + d[:, None] * so_d + pos[None, :],
                     y.to(out_ptr.dtype.element_ty), mask=m2)


def _block_sizes(dim: int, nstate: int) -> tuple[int, int]:
    # Keep the [BD, N, T] fp32 tile near 8K elements: registers, not local memory.
    bd = min(triton.next_power_of_2(dim), 16)
    t = max(16, min(64, 8192 // (bd * nstate)))
    return bd, t


def path_scan_triton_forward(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    path_index: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    reduce: str = "sum",
) -> torch.Tensor:
    """Forward of the multi-path scan with in-kernel gather/scatter (no autograd).

    Shapes as in :func:`ssmkit.ops.path_scan.fused_path_scan`: u [B, Di, L] raster order;
    delta [B, K*Di, L], B/C [B, K*g, N, L] in visit order; A [K*Di, N]; D, delta_bias [K*Di];
    path_index [K, L]. Returns [B, Di, L] (sum/mean) or [B, K, Di, L] (none) in u's dtype.
    """
    batch, dim, L = u.shape
    K = path_index.shape[0]
    nstate = A.shape[1]
    if nstate & (nstate - 1):
        raise ValueError(f"the Triton path scan needs a power-of-two state size N; got N={nstate}")
    groups = B.shape[1]
    g_per_path = groups // K
    if dim % g_per_path:
        raise ValueError(f"D={dim} channels per path do not split into {g_per_path} groups per path")
    u = u.contiguous()
    delta, B, C = delta.contiguous(), B.contiguous(), C.contiguous()
    A = A.contiguous().float()
    idx = path_index.contiguous()
    atomic = reduce != "none"
    if atomic:
        out = torch.zeros(batch, dim, L, device=u.device, dtype=torch.float32)
        so = (out.stride(0), 0, out.stride(1))
    else:
        out = torch.empty(batch, K, dim, L, device=u.device, dtype=u.dtype)
        so = (out.stride(0), out.stride(1), out.stride(2))
    bd, t = _block_sizes(dim, nstate)
    Dp = D.contiguous().float() if D is not None else A  # placeholder pointer when absent
    bp = delta_bias.contiguous().float() if delta_bias is not None else A
    grid = (batch * K, triton.cdiv(dim, bd))
    _path_scan_fwd_kernel[grid](
        u, delta, A, B, C, Dp, bp, idx, out,
        dim, L, K, dim // g_per_path, g_per_path,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1),
        B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        *so,
        N=nstate, BD=bd, T=t, HAS_D=D is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus), ATOMIC=atomic, SCALE=(1.0 / K if reduce == "mean" else 1.0), LOG2E=_LOG2E,
    )
    return out.to(u.dtype) if atomic else out
