"""Triton selective scan (Mamba-1 / S6), forward and backward, for CUDA (and TRITON_INTERPRET=1).

Layout: u, delta, z, y are [B, D, L] and B, C are [B, G, N, L], all contiguous along L. One
program owns ``BD`` channels of one sequence and walks its length in chunks of ``T`` steps,
holding a [BD, N, T] tile in registers. Inside a chunk the recurrence
``h[t] = a[t] * h[t-1] + b[t]`` (a = exp2(dt * A * log2 e), b = dt * u * B) is one
``tl.associative_scan`` over (a, b) pairs; the state entering the chunk is folded in after the
scan as ``h = scan_b + scan_a * h_in`` so masked tail steps (a = 1, b = 0) stay identities.

The forward pass writes y (gated when z is given) once and, when a gradient is needed, the state
entering every chunk: [S, D, n_chunks, N] float32, the only activation it keeps beyond its inputs.
The backward pass walks the chunks in the opposite order, rebuilds each chunk's states from the
saved entry state, and runs the adjoint scan ``g[t] = C[t] dy[t] + a[t+1] g[t+1]``. The shifted
decay a[t+1] comes from a second exp2 of the shifted step size: a register tile cannot be shifted
in Triton, and one extra exp2 per element is cheaper than a three-term scan. dB and dC sum over
the channels of a group: each program reduces its BD channels first and adds one [N, T] partial
per chunk with fp32 atomics; dA, dD and d(delta_bias) go to per-sequence partials summed on the
host, with no atomics.

With ``cu_seqlens`` (batch 1) each packed sequence is its own row of programs: the state never
crosses a boundary, and initial/final states are [S, D, N]. ``reverse`` scans right to left by
walking the chunks backwards and scanning each chunk in reverse; nothing is flipped in memory.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

_LOG2E = 1.4426950408889634

# Every buffer a kernel fills is allocated through these two names, so a test can swap in
# NaN-filled allocations and catch elements the kernels fail to write.
_empty = torch.empty
_empty_like = torch.empty_like


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    # (a1, b1) happens first, then (a2, b2): h -> a2 * (a1 * h + b1) + b2.
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _softplus(x):
    # max(x, 0) + log1p(exp(-|x|)); log1p through Kahan's correction, as tl has no log1p and
    # log(1 + w) loses most digits of dt for the typical w ~ 1e-3.
    w = tl.exp(-tl.abs(x))
    one_w = 1.0 + w
    log1p_w = tl.where(one_w == 1.0, w, tl.log(one_w) * (w / (one_w - 1.0)))
    return tl.maximum(x, 0.0) + log1p_w


@triton.jit
def _seq_bounds(cu_ptr, pid_s, L, VARLEN: tl.constexpr):
    if VARLEN:
        start = tl.load(cu_ptr + pid_s).to(tl.int64)
        end = tl.load(cu_ptr + pid_s + 1).to(tl.int64)
        row = pid_s * 0
    else:
        start = pid_s.to(tl.int64) * 0
        end = start + L
        row = pid_s
    return start, end - start, row


@triton.jit
def _step_size(delta, bias, t_ok, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    x = delta
    if HAS_BIAS:
        x = x + bias[:, None]
    dt = x
    if SOFTPLUS:
        dt = _softplus(x)
    # Steps outside the sequence get dt = 0: a = exp2(0) = 1 and b = 0, the scan's identity.
    return tl.where(t_ok[None, :], dt, 0.0), x


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A2_ptr, B_ptr, C_ptr, Dskip_ptr, z_ptr, bias_ptr, h0_ptr,
    y_ptr, hlast_ptr, hsave_ptr, cu_ptr,
    L, D, N, G, DPG, NCH,
    COMPUTE: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, SAVE: tl.constexpr, STORE_LAST: tl.constexpr, REVERSE: tl.constexpr,
    VARLEN: tl.constexpr,
):
    pid_d = tl.program_id(0)
    pid_s = tl.program_id(1)
    start, seqlen, row = _seq_bounds(cu_ptr, pid_s, L, VARLEN)
    d0 = pid_d * BD
    d_offs = d0 + tl.arange(0, BD)
    n_offs = tl.arange(0, NP)
    n_ok = n_offs < N
    t_idx = tl.arange(0, T)
    grp = d0 // DPG

    A2 = tl.load(A2_ptr + d_offs[:, None] * N + n_offs[None, :], mask=n_ok[None, :], other=0.0)
    bias = tl.zeros([BD], dtype=COMPUTE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d_offs)
    dskip = tl.zeros([BD], dtype=COMPUTE)
    if HAS_D:
        dskip = tl.load(Dskip_ptr + d_offs)

    # [S, D, N] state tensors are indexed by the program's sequence (batch row or packed seq).
    st_offs = (pid_s.to(tl.int64) * D + d_offs[:, None]) * N + n_offs[None, :]
    h = tl.zeros([BD, NP], dtype=COMPUTE)
    if HAS_H0:
        h = tl.load(h0_ptr + st_offs, mask=n_ok[None, :], other=0.0)

    row_offs = (row.to(tl.int64) * D + d_offs) * L + start  # [BD], into u/delta/z/y
    bc_offs = ((row.to(tl.int64) * G + grp) * N + n_offs) * L + start  # [NP], into B/C
    save_offs = ((pid_s.to(tl.int64) * D + d_offs[:, None]) * NCH) * N + n_offs[None, :]
    last: tl.constexpr = 0 if REVERSE else T - 1

    nchunks = tl.cdiv(seqlen, T)
    for ci in range(0, nchunks):
        if REVERSE:
            k = nchunks - 1 - ci
        else:
            k = ci
        if SAVE:
            tl.store(hsave_ptr + save_offs + k * N, h, mask=n_ok[None, :])
        t_offs = k * T + t_idx
        t_ok = t_offs < seqlen
        x_offs = row_offs[:, None] + t_offs[None, :]
        u = tl.load(u_ptr + x_offs, mask=t_ok[None, :], other=0.0).to(COMPUTE)
        dl = tl.load(delta_ptr + x_offs, mask=t_ok[None, :], other=0.0).to(COMPUTE)
        dt, _ = _step_size(dl, bias, t_ok, HAS_BIAS, SOFTPLUS)
        bc_m = n_ok[:, None] & t_ok[None, :]
        Bt = tl.load(B_ptr + bc_offs[:, None] + t_offs[None, :], mask=bc_m, other=0.0).to(COMPUTE)
        Ct = tl.load(C_ptr + bc_offs[:, None] + t_offs[None, :], mask=bc_m, other=0.0).to(COMPUTE)

        a = tl.exp2(dt[:, None, :] * A2[:, :, None])
        b = (dt * u)[:, None, :] * Bt[None, :, :]
        sa, sb = tl.associative_scan((a, b), axis=2, combine_fn=_affine_combine, reverse=REVERSE)
        hh = sb + sa * h[:, :, None]
        y = tl.sum(hh * Ct[None, :, :], axis=1)
        if HAS_D:
            y += dskip[:, None] * u
        if HAS_Z:
            zt = tl.load(z_ptr + x_offs, mask=t_ok[None, :], other=0.0).to(COMPUTE)
            y = y * (zt * tl.sigmoid(zt))
        tl.store(y_ptr + x_offs, y.to(y_ptr.dtype.element_ty), mask=t_ok[None, :])
        h = tl.sum(tl.where(t_idx[None, None, :] == last, hh, 0.0), axis=2)

    if STORE_LAST:
        tl.store(hlast_ptr + st_offs, h, mask=n_ok[None, :])


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A2_ptr, B_ptr, C_ptr, Dskip_ptr, z_ptr, bias_ptr, hsave_ptr, dout_ptr,
    dlast_ptr, cu_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, D, N, G, DPG, NCH,
    COMPUTE: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr, REVERSE: tl.constexpr, VARLEN: tl.constexpr,
):
    pid_d = tl.program_id(0)
    pid_s = tl.program_id(1)
    start, seqlen, row = _seq_bounds(cu_ptr, pid_s, L, VARLEN)
    d0 = pid_d * BD
    d_offs = d0 + tl.arange(0, BD)
    n_offs = tl.arange(0, NP)
    n_ok = n_offs < N
    t_idx = tl.arange(0, T)
    grp = d0 // DPG

    A2 = tl.load(A2_ptr + d_offs[:, None] * N + n_offs[None, :], mask=n_ok[None, :], other=0.0)
    A_nat = A2 * 0.6931471805599453  # ln 2: back to natural-log units for d(exp(dt A))/d dt
    bias = tl.zeros([BD], dtype=COMPUTE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d_offs)
    dskip = tl.zeros([BD], dtype=COMPUTE)
    if HAS_D:
        dskip = tl.load(Dskip_ptr + d_offs)

    st_offs = (pid_s.to(tl.int64) * D + d_offs[:, None]) * N + n_offs[None, :]
    # carry = dLoss/d(state leaving the current chunk in scan order); starts as d(final state).
    carry = tl.zeros([BD, NP], dtype=COMPUTE)
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + st_offs, mask=n_ok[None, :], other=0.0)
    dA_acc = tl.zeros([BD, NP], dtype=COMPUTE)
    dD_acc = tl.zeros([BD], dtype=COMPUTE)
    dbias_acc = tl.zeros([BD], dtype=COMPUTE)

    row_offs = (row.to(tl.int64) * D + d_offs) * L + start
    bc_offs = ((row.to(tl.int64) * G + grp) * N + n_offs) * L + start
    save_offs = ((pid_s.to(tl.int64) * D + d_offs[:, None]) * NCH) * N + n_offs[None, :]
    # The step after t in scan order is t+1 (t-1 when reversed); within a chunk only, since the
    # chunk's last step hands its gradient on through `carry`.
    if REVERSE:
        nxt_shift = -1
        nxt_in_chunk = t_idx > 0
    else:
        nxt_shift = 1
        nxt_in_chunk = t_idx < T - 1

    nchunks = tl.cdiv(seqlen, T)
    for ci in range(0, nchunks):
        if REVERSE:
            k = ci
        else:
            k = nchunks - 1 - ci
        t_offs = k * T + t_idx
        t_ok = t_offs < seqlen
        x_offs = row_offs[:, None] + t_offs[None, :]
        u = tl.load(u_ptr + x_offs, mask=t_ok[None, :], other=0.0).to(COMPUTE)
        dl = tl.load(delta_ptr + x_offs, mask=t_ok[None, :], other=0.0).to(COMPUTE)
        dt, x = _step_size(dl, bias, t_ok, HAS_BIAS, SOFTPLUS)
        tn_ok = nxt_in_chunk & ((t_offs + nxt_shift) < seqlen)
        dln = tl.load(delta_ptr + x_offs + nxt_shift, mask=tn_ok[None, :], other=0.0).to(COMPUTE)
        dtn, _ = _step_size(dln, bias, tn_ok, HAS_BIAS, SOFTPLUS)
        bc_m = n_ok[:, None] & t_ok[None, :]
        bc_ptrs = bc_offs[:, None] + t_offs[None, :]
        Bt = tl.load(B_ptr + bc_ptrs, mask=bc_m, other=0.0).to(COMPUTE)
        Ct = tl.load(C_ptr + bc_ptrs, mask=bc_m, other=0.0).to(COMPUTE)
        dout = tl.load(dout_ptr + x_offs, mask=t_ok[None, :], other=0.0).to(COMPUTE)
        h_in = tl.load(hsave_ptr + save_offs + k * N, mask=n_ok[None, :], other=0.0)

        # Rebuild the chunk's states from the saved entry state.
        a = tl.exp2(dt[:, None, :] * A2[:, :, None])
        dtu = dt * u
        b = dtu[:, None, :] * Bt[None, :, :]
        sa, sb = tl.associative_scan((a, b), axis=2, combine_fn=_affine_combine, reverse=REVERSE)
        hh = sb + sa * h_in[:, :, None]

        dy = dout
        if HAS_Z:
            zt = tl.load(z_ptr + x_offs, mask=t_ok[None, :], other=0.0).to(COMPUTE)
            y = tl.sum(hh * Ct[None, :, :], axis=1)
            if HAS_D:
                y += dskip[:, None] * u
            sz = tl.sigmoid(zt)
            dz = dout * y * sz * (1.0 + zt * (1.0 - sz))
            tl.store(dz_ptr + x_offs, dz.to(dz_ptr.dtype.element_ty), mask=t_ok[None, :])
            dy = dout * zt * sz

        # Adjoint: g[t] = C[t] dy[t] + a[next] g[next], scanned against the forward direction.
        an = tl.exp2(dtn[:, None, :] * A2[:, :, None])
        c = dy[:, None, :] * Ct[None, :, :]
        ga, gb = tl.associative_scan((an, c), axis=2, combine_fn=_affine_combine, reverse=not REVERSE)
        g = gb + ga * carry[:, :, None]

        ah = hh - b  # a[t] * h[t-1], exact without dividing by a
        gah = g * ah
        gB = g * Bt[None, :, :]
        sum_gB = tl.sum(gB, axis=1)
        ddt = u * sum_gB + tl.sum(gah * A_nat[:, :, None], axis=1)
        du = dt * sum_gB
        if HAS_D:
            du += dskip[:, None] * dy
            dD_acc += tl.sum(dy * u, axis=1)
        dA_acc += tl.sum(gah * dt[:, None, :], axis=2)
        if SOFTPLUS:
            ddelta = ddt * tl.sigmoid(x)
        else:
            ddelta = ddt
        ddelta = tl.where(t_ok[None, :], ddelta, 0.0)
        dbias_acc += tl.sum(ddelta, axis=1)
        tl.store(du_ptr + x_offs, du.to(du_ptr.dtype.element_ty), mask=t_ok[None, :])
        tl.store(ddelta_ptr + x_offs, ddelta.to(ddelta_ptr.dtype.element_ty), mask=t_ok[None, :])

        # dB, dC: reduce this program's channels (all in one group), then one atomic per (n, t).
        dB_part = tl.sum(g * dtu[:, None, :], axis=0)
        dC_part = tl.sum(hh * dy[:, None, :], axis=0)
        tl.atomic_add(dB_ptr + bc_ptrs, dB_part, mask=bc_m, sem="relaxed")
        tl.atomic_add(dC_ptr + bc_ptrs, dC_part, mask=bc_m, sem="relaxed")

        # Gradient into the state entering this chunk: a[first] * g[first], first in scan order.
        if REVERSE:
            first = tl.minimum(seqlen - k * T, T) - 1
        else:
            first = 0
        carry = tl.sum(tl.where(t_idx[None, None, :] == first, a * g, 0.0), axis=2)

    tl.store(dh0_ptr + st_offs, carry, mask=n_ok[None, :])
    tl.store(dA_ptr + st_offs, dA_acc, mask=n_ok[None, :])
    s_offs = pid_s.to(tl.int64) * D + d_offs
    if HAS_D:
        tl.store(dD_ptr + s_offs, dD_acc)
    if HAS_BIAS:
        tl.store(dbias_ptr + s_offs, dbias_acc)


# ----------------------------------------------------------------------------- host side

# Tile sizes. fwd: (elements per [BD, N, T] tile, T, warps); bwd likewise. The forward run that
# saves states for a backward uses the backward's T so the saved grid matches its chunks.
_DEFAULT_CONFIG = {"fwd": (4096, 64, 4), "bwd": (2048, 64, 4)}
_config = dict(_DEFAULT_CONFIG)


def set_tile_config(fwd: tuple[int, int, int] | None = None, bwd: tuple[int, int, int] | None = None) -> None:
    """Override tile sizes (elements per tile, chunk length T, warps); None restores the default.

    Used by the GPU benchmark to sweep configurations; T and elements must be powers of two.
    """
    for key, val in (("fwd", fwd), ("bwd", bwd)):
        if val is None:
            _config[key] = _DEFAULT_CONFIG[key]
            continue
        elems, T, warps = val
        if elems & (elems - 1) or T & (T - 1) or elems < T:
            raise ValueError(f"{key} tile config {val} needs powers of two with elements >= T")
        _config[key] = (int(elems), int(T), int(warps))


def _channels_per_program(elems: int, T: int, NP: int, dpg: int) -> int:
    """Largest power of two <= elems / (NP * T) that divides the channels of one group."""
    bd = max(1, elems // (NP * T))
    bd = 1 << (bd.bit_length() - 1)
    while dpg % bd:
        bd //= 2
    return bd


def _chunk_len(T: int, maxlen: int) -> int:
    # Short sequences should not pay for a long masked chunk.
    return max(16, min(T, triton.next_power_of_2(max(1, maxlen))))


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm, Dskip, z, delta_bias, h0, cu_seqlens,
                delta_softplus, reverse, return_final):
        compute = torch.float64 if u.dtype == torch.float64 else torch.float32
        batch, dim, L = u.shape
        G, N = Bm.shape[1], Bm.shape[2]
        dpg = dim // G
        u, delta, Bm, Cm = (t.contiguous() for t in (u, delta, Bm, Cm))
        z = z.contiguous() if z is not None else None
        A2 = (A.to(compute) * _LOG2E).contiguous()
        Dc = Dskip.to(compute).contiguous() if Dskip is not None else None
        bias = delta_bias.to(compute).contiguous() if delta_bias is not None else None
        h0c = h0.to(compute).contiguous() if h0 is not None else None
        varlen = cu_seqlens is not None
        if varlen:
            cu = cu_seqlens.to(device=u.device, dtype=torch.int32).contiguous()
            nseq = cu.numel() - 1
            maxlen = int((cu[1:] - cu[:-1]).max().item()) if nseq > 0 else 0
        else:
            cu, nseq, maxlen = None, batch, L

        needs_grad = any(ctx.needs_input_grad[:9])
        NP = max(2, triton.next_power_of_2(N))
        elems, T, warps = _config["fwd"]
        if needs_grad:
            T = _config["bwd"][1]
        T = _chunk_len(T, maxlen)
        BD = _channels_per_program(elems, T, NP, dpg)
        nch = triton.cdiv(maxlen, T) if needs_grad else 0

        y = _empty_like(u)
        hlast = _empty(nseq, dim, N, device=u.device, dtype=compute) if return_final else None
        hsave = _empty(nseq, dim, max(nch, 1), N, device=u.device, dtype=compute) if needs_grad else None
        dummy = A2
        if nseq > 0 and dim > 0:
            grid = (dim // BD, nseq)
            _scan_fwd_kernel[grid](
                u, delta, A2, Bm, Cm,
                Dc if Dc is not None else dummy, z if z is not None else dummy,
                bias if bias is not None else dummy, h0c if h0c is not None else dummy,
                y, hlast if hlast is not None else dummy, hsave if hsave is not None else dummy,
                cu if cu is not None else dummy,
                L, dim, N, G, dpg, max(nch, 1),
                COMPUTE=tl.float64 if compute == torch.float64 else tl.float32,
                BD=BD, NP=NP, T=T, HAS_D=Dc is not None, HAS_Z=z is not None,
                HAS_BIAS=bias is not None, SOFTPLUS=bool(delta_softplus), HAS_H0=h0c is not None,
                SAVE=needs_grad, STORE_LAST=return_final, REVERSE=bool(reverse), VARLEN=varlen,
                num_warps=warps,
            )
        ctx.save_for_backward(u, delta, A2, Bm, Cm, Dc, z, bias, hsave, cu)
        ctx.meta = dict(softplus=bool(delta_softplus), reverse=bool(reverse), T=T, nch=max(nch, 1),
                        nseq=nseq, has_h0=h0 is not None, dtypes=(A.dtype, None if Dskip is None else Dskip.dtype,
                        None if delta_bias is None else delta_bias.dtype, None if h0 is None else h0.dtype))
        if return_final:
            return y, hlast
        return y

    @staticmethod
    def backward(ctx, dy, *rest):
        u, delta, A2, Bm, Cm, Dc, z, bias, hsave, cu = ctx.saved_tensors
        m = ctx.meta
        dlast = rest[0] if rest else None
        compute = A2.dtype
        batch, dim, L = u.shape
        G, N = Bm.shape[1], Bm.shape[2]
        dpg = dim // G
        nseq = m["nseq"]
        if dy is None:
            dy = torch.zeros_like(u)
        dy = dy.contiguous()
        dlast = dlast.to(compute).contiguous() if dlast is not None else None

        NP = max(2, triton.next_power_of_2(N))
        elems, _, warps = _config["bwd"]
        T = m["T"]
        BD = _channels_per_program(elems, T, NP, dpg)

        du = _empty_like(u)
        ddelta = _empty_like(delta)
        dz = _empty_like(z) if z is not None else None
        dB = torch.zeros(Bm.shape, device=u.device, dtype=compute)
        dC = torch.zeros(Cm.shape, device=u.device, dtype=compute)
        dA_part = _empty(nseq, dim, N, device=u.device, dtype=compute)
        dD_part = _empty(nseq, dim, device=u.device, dtype=compute) if Dc is not None else None
        dbias_part = _empty(nseq, dim, device=u.device, dtype=compute) if bias is not None else None
        dh0 = _empty(nseq, dim, N, device=u.device, dtype=compute)
        dummy = A2
        if nseq > 0 and dim > 0:
            grid = (dim // BD, nseq)
            _scan_bwd_kernel[grid](
                u, delta, A2, Bm, Cm,
                Dc if Dc is not None else dummy, z if z is not None else dummy,
                bias if bias is not None else dummy, hsave, dy,
                dlast if dlast is not None else dummy, cu if cu is not None else dummy,
                du, ddelta, dz if dz is not None else dummy, dB, dC, dA_part,
                dD_part if dD_part is not None else dummy, dbias_part if dbias_part is not None else dummy, dh0,
                L, dim, N, G, dpg, m["nch"],
                COMPUTE=tl.float64 if compute == torch.float64 else tl.float32,
                BD=BD, NP=NP, T=T, HAS_D=Dc is not None, HAS_Z=z is not None,
                HAS_BIAS=bias is not None, SOFTPLUS=m["softplus"], HAS_DLAST=dlast is not None,
                REVERSE=m["reverse"], VARLEN=cu is not None,
                num_warps=warps,
            )
        else:
            du.zero_()
            ddelta.zero_()
            if dz is not None:
                dz.zero_()
            dA_part.zero_()
            dh0.copy_(dlast) if dlast is not None else dh0.zero_()
            if dD_part is not None:
                dD_part.zero_()
            if dbias_part is not None:
                dbias_part.zero_()
        A_dt, D_dt, bias_dt, h0_dt = m["dtypes"]
        dA = dA_part.sum(0).to(A_dt)
        dD = dD_part.sum(0).to(D_dt) if dD_part is not None else None
        dbias = dbias_part.sum(0).to(bias_dt) if dbias_part is not None else None
        dh0_out = dh0.to(h0_dt) if m["has_h0"] else None
        return (du, ddelta, dA, dB.to(Bm.dtype), dC.to(Cm.dtype), dD, dz, dbias, dh0_out,
                None, None, None, None)


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
):
    """Triton selective scan with the semantics of :func:`selective_scan_reference`.

    u, delta, z: [B, D, L]; A: [D, N]; B, C: [B, G, N, L]; D, delta_bias: [D];
    initial_state: [B, D, N] ([S, D, N] with ``cu_seqlens`` [S+1] and batch 1).
    Returns y [B, D, L] in u's dtype and, with ``return_final_state``, the final state
    [B, D, N] (or [S, D, N]) in float32 (float64 for float64 inputs). Differentiable in every
    tensor argument and through the final state. Inputs are not validated here; the public
    :func:`ssmkit.ops.selective_scan.selective_scan` does that.
    """
    out = _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens,
                                     delta_softplus, reverse, return_final_state)
    return out


def forward_saved_bytes(batch: int, dim: int, L: int, N: int, nseq: int | None = None,
                        maxlen: int | None = None) -> int:
    """Bytes the forward keeps for the backward beyond its inputs: the chunk-entry states."""
    T = _chunk_len(_config["bwd"][1], maxlen if maxlen is not None else L)
    rows = nseq if nseq is not None else batch
    return rows * dim * math.ceil((maxlen if maxlen is not None else L) / T) * N * 4


__all__ = ["forward_saved_bytes", "selective_scan_triton", "set_tile_config"]
