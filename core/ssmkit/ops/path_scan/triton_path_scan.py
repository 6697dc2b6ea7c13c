"""Triton multi-path selective scan: gather along the path and scatter back inside the kernels.

One program owns ``BD`` channels of one (batch, path) pair and walks the path in chunks of
``T`` steps. For each chunk it loads the path's raster positions ``path_index[k, t]``, reads
the shared map ``u`` [B, Di, L] at those positions (a gather, so the K permuted copies never
exist in memory), runs the recurrence as one ``tl.associative_scan`` over (decay, input) pairs
on a [BD, N, T] register tile, and writes ``y`` straight back to the raster positions: an fp32
atomic add into the merged [B, Di, L] output (the K paths of one position land from different
programs), or a plain store into [B, K, Di, L] for ``reduce="none"``.

Memory traffic per call: u is read K times through the gather, delta/B/C once, the merged
output written once; no [B, K*Di, L] copy of u and no [B, K*Di, L] un-merged output.

Backward: the forward pass (when a gradient is needed) also saves the state entering every
segment of SEG steps, [B, K*Di, L/SEG, N] fp32. The backward kernel walks the segments in
reverse, rebuilds the entry state of each chunk of a segment into a small per-program scratch,
then walks those chunks in reverse: it rebuilds each chunk's states from its entry state,
gathers the output gradient along the path, runs the adjoint scan
``g[t] = C[t] dy[t] + a[t+1] g[t+1]`` in reverse, writes d(delta) in visit order, scatter-adds
du to raster positions (fp32 atomics: the K paths meet there), adds dB/dC with fp32 atomics
(the channel blocks of a group meet there) and leaves per-batch partials of dA, dD and
d(delta_bias) summed on the host. Atomics make GPU results reproducible only to rounding.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_LOG2E = 1.4426950408889634

# Every buffer a kernel must fill completely is allocated through this name, so a test can
# swap in NaN-filled allocations and catch elements a kernel fails to write.
_empty = torch.empty


@triton.jit
def _compose(a1, b1, a2, b2):
    # step (a1, b1) then (a2, b2): h -> a2 * (a1 * h + b1) + b2
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _softplus_f32(x):
    # Stable softplus max(x, 0) + log1p(exp(-|x|)). Triton has no log1p, and log(1 + w) keeps
    # only ~1e-7 / w relative accuracy: for the usual dt ~ 1e-2 that is 1e-5, enough to show in
    # gradients. Scaling by w / ((1 + w) - 1) cancels the rounding of 1 + w (Goldberg's trick).
    w = tl.exp(-tl.abs(x))
    one_w = 1.0 + w
    log1p_w = tl.where(one_w == 1.0, w, tl.log(one_w) * (w / (one_w - 1.0)))
    return tl.maximum(x, 0.0) + log1p_w


@triton.jit
def _path_scan_fwd_kernel(
    u_ptr, delta_ptr, a_ptr, b_ptr, c_ptr, d_ptr, bias_ptr, idx_ptr, out_ptr, states_ptr,
    Di, L, K, CH_PER_GROUP, G_PER_PATH, NSEG,
    su_b, su_d, sd_b, sd_d, sb_b, sb_g, sb_n, sc_b, sc_g, sc_n,
    so_b, so_k, so_d,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ATOMIC: tl.constexpr,
    SCALE: tl.constexpr, LOG2E: tl.constexpr, STORE_STATES: tl.constexpr, SEG: tl.constexpr,
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
        if STORE_STATES:
            if t0 % SEG == 0:  # the state entering each segment: what the backward rebuilds from
                st_off = ((b64 * K * Di + ch[:, None]) * NSEG + t0 // SEG) * N + n[None, :]
                tl.store(states_ptr + st_off, h, mask=dmask[:, None])
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


@triton.jit
def _path_scan_bwd_kernel(
    u_ptr, delta_ptr, a_ptr, b_ptr, c_ptr, d_ptr, bias_ptr, idx_ptr, gout_ptr, states_ptr,
    du_ptr, ddelta_ptr, db_ptr, dc_ptr, da_ptr, dd_ptr, dbias_ptr, scratch_ptr,
    Di, L, K, CH_PER_GROUP, G_PER_PATH, NSEG,
    su_b, su_d, sd_b, sd_d, sb_b, sb_g, sb_n, sc_b, sc_g, sc_n,
    sg_b, sg_k, sg_d,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, SINGLE_GROUP: tl.constexpr,
    GSCALE: tl.constexpr, LOG2E: tl.constexpr, SEG: tl.constexpr, CPS: tl.constexpr,
):
    pid_bk = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = pid_bk // K
    k = pid_bk % K
    d = pid_d * BD + tl.arange(0, BD)
    dmask = d < Di
    ch = k * Di + d
    n = tl.arange(0, N)
    grp = k * G_PER_PATH + d // CH_PER_GROUP
    grp0 = k * G_PER_PATH + (pid_d * BD) // CH_PER_GROUP  # the block's group when it has only one
    b64 = b.to(tl.int64)

    A = tl.load(a_ptr + ch[:, None] * N + n[None, :], mask=dmask[:, None], other=0.0).to(tl.float32)
    A2 = A * LOG2E
    Dv = tl.zeros([BD], tl.float32)
    if HAS_D:
        Dv = tl.load(d_ptr + ch, mask=dmask, other=0.0).to(tl.float32)
    bias = tl.zeros([BD], tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + ch, mask=dmask, other=0.0).to(tl.float32)
    tt = tl.arange(0, T)
    first = (tt == 0)[None, None, :]
    last = (tt == T - 1)[None, None, :]
    g_carry = tl.zeros([BD, N], tl.float32)  # a[t0'] * g[t0'] of the chunk after the current one
    dA_acc = tl.zeros([BD, N], tl.float32)
    dD_acc = tl.zeros([BD], tl.float32)
    dbias_acc = tl.zeros([BD], tl.float32)

    pid = pid_bk * tl.num_programs(1) + pid_d
    scratch = scratch_ptr + pid.to(tl.int64) * (CPS * BD * N) + d[:, None] % BD * N + n[None, :]
    for i in range(0, NSEG):
        sgm = NSEG - 1 - i
        # Rebuild the entry state of every chunk of this segment from the segment's saved state.
        h = tl.load(states_ptr + ((b64 * K * Di + ch[:, None]) * NSEG + sgm) * N + n[None, :],
                    mask=dmask[:, None], other=0.0)
        for j in range(0, CPS):
            tl.store(scratch + j * (BD * N), h)
            t = sgm * SEG + j * T + tt
            tmask = t < L
            m2 = dmask[:, None] & tmask[None, :]
            m3 = dmask[:, None, None] & tmask[None, None, :]
            pos = tl.load(idx_ptr + k * L + t, mask=tmask, other=0)
            u = tl.load(u_ptr + b64 * su_b + d[:, None] * su_d + pos[None, :], mask=m2, other=0.0).to(tl.float32)
            dt = tl.load(delta_ptr + b64 * sd_b + ch[:, None] * sd_d + t[None, :], mask=m2, other=0.0).to(tl.float32)
            dt = dt + bias[:, None]
            if SOFTPLUS:
                dt = _softplus_f32(dt)
            Bt = tl.load(b_ptr + b64 * sb_b + grp[:, None, None] * sb_g + n[None, :, None] * sb_n + t[None, None, :],
                         mask=m3, other=0.0).to(tl.float32)
            a = tl.where(m3, tl.exp2(dt[:, None, :] * A2[:, :, None]), 1.0)
            x = tl.where(m3, (dt * u)[:, None, :] * Bt, 0.0)
            sa, sb = tl.associative_scan((a, x), axis=2, combine_fn=_compose)
            h = tl.sum(tl.where(last, sb + sa * h[:, :, None], 0.0), axis=2)
        tl.debug_barrier()  # the scratch states are read back below by other threads of the program
        for j2 in range(0, CPS):
            j = CPS - 1 - j2
            t = sgm * SEG + j * T + tt
            tmask = t < L
            m2 = dmask[:, None] & tmask[None, :]
            m3 = dmask[:, None, None] & tmask[None, None, :]
            pos = tl.load(idx_ptr + k * L + t, mask=tmask, other=0)
            u = tl.load(u_ptr + b64 * su_b + d[:, None] * su_d + pos[None, :], mask=m2, other=0.0).to(tl.float32)
            raw = tl.load(delta_ptr + b64 * sd_b + ch[:, None] * sd_d + t[None, :], mask=m2, other=0.0).to(tl.float32)
            raw = raw + bias[:, None]
            dt = raw
            if SOFTPLUS:
                dt = _softplus_f32(raw)
            bc = grp[:, None, None] * sb_g + n[None, :, None] * sb_n + t[None, None, :]
            Bt = tl.load(b_ptr + b64 * sb_b + bc, mask=m3, other=0.0).to(tl.float32)
            Ct = tl.load(c_ptr + b64 * sc_b + grp[:, None, None] * sc_g + n[None, :, None] * sc_n + t[None, None, :],
                         mask=m3, other=0.0).to(tl.float32)
            a = tl.where(m3, tl.exp2(dt[:, None, :] * A2[:, :, None]), 1.0)
            x = tl.where(m3, (dt * u)[:, None, :] * Bt, 0.0)
            h_in = tl.load(scratch + j * (BD * N))
            sa, sb = tl.associative_scan((a, x), axis=2, combine_fn=_compose)
            hs = sb + sa * h_in[:, :, None]  # the chunk's states, rebuilt from its entry state
            dy = tl.load(gout_ptr + b64 * sg_b + k * sg_k + d[:, None] * sg_d + pos[None, :], mask=m2,
                         other=0.0).to(tl.float32) * GSCALE
            # Adjoint g[t] = C[t] dy[t] + a[t+1] g[t+1]. The decay one step ahead is recomputed from
            # the step size loaded one position later (a register tile cannot be shifted).
            t1 = t + 1
            mn2 = dmask[:, None] & ((t1 < L) & (tt < T - 1))[None, :]
            raw1 = tl.load(delta_ptr + b64 * sd_b + ch[:, None] * sd_d + t1[None, :], mask=mn2, other=0.0).to(tl.float32)
            raw1 = raw1 + bias[:, None]
            dt1 = raw1
            if SOFTPLUS:
                dt1 = _softplus_f32(raw1)
            a1 = tl.where(mn2[:, None, :], tl.exp2(dt1[:, None, :] * A2[:, :, None]), 1.0)
            ra, rb = tl.associative_scan((a1, Ct * dy[:, None, :]), axis=2, combine_fn=_compose, reverse=True)
            g = rb + ra * g_carry[:, :, None]
            ah = hs - x  # a[t] * h[t-1], with no division by a possibly underflowed decay
            ddt = tl.sum(g * (Bt * u[:, None, :] + ah * A[:, :, None]), axis=1)
            du = tl.sum(g * Bt, axis=1) * dt + Dv[:, None] * dy
            dA_acc += tl.sum(g * ah * dt[:, None, :], axis=2)
            dD_acc += tl.sum(tl.where(m2, dy * u, 0.0), axis=1)
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(raw)
            ddt = tl.where(m2, ddt, 0.0)
            dbias_acc += tl.sum(ddt, axis=1)
            tl.store(ddelta_ptr + b64 * sd_b + ch[:, None] * sd_d + t[None, :], ddt.to(ddelta_ptr.dtype.element_ty),
                     mask=m2)
            # K paths visit every position: their du land on the same raster element.
            tl.atomic_add(du_ptr + b64 * su_b + d[:, None] * su_d + pos[None, :], du, mask=m2)
            gB = g * (dt * u)[:, None, :]
            gC = hs * dy[:, None, :]
            if SINGLE_GROUP:  # reduce the block's channels first: one [N, T] atomic per chunk
                off = grp0 * sb_g + n[:, None] * sb_n + t[None, :]
                tl.atomic_add(db_ptr + b64 * sb_b + off, tl.sum(gB, axis=0), mask=tmask[None, :])
                offc = grp0 * sc_g + n[:, None] * sc_n + t[None, :]
                tl.atomic_add(dc_ptr + b64 * sc_b + offc, tl.sum(gC, axis=0), mask=tmask[None, :])
            else:
                tl.atomic_add(db_ptr + b64 * sb_b + bc, gB, mask=m3)
                tl.atomic_add(dc_ptr + b64 * sc_b + grp[:, None, None] * sc_g + n[None, :, None] * sc_n
                              + t[None, None, :], gC, mask=m3)
            g_carry = tl.sum(tl.where(first, g * a, 0.0), axis=2)

    part = b64 * K * Di + ch
    tl.store(da_ptr + part[:, None] * N + n[None, :], dA_acc, mask=dmask[:, None])
    tl.store(dd_ptr + part, dD_acc, mask=dmask)
    tl.store(dbias_ptr + part, dbias_acc, mask=dmask)


# Tiling. Each program is WARPS warps over BD channels with BD * N about 128 states per warp,
# so a thread holds a few states of one channel for T steps in registers; the forward walks
# chunks of T_FWD steps, the backward (more live tiles) chunks of T_BWD. The forward saves the
# state entering every segment of SEG steps, [B, K*Di, L/SEG, N] fp32; the backward rebuilds the
# chunk-entry states of one segment at a time into a per-program scratch of SEG/T_BWD states.
_TILES = {"states_per_warp": 128, "warps": 1, "T_fwd": 8, "T_bwd": 4}


def _plan(dim: int, nstate: int, L: int, tiles: tuple[int, int, int] | None) -> dict:
    warps = _TILES["warps"]
    bd = max(1, min(triton.next_power_of_2(dim), _TILES["states_per_warp"] * warps // nstate))
    cap = max(2, triton.next_power_of_2(L))
    if tiles is not None:
        t_f, t_b, seg = tiles
    else:
        t_f, t_b = min(_TILES["T_fwd"], cap), min(_TILES["T_bwd"], cap)
        seg = max(t_f, t_b, min(cap, 1024, max(64, 8 * nstate)))
    return {"BD": bd, "T_f": t_f, "T_b": t_b, "SEG": seg, "warps": warps, "NSEG": triton.cdiv(L, seg)}


def _check(u, A, B, path_index) -> tuple[int, int]:
    nstate = A.shape[1]
    if nstate & (nstate - 1):
        raise ValueError(f"the Triton path scan needs a power-of-two state size N; got N={nstate}")
    g_per_path = B.shape[1] // path_index.shape[0]
    if u.shape[1] % g_per_path:
        raise ValueError(f"D={u.shape[1]} channels per path do not split into {g_per_path} groups per path")
    return nstate, g_per_path


def _forward(u, delta, A, B, C, path_index, D, delta_bias, delta_softplus, reduce, store_states, tiles):
    batch, dim, L = u.shape
    K = path_index.shape[0]
    nstate, g_per_path = _check(u, A, B, path_index)
    plan = _plan(dim, nstate, L, tiles)
    atomic = reduce != "none"
    if atomic:
        out = torch.zeros(batch, dim, L, device=u.device, dtype=torch.float32)
        so = (out.stride(0), 0, out.stride(1))
    else:
        out = _empty(batch, K, dim, L, device=u.device, dtype=u.dtype)
        so = (out.stride(0), out.stride(1), out.stride(2))
    states = _empty(batch, K * dim, plan["NSEG"], nstate, device=u.device, dtype=torch.float32) \
        if store_states else out  # placeholder pointer when not stored
    grid = (batch * K, triton.cdiv(dim, plan["BD"]))
    _path_scan_fwd_kernel[grid](
        u, delta, A, B, C, D if D is not None else A, delta_bias if delta_bias is not None else A,
        path_index, out, states,
        dim, L, K, dim // g_per_path, g_per_path, plan["NSEG"],
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1),
        B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        *so,
        N=nstate, BD=plan["BD"], T=plan["T_f"], HAS_D=D is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus), ATOMIC=atomic, SCALE=(1.0 / K if reduce == "mean" else 1.0),
        LOG2E=_LOG2E, STORE_STATES=store_states, SEG=plan["SEG"], num_warps=plan["warps"],
    )
    out = out.to(u.dtype) if atomic else out
    return out, (states if store_states else None)


def _backward(gout, u, delta, A, B, C, path_index, D, delta_bias, delta_softplus, reduce, states, tiles):
    batch, dim, L = u.shape
    K = path_index.shape[0]
    nstate, g_per_path = _check(u, A, B, path_index)
    plan = _plan(dim, nstate, L, tiles)
    bd, t_b = plan["BD"], plan["T_b"]
    gout = gout.contiguous()
    sg = (gout.stride(0), 0, gout.stride(1)) if reduce != "none" else (gout.stride(0), gout.stride(1), gout.stride(2))
    f32 = dict(device=u.device, dtype=torch.float32)
    du = torch.zeros(batch, dim, L, **f32)
    ddelta = _empty(batch, K * dim, L, device=u.device, dtype=delta.dtype)  # written once: no fp32 copy
    dB = torch.zeros(B.shape, **f32)
    dC = torch.zeros(C.shape, **f32)
    dA = _empty(batch, K * dim, nstate, **f32)
    dD = _empty(batch, K * dim, **f32)
    dbias = _empty(batch, K * dim, **f32)
    grid = (batch * K, triton.cdiv(dim, bd))
    scratch = _empty(grid[0] * grid[1], plan["SEG"] // t_b, bd, nstate, **f32)
    ch_per_group = dim // g_per_path
    _path_scan_bwd_kernel[grid](
        u, delta, A, B, C, D if D is not None else A, delta_bias if delta_bias is not None else A,
        path_index, gout, states,
        du, ddelta, dB, dC, dA, dD, dbias, scratch,
        dim, L, K, ch_per_group, g_per_path, plan["NSEG"],
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1),
        B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        *sg,
        N=nstate, BD=bd, T=t_b, HAS_D=D is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus), SINGLE_GROUP=(g_per_path == 1 or ch_per_group % bd == 0),
        GSCALE=(1.0 / K if reduce == "mean" else 1.0), LOG2E=_LOG2E, SEG=plan["SEG"], CPS=plan["SEG"] // t_b,
        num_warps=plan["warps"],
    )
    return du, ddelta, dA.sum(0), dB, dC, dD.sum(0), dbias.sum(0)


class _PathScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, path_index, delta_softplus, reduce, tiles):
        out, states = _forward(u, delta, A, B, C, path_index, D, delta_bias, delta_softplus, reduce, True, tiles)
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, path_index, states)
        ctx.delta_softplus, ctx.reduce, ctx.tiles = delta_softplus, reduce, tiles
        return out

    @staticmethod
    def backward(ctx, gout):
        u, delta, A, B, C, D, delta_bias, path_index, states = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, dbias = _backward(gout, u, delta, A, B, C, path_index, D, delta_bias,
                                                      ctx.delta_softplus, ctx.reduce, states, ctx.tiles)
        return (du.to(u.dtype), ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
                None if D is None else dD.to(D.dtype), None if delta_bias is None else dbias.to(delta_bias.dtype),
                None, None, None, None)


def path_scan_triton(
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
    tiles: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Multi-path scan with in-kernel gather/scatter, forward and backward (autograd).

    Shapes as in :func:`ssmkit.ops.path_scan.fused_path_scan`: u [B, Di, L] raster order;
    delta [B, K*Di, L], B/C [B, K*g, N, L] in visit order; A [K*Di, N]; D, delta_bias [K*Di];
    path_index [K, L]. Returns [B, Di, L] (sum/mean) or [B, K, Di, L] (none) in u's dtype.
    N must be a power of two. ``tiles = (T_fwd, T_bwd, SEG)`` (powers of two, SEG a multiple of
    both) overrides the chunk and segment lengths; tests use tiny ones to cross many chunk and
    segment boundaries at tiny sizes.
    """
    if tiles is not None:
        t_f, t_b, seg = (int(v) for v in tiles)
        if any(v < 2 or v & (v - 1) for v in (t_f, t_b, seg)) or seg % t_f or seg % t_b:
            raise ValueError(f"tiles must be powers of two (T_fwd, T_bwd, SEG) >= 2 with SEG a multiple of both; "
                             f"got {tuple(tiles)}")
        tiles = (t_f, t_b, seg)
    args = (u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
            None if D is None else D.contiguous(), None if delta_bias is None else delta_bias.contiguous(),
            path_index.contiguous())
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    if not needs_grad:
        u_, delta_, A_, B_, C_, D_, bias_, idx = args
        return _forward(u_, delta_, A_, B_, C_, idx, D_, bias_, delta_softplus, reduce, False, tiles)[0]
    return _PathScanTriton.apply(*args, bool(delta_softplus), reduce, tiles)
