"""Triton selective scan (Mamba-1 / S6) kernels, forward and backward, for CUDA (and TRITON_INTERPRET=1).

Layout: u, delta, z, y are [B, D, L] and B, C are [B, G, N, L], all contiguous along L. One
program (one warp by default) owns ``BD`` channels of one sequence and walks its length in
chunks of ``T`` steps, holding [T, N, BD] tiles in registers. With the channels innermost,
Triton's default layout puts the lanes on channels (and on N when BD < 32) and keeps the T steps
inside each thread, so the chunk's recurrence ``h[t] = a[t] * h[t-1] + b[t]``
(a = exp2(dt * A * log2 e), b = dt * u * B) is a ``tl.associative_scan`` that runs sequentially
in registers, and the sum over N is mostly in-thread. The state entering a chunk is folded into
its first step (``b[0] += a[0] * h_in``), so the scan's running product of decays is dead code;
masked tail steps (a = 1, b = 0) are identities.

The forward pass writes y (gated when z is given) once and, when a gradient is needed, the state
entering every segment of ``seg`` steps: [S, D, L/seg, N] float32, the only activation it keeps
beyond its inputs. The backward pass walks the segments in the opposite order. Pass 1 rebuilds
the segment's chunk-entry states into a per-program scratch; pass 2 walks its chunks backwards,
recomputes each chunk's states and runs the adjoint scan ``g[t] = C[t] dy[t] + a[t+1] g[t+1]``;
with ``NSPLIT`` = 2 it does so for two blocks of N/2 states one after the other, which share the
chunk's loads and sums over N (at N = 64 a thread would otherwise hold 64 values of each [8, 64, 4]
tile, and spill).
A register tile cannot be shifted in Triton, so rather than a second exp2 for the shifted decay
a[t+1], the adjoint scans q[t] = a[t] g[t] (``q[t] = a[t] (c[t] + q[t+1])``, unshifted decays)
and carries g[t] = c[t] + q[t+1] beside it in the scan's tuple: 2 exp2 per element in the
backward. dB and dC sum over the channels of a group: each program reduces its BD channels first
and adds one [T, N] partial per chunk with fp32 atomics. On CUDA that reduction is a reduce-scatter
across the channel lanes with PTX shuffles (``LANE_RS``, :mod:`.triton_lane_sums`: each step
halves what a lane holds, so every lane ends with distinct sums to add), where tl.sum would
all-reduce and then move the sums through shared memory: 864 -> 799 instructions per chunk of the
bf16 N = 16 backward loop, 2-8% faster on an H100 at T_bwd = 4 (docs/kernels.md).
dA, dD and d(delta_bias) go to per-sequence partials summed on the host, with no atomics. Every
chunk loop loads the next chunk's inputs into registers before computing the current one: a
program is one warp and an SM holds few of them, so nothing else would hide the HBM latency (the
backward skips this from N = 64 on, where the extra tiles cost more registers than the latency
they hide). On CUDA, 2-byte
inputs are converted to float32 by a PTX cvt right after their loads (``_upcast``, ``ASM_CVT``):
with Triton's cast, Triton 3.6 moved packed 16-bit values between layouts and ran softplus on
replicated copies, and the bf16 kernels were 20-25% slower than the fp32 ones.

With ``path_index`` (the multi-path scan under SS2D/SS3D) the scan runs over K*DU channels, one
path per block of DU, and reads u, one [S, DU, L] map in raster order, through the path's index
row; the output, and du in the backward, are written per path at raster positions and summed
over the K paths on the host. No permuted copy of the map is written. A channels-first map
([S, DU, L]) puts a warp's channels L elements apart, so along a column path every element is
its own 32-byte sector; a channels-last one (``PATH_CL``: [S, L, DU] storage, with [S, L, K*DU]
output buffers) makes a step's channels one contiguous run: 1.6-3.6x faster on an H100.

With ``cu_seqlens`` (batch 1) each packed sequence is its own row of programs: the state never
crosses a boundary, and initial/final states are [S, D, N]. ``reverse`` scans right to left by
walking the chunks backwards and scanning each chunk in reverse; nothing is flipped in memory.
The host side (tiling plans, autograd, the public function) is
:mod:`ssmkit.ops.selective_scan.triton_scan`. H100 timings and the floors they are measured
against: docs/benchmarks.md.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ssmkit.ops.selective_scan.triton_lane_sums import _add_channel_sums


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    # (a1, b1) happens first, then (a2, b2): h -> a2 * (a1 * h + b1) + b2.
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _adjoint_combine(aq1, bq1, ag1, bg1, aq2, bq2, ag2, bg2):
    # Adjoint steps in adjoint order: step t maps q_in (the state gradient handed back from the
    # step after it, already multiplied by that step's decay) to g_t = c_t + q_in and hands on
    # q_t = a_t * g_t. (aq, bq) is the map for q, (ag, bg) the map for g of the latest step.
    # A single step is (a, a*c, 1, c). Written this way every step uses its own decay a_t, so
    # the backward needs no shifted decay a_{t+1} and no extra exp2.
    return aq1 * aq2, aq2 * bq1 + bq2, ag2 * aq1, ag2 * bq1 + bg2


@triton.jit
def _flip_time(x, T: tl.constexpr):
    # Reverse axis 0 of a [T, NP, BD] tile whose time axis lives inside each thread. Written as a
    # sum of selects with -0.0 (x + -0.0 == x exactly), which the compiler folds to register
    # renaming: no instruction is left. tl.associative_scan(reverse=True) instead reverses the
    # lane order with 5 butterfly shuffles per value, even when no lane is on the scan axis
    # (Triton 3.x), which made up most of the backward's instructions.
    i = tl.arange(0, T)
    sel = (i[:, None] + i[None, :]) == T - 1
    return tl.sum(tl.where(sel[:, :, None, None], x[None, :, :, :], -0.0), axis=1)


@triton.jit
def _affine_scan(a, b, T: tl.constexpr, REV: tl.constexpr):
    # States of h[t] = a[t] h[t-1] + b[t] along axis 0 (REV: h[t] = a[t] h[t+1] + b[t]).
    if REV:
        _, h = tl.associative_scan((_flip_time(a, T), _flip_time(b, T)), axis=0, combine_fn=_affine_combine)
        h = _flip_time(h, T)
    else:
        _, h = tl.associative_scan((a, b), axis=0, combine_fn=_affine_combine)
    return h


@triton.jit
def _adjoint_scan(a, c, T: tl.constexpr, REV: tl.constexpr):
    # (q, g) of the adjoint steps g[t] = c[t] + q[t+1], q[t] = a[t] g[t] along axis 0 (REV: from
    # the last step down to the first, the usual adjoint order).
    one = tl.full(a.shape, 1.0, a.dtype)
    if REV:
        ar = _flip_time(a, T)
        cr = _flip_time(c, T)
        _, q, _, g = tl.associative_scan((ar, ar * cr, one, cr), axis=0, combine_fn=_adjoint_combine)
        q = _flip_time(q, T)
        g = _flip_time(g, T)
    else:
        _, q, _, g = tl.associative_scan((a, a * c, one, c), axis=0, combine_fn=_adjoint_combine)
    return q, g


@triton.jit
def _upcast(x, COMPUTE: tl.constexpr, ASM_CVT: tl.constexpr):
    # x in COMPUTE. With ASM_CVT (CUDA, 2-byte inputs, float32 math) the conversion is a PTX cvt
    # that Triton treats as opaque: Triton 3.6 otherwise moves each layout conversion of a loaded
    # tile (lanes over time -> replicated over the state lanes) above arith.extf, to shuffle half
    # the bytes, and then unpacks 16-bit pairs (SHF/PRMT) and runs the elementwise math (softplus)
    # on the replicated copies: 1368 instead of 1000 SASS instructions in the bf16 forward, 2256
    # instead of ~1650 in the backward. The interpreter runs no PTX, so it never gets this.
    if ASM_CVT:
        if x.dtype == tl.bfloat16:
            return tl.inline_asm_elementwise("cvt.f32.bf16 $0, $1;", "=r,h", [x], dtype=tl.float32, is_pure=True,
                                             pack=1)
        elif x.dtype == tl.float16:
            return tl.inline_asm_elementwise("cvt.f32.f16 $0, $1;", "=r,h", [x], dtype=tl.float32, is_pure=True,
                                             pack=1)
    return x.to(COMPUTE)


@triton.jit
def _softplus(x):
    # (softplus(x), its derivative sigmoid(x)). softplus = max(x, 0) + log1p(exp(-|x|)), log1p
    # through Kahan's correction, as tl has no log1p and log(1 + w) loses most digits of dt for the
    # typical w ~ 1e-3. sigmoid(x) = (1 if x >= 0 else w) / (1 + w) reuses w: no second exp.
    w = tl.exp(-tl.abs(x))
    one_w = 1.0 + w
    log1p_w = tl.where(one_w == 1.0, w, tl.log(one_w) * (w / (one_w - 1.0)))
    return tl.maximum(x, 0.0) + log1p_w, tl.where(x >= 0.0, 1.0, w) / one_w


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
    # (dt, d dt / d delta) for delta: [T, BD], bias: [BD], t_ok: [T]; the derivative is None
    # without softplus.
    x = delta
    if HAS_BIAS:
        x = x + bias[None, :]
    dt = x
    ddt_dx = None
    if SOFTPLUS:
        dt, ddt_dx = _softplus(x)
    # Steps outside the sequence get dt = 0: a = exp2(0) = 1 and b = 0, the scan's identity.
    return tl.where(t_ok[:, None], dt, 0.0), ddt_dx


@triton.jit
def _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, row_offs, urow_offs, prow_ptr, pstride, bc_offs, n_ok, k,
                seqlen,
                T: tl.constexpr, HAS_DL: tl.constexpr, HAS_C: tl.constexpr, HAS_Z: tl.constexpr,
                PATH: tl.constexpr):
    # One chunk's inputs in their storage dtype: u, delta, z [T, BD] and B, C [T, NP]. Chunks
    # outside [0, seqlen) load as zeros, so a prefetch past either end is harmless. With PATH,
    # u is read through the path's index row (prow_ptr: raster position of each step) at the
    # channel offsets urow_offs, pstride elements per raster position; everything else is in
    # visit order.
    t_offs = k * T + tl.arange(0, T)
    t_ok = (t_offs < seqlen) & (t_offs >= 0)
    x_offs = row_offs[None, :] + t_offs[:, None]
    if PATH:
        pos = tl.load(prow_ptr + t_offs, mask=t_ok, other=0).to(tl.int64)
        u = tl.load(u_ptr + urow_offs[None, :] + pos[:, None] * pstride, mask=t_ok[:, None], other=0.0)
    else:
        u = tl.load(u_ptr + x_offs, mask=t_ok[:, None], other=0.0)
    dl = u
    if HAS_DL:
        dl = tl.load(delta_ptr + x_offs, mask=t_ok[:, None], other=0.0)
    bc_ptrs = bc_offs[None, :] + t_offs[:, None]
    bc_m = t_ok[:, None] & n_ok[None, :]
    Bt = tl.load(B_ptr + bc_ptrs, mask=bc_m, other=0.0)
    Ct = Bt
    if HAS_C:
        Ct = tl.load(C_ptr + bc_ptrs, mask=bc_m, other=0.0)
    zt = u
    if HAS_Z:
        zt = tl.load(z_ptr + x_offs, mask=t_ok[:, None], other=0.0)
    return u, dl, Bt, Ct, zt


# Tiles are [T, N, BD] with the channels innermost: Triton's default layout then spreads lanes
# over channels (and states, when BD < 32) and keeps the time axis inside each thread, so the
# scan over time runs sequentially in registers and the sum over N stays within a warp.


@triton.jit
def _program_setup(A_ptr, bias_ptr, pid_d, row, start, L, D, N, G, DPG, SXB, SXD, SBB, SBG, SBN,
                   COMPUTE: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, HAS_BIAS: tl.constexpr):
    # What every kernel's program needs about its BD channels (all in one B/C group) and NP
    # states: offsets, the [NP, BD] decay rates A2 (A * log2 e) and A, the step bias, and the row
    # offsets into the [S, D, L] tensors (strides SXB, SXD, 1) and the [S, G, N, L] B/C (strides
    # SBB, SBG, SBN, 1). Contiguous tensors have SXB = D*L and SXD = L; the Mamba layer passes its
    # [D, S*L] projections as they come out of the matmuls (SXB = L, SXD = S*L), with no transpose.
    d0 = pid_d * BD
    d_offs = d0 + tl.arange(0, BD)
    n_offs = tl.arange(0, NP)
    n_ok = n_offs < N
    # A [D, N] in natural-log units, scaled here rather than by a host-side kernel per call.
    A = tl.load(A_ptr + d_offs[None, :] * N + n_offs[:, None], mask=n_ok[:, None], other=0.0)  # [NP, BD]
    A2 = A * 1.4426950408889634  # log2(e): decays as exp2(dt * A2)
    bias = tl.zeros([BD], dtype=COMPUTE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d_offs)
    row_offs = row.to(tl.int64) * SXB + d_offs.to(tl.int64) * SXD + start  # [BD], into u/delta/z/y
    bc_offs = row.to(tl.int64) * SBB + (d0 // DPG).to(tl.int64) * SBG + n_offs.to(tl.int64) * SBN + start  # [NP]
    return d0, d_offs, n_offs, n_ok, A2, A, bias, row_offs, bc_offs


@triton.jit
def _path_rows(row_offs, path_ptr, row, d0, d_offs, L, D, DU, PATH: tl.constexpr, PATH_CL: tl.constexpr):
    # With PATH, the program's BD channels (of D = K*DU) belong to path k = d0 // DU: u is the
    # shared raster map (channel d - k*DU) and row k of the [K, L] index says which raster
    # position each step visits. Returns (u offsets, index row, u elements per raster position,
    # offsets and elements per position of the per-path raster buffers: y, du, dout of "none").
    # Channels-first maps are [S, DU, L] (buffers [S, D, L]); channels-last ones (PATH_CL) are
    # [S, L, DU] (buffers [S, L, D]), so that the lanes of a warp, which sit on consecutive
    # channels, read one position's channels as one contiguous run whatever the path's order.
    # Without PATH, u is addressed like delta.
    if PATH:
        k = d0 // DU
        prow_ptr = path_ptr + k.to(tl.int64) * L
        if PATH_CL:
            urow_offs = row.to(tl.int64) * L * DU + d_offs - k * DU
            brow_offs = row.to(tl.int64) * L * D + d_offs
            u_ps = DU
            b_ps = D
        else:
            urow_offs = (row.to(tl.int64) * DU + d_offs - k * DU) * L
            brow_offs = row_offs
            u_ps = 1
            b_ps = 1
    else:
        urow_offs = row_offs
        prow_ptr = path_ptr
        brow_offs = row_offs
        u_ps = 1
        b_ps = 1
    return urow_offs, prow_ptr, u_ps, brow_offs, b_ps


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, Dskip_ptr, z_ptr, bias_ptr, h0_ptr,
    y_ptr, hlast_ptr, hsave_ptr, cu_ptr, path_ptr,
    L, D, N, G, DPG, NSEG, DU, SXB, SXD, SBB, SBG, SBN,
    COMPUTE: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, KSUB: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, SAVE: tl.constexpr, STORE_LAST: tl.constexpr, REVERSE: tl.constexpr,
    VARLEN: tl.constexpr, PREFETCH: tl.constexpr, PATH: tl.constexpr, PATH_CL: tl.constexpr,
    ASM_CVT: tl.constexpr = False,
):
    pid_d = tl.program_id(0)
    pid_s = tl.program_id(1)
    start, seqlen, row = _seq_bounds(cu_ptr, pid_s, L, VARLEN)
    d0, d_offs, n_offs, n_ok, A2, A_nat, bias, row_offs, bc_offs = _program_setup(
        A_ptr, bias_ptr, pid_d, row, start, L, D, N, G, DPG, SXB, SXD, SBB, SBG, SBN, COMPUTE, BD, NP, HAS_BIAS)
    t_idx = tl.arange(0, T)
    dskip = tl.zeros([BD], dtype=COMPUTE)
    if HAS_D:
        dskip = tl.load(Dskip_ptr + d_offs)

    # [S, D, N] state tensors are indexed by the program's sequence (batch row or packed seq).
    st_offs = (pid_s.to(tl.int64) * D + d_offs[None, :]) * N + n_offs[:, None]  # [NP, BD]
    h = tl.zeros([NP, BD], dtype=COMPUTE)
    if HAS_H0:
        h = tl.load(h0_ptr + st_offs, mask=n_ok[:, None], other=0.0)

    urow_offs, prow_ptr, u_ps, brow_offs, b_ps = _path_rows(row_offs, path_ptr, row, d0, d_offs, L, D, DU, PATH,
                                                            PATH_CL)
    save_offs = ((pid_s.to(tl.int64) * D + d_offs[None, :]) * NSEG) * N + n_offs[:, None]
    last: tl.constexpr = 0 if REVERSE else T - 1
    first_f: tl.constexpr = T - 1 if REVERSE else 0

    nchunks = tl.cdiv(seqlen, T)
    step: tl.constexpr = -1 if REVERSE else 1
    if PREFETCH:
        # Register double buffering: the next chunk's loads are in flight while this one computes,
        # since a program is a single warp and there are few warps per SM to hide HBM latency.
        k0 = nchunks - 1 if REVERSE else nchunks * 0
        pu, pdl, pB, pC, pz = _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, row_offs, urow_offs,
                                          prow_ptr, u_ps, bc_offs, n_ok, k0, seqlen, T, True, True, HAS_Z, PATH)
    for ci in range(0, nchunks):
        if REVERSE:
            k = nchunks - 1 - ci
        else:
            k = ci
        if PREFETCH:
            u_raw, dl_raw, B_raw, C_raw, z_raw = pu, pdl, pB, pC, pz
            pu, pdl, pB, pC, pz = _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, row_offs, urow_offs,
                                              prow_ptr, u_ps, bc_offs, n_ok, k + step, seqlen, T, True, True, HAS_Z,
                                              PATH)
        else:
            u_raw, dl_raw, B_raw, C_raw, z_raw = _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, row_offs,
                                                             urow_offs, prow_ptr, u_ps, bc_offs, n_ok, k, seqlen, T,
                                                             True, True, HAS_Z, PATH)
        if SAVE:
            # The state entering each segment of KSUB chunks (in scan order) is all the backward
            # needs; it rebuilds the states inside a segment itself.
            if REVERSE:
                seg_entry = (k == nchunks - 1) | (k % KSUB == KSUB - 1)
            else:
                seg_entry = k % KSUB == 0
            tl.store(hsave_ptr + save_offs + (k // KSUB) * N, h, mask=n_ok[:, None] & seg_entry)
        t_offs = k * T + t_idx
        t_ok = t_offs < seqlen
        x_offs = row_offs[None, :] + t_offs[:, None]  # [T, BD]
        u = _upcast(u_raw, COMPUTE, ASM_CVT)
        dt, _ = _step_size(_upcast(dl_raw, COMPUTE, ASM_CVT), bias, t_ok, HAS_BIAS, SOFTPLUS)
        Bt = _upcast(B_raw, COMPUTE, ASM_CVT)
        Ct = _upcast(C_raw, COMPUTE, ASM_CVT)

        a = tl.exp2(dt[:, None, :] * A2[None, :, :])  # [T, NP, BD]
        b = (dt * u)[:, None, :] * Bt[:, :, None]
        # Fold the entering state into the chunk's first step (in scan order), so the scan's
        # running product of a is never used and the compiler drops it.
        b = tl.where(t_idx[:, None, None] == first_f, b + a * h[None, :, :], b)
        hh = _affine_scan(a, b, T, REVERSE)
        y = tl.sum(hh * Ct[:, :, None], axis=1)  # [T, BD]
        if HAS_D:
            y += dskip[None, :] * u
        if HAS_Z:
            zt = _upcast(z_raw, COMPUTE, ASM_CVT)
            y = y * (zt * tl.sigmoid(zt))
        if PATH:  # each path's output goes to its raster positions (a per-path raster buffer)
            pos = tl.load(prow_ptr + t_offs, mask=t_ok, other=0).to(tl.int64)
            x_offs = brow_offs[None, :] + pos[:, None] * b_ps
        tl.store(y_ptr + x_offs, y.to(y_ptr.dtype.element_ty), mask=t_ok[:, None])
        h = tl.sum(tl.where(t_idx[:, None, None] == last, hh, 0.0), axis=0)

    if STORE_LAST:
        tl.store(hlast_ptr + st_offs, h, mask=n_ok[:, None])


@triton.jit
def _scan_bwd_part_kernel(
    delta_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, dout_ptr, cu_ptr, qloc_ptr, decay_ptr,
    L, D, N, G, DPG, SEGS_PER_PART, SEGLEN, SXB, SXD, SBB, SBG, SBN,
    COMPUTE: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, T: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr,
    VARLEN: tl.constexpr,
):
    """Split backward, phase A: for each part of a sequence, the gradient reaching the state that
    enters the part from inside the part alone (no gradient arriving from later parts), and the
    part's total decay prod(a) = exp2(A2 * sum(dt)). Outputs [P, S, D, N]. Only dt, C and dy are
    needed (dy = dout * silu'(z)-gate does not depend on y), so this is one exp2 per element and no
    state recompute."""
    pid_d = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_p = tl.program_id(2)
    start, seqlen, row = _seq_bounds(cu_ptr, pid_s, L, VARLEN)
    d0, d_offs, n_offs, n_ok, A2, A_nat, bias, row_offs, bc_offs = _program_setup(
        A_ptr, bias_ptr, pid_d, row, start, L, D, N, G, DPG, SXB, SXD, SBB, SBG, SBN, COMPUTE, BD, NP, HAS_BIAS)
    t_idx = tl.arange(0, T)
    ksub = SEGLEN // T
    nchunks = tl.cdiv(seqlen, T)
    k_lo = pid_p * SEGS_PER_PART * ksub
    k_hi = tl.minimum(k_lo + SEGS_PER_PART * ksub, nchunks)
    first_f: tl.constexpr = T - 1 if REVERSE else 0
    first_g: tl.constexpr = 0 if REVERSE else T - 1
    q = tl.zeros([NP, BD], dtype=COMPUTE)
    sum_dt = tl.zeros([BD], dtype=COMPUTE)
    for ci in range(0, k_hi - k_lo):
        if REVERSE:
            k = k_lo + ci
        else:
            k = k_hi - 1 - ci
        t_offs = k * T + t_idx
        t_ok = t_offs < seqlen
        x_offs = row_offs[None, :] + t_offs[:, None]
        dl = tl.load(delta_ptr + x_offs, mask=t_ok[:, None], other=0.0).to(COMPUTE)
        dt, _ = _step_size(dl, bias, t_ok, HAS_BIAS, SOFTPLUS)
        dy = tl.load(dout_ptr + x_offs, mask=t_ok[:, None], other=0.0).to(COMPUTE)
        if HAS_Z:
            zt = tl.load(z_ptr + x_offs, mask=t_ok[:, None], other=0.0).to(COMPUTE)
            dy = dy * zt * tl.sigmoid(zt)
        Ct = tl.load(C_ptr + bc_offs[None, :] + t_offs[:, None], mask=t_ok[:, None] & n_ok[None, :],
                     other=0.0).to(COMPUTE)
        a = tl.exp2(dt[:, None, :] * A2[None, :, :])  # [T, NP, BD]
        b = a * (dy[:, None, :] * Ct[:, :, None])
        b = tl.where(t_idx[:, None, None] == first_g, b + a * q[None, :, :], b)
        qq = _affine_scan(a, b, T, not REVERSE)
        q = tl.sum(tl.where(t_idx[:, None, None] == first_f, qq, 0.0), axis=0)
        sum_dt += tl.sum(dt, axis=0)
    out = ((pid_p.to(tl.int64) * tl.num_programs(1) + pid_s) * D + d_offs[None, :]) * N + n_offs[:, None]
    tl.store(qloc_ptr + out, q, mask=n_ok[:, None])
    tl.store(decay_ptr + out, tl.exp2(A2 * sum_dt[None, :]), mask=n_ok[:, None])


@triton.jit
def _part_carry_kernel(qloc_ptr, decay_ptr, dlast_ptr, carry_ptr, SDN, P,
                       BLOCK: tl.constexpr, HAS_DLAST: tl.constexpr, REVERSE: tl.constexpr):
    """Split backward, phase B: walk the parts against scan order and hand each one the gradient
    of the state leaving it: carry[p] = qloc[p'] + decay[p'] * carry[p'], p' the part after p in
    scan order (the last part gets d(final state)). [P, S, D, N] buffers, flat over S*D*N."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < SDN
    c = tl.zeros([BLOCK], dtype=qloc_ptr.dtype.element_ty)
    if HAS_DLAST:
        c = tl.load(dlast_ptr + offs, mask=ok, other=0.0)
    for i in range(0, P):
        if REVERSE:
            p = i
        else:
            p = P - 1 - i
        tl.store(carry_ptr + p * SDN + offs, c, mask=ok)
        c = tl.load(qloc_ptr + p * SDN + offs, mask=ok, other=0.0) + \
            tl.load(decay_ptr + p * SDN + offs, mask=ok, other=0.0) * c


@triton.jit
def _state_rows(A_ptr, d_offs, n0, N, NPS: tl.constexpr):
    # The block of NPS states starting at n0: (n offsets, n mask, A2 = A * log2 e, A), [NPS, BD].
    n_offs = n0 + tl.arange(0, NPS)
    n_ok = n_offs < N
    A = tl.load(A_ptr + d_offs[None, :] * N + n_offs[:, None], mask=n_ok[:, None], other=0.0)
    return n_offs, n_ok, A * 1.4426950408889634, A


@triton.jit
def _adjoint_states(dB_ptr, dC_ptr, B_raw, C_raw, h_in, carry, A2, A_nat, u, dt, dtu, dy, t_idx, t_ok,
                    bc_ptrs, bc_m, bc_offs0, n0, k, seqlen, N, SBN,
                    T: tl.constexpr, REVERSE: tl.constexpr, HAS_Z: tl.constexpr, LANE_RS: tl.constexpr,
                    COMPUTE: tl.constexpr, ASM_CVT: tl.constexpr):
    """Pass 2 of the backward for one chunk and one block of states ([NP', BD] tiles, the states
    from n0 on): rebuild the chunk's states from the entry state h_in, run the adjoint scan from
    carry, add the block's dB/dC, and return its shares of the sums over states (y before the
    skip and gate, sum_n g*B, sum_n g*a*h*A: [T, BD]), its dA share [NP', BD] and the gradient of
    the state entering the chunk. y is 0 without z (nothing needs it)."""
    first_f: tl.constexpr = T - 1 if REVERSE else 0
    first_g: tl.constexpr = 0 if REVERSE else T - 1
    Bt = _upcast(B_raw, COMPUTE, ASM_CVT)
    Ct = _upcast(C_raw, COMPUTE, ASM_CVT)
    a = tl.exp2(dt[:, None, :] * A2[None, :, :])  # [T, NP', BD]
    b = dtu[:, None, :] * Bt[:, :, None]
    b_in = tl.where(t_idx[:, None, None] == first_f, b + a * h_in[None, :, :], b)
    hh = _affine_scan(a, b_in, T, REVERSE)
    y = tl.zeros_like(dtu)
    if HAS_Z:
        y = tl.sum(hh * Ct[:, :, None], axis=1)
    # Adjoint: g[t] = C[t] dy[t] + a[next] g[next], scanned against the forward direction. The
    # gradient arriving from later chunks enters at the chunk's last step in scan order (steps past
    # the sequence end are identities).
    c = dy[:, None, :] * Ct[:, :, None]
    c = tl.where(t_idx[:, None, None] == first_g, c + carry[None, :, :], c)
    # q[t] = a[t] g[t] runs on the unshifted decays; the g map tracks g[t] = c[t] + q[next].
    q, g = _adjoint_scan(a, c, T, not REVERSE)
    ah = hh - b  # a[t] * h[t-1], exact without dividing by a
    gah = g * ah
    sum_gB = tl.sum(g * Bt[:, :, None], axis=1)  # [T, BD]
    gahA = tl.sum(gah * A_nat[None, :, :], axis=1)
    dA = tl.sum(gah * dt[:, None, :], axis=0)
    # dB, dC: reduce this program's channels (all in one group), then one atomic per (t, n).
    if LANE_RS > 0:
        _add_channel_sums(dB_ptr, dC_ptr, g * dtu[:, None, :], hh * dy[:, None, :], bc_offs0 + n0 * SBN, k * T,
                          seqlen, N - n0, SBN, LANE_RS)
    else:
        # Partial sums in a [n_blocks, B, G, N, L] buffer instead of these atomics moved more
        # bytes than the atomics cost on the H100 (docs/kernels.md, "Tried and not kept").
        tl.atomic_add(dB_ptr + bc_ptrs, tl.sum(g * dtu[:, None, :], axis=2), mask=bc_m, sem="relaxed")
        tl.atomic_add(dC_ptr + bc_ptrs, tl.sum(hh * dy[:, None, :], axis=2), mask=bc_m, sem="relaxed")
    # Gradient into the state entering this chunk: q at its first step in scan order. Past-the-end
    # steps hand q through unchanged, so the chunk's end in adjoint order holds it even when the
    # chunk is cut short.
    carry = tl.sum(tl.where(t_idx[:, None, None] == first_f, q, 0.0), axis=0)
    return y, sum_gB, gahA, dA, carry


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, Dskip_ptr, z_ptr, bias_ptr, hsave_ptr, dout_ptr,
    dlast_ptr, cu_ptr, scratch_ptr, path_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr, y_ptr,
    L, D, N, G, DPG, NSEG, SEGS_PER_PART, DU, SXB, SXD, SBB, SBG, SBN, SPART,
    COMPUTE: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, KSUB: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr, REVERSE: tl.constexpr, VARLEN: tl.constexpr,
    PREFETCH: tl.constexpr, PATH: tl.constexpr, DOUT_SHARED: tl.constexpr, PATH_CL: tl.constexpr,
    LANE_RS: tl.constexpr = 0, ASM_CVT: tl.constexpr = False, NSPLIT: tl.constexpr = 1,
    STORE_Y: tl.constexpr = False, STORE_DH0: tl.constexpr = True,
):
    pid_d = tl.program_id(0)
    pid_s = tl.program_id(1)
    # Programs along axis 2 split the sequence into parts of SEGS_PER_PART segments, each started
    # from the gradient the split phases A/B computed for the state leaving it (1 part: no split).
    pid_p = tl.program_id(2)
    start, seqlen, row = _seq_bounds(cu_ptr, pid_s, L, VARLEN)
    d0, d_offs, n_offs, n_ok, A2, A_nat, bias, row_offs, bc_offs = _program_setup(
        A_ptr, bias_ptr, pid_d, row, start, L, D, N, G, DPG, SXB, SXD, SBB, SBG, SBN, COMPUTE, BD, NP, HAS_BIAS)
    t_idx = tl.arange(0, T)
    dskip = tl.zeros([BD], dtype=COMPUTE)
    if HAS_D:
        dskip = tl.load(Dskip_ptr + d_offs)

    # Per-(part, sequence) buffers: [P, S, D, N] carries in, [P*S, D(, N)] partial dA/dD/dbias out.
    ps = pid_p.to(tl.int64) * tl.num_programs(1) + pid_s
    prog = ps * tl.num_programs(0) + pid_d
    # Pass 2 walks the states in NSPLIT blocks of NPS, one after the other, so that its [T, NPS, BD]
    # tiles fit in registers at N = 64 (_adjoint_states); block 1 exists with NSPLIT = 2 only. Per
    # block: its states' offsets into the [S, D, N] states, the [P*S, D, N] part buffers, the
    # per-program scratch of chunk-entry states ([KSUB, NP, BD]) and the [S, G, N, L] B/C.
    NPS: tl.constexpr = NP // NSPLIT
    n_offs0, n_ok0, A2_0, A_nat0 = n_offs, n_ok, A2, A_nat
    if NSPLIT == 2:
        n_offs0, n_ok0, A2_0, A_nat0 = _state_rows(A_ptr, d_offs, 0, N, NPS)
        n_offs1, n_ok1, A2_1, A_nat1 = _state_rows(A_ptr, d_offs, NPS, N, NPS)
        st_offs1 = (pid_s.to(tl.int64) * D + d_offs[None, :]) * N + n_offs1[:, None]
        pst_offs1 = (ps * D + d_offs[None, :]) * N + n_offs1[:, None]
        scr_offs1 = (prog * KSUB * NP + n_offs1[:, None]) * BD + tl.arange(0, BD)[None, :]
    st_offs0 = (pid_s.to(tl.int64) * D + d_offs[None, :]) * N + n_offs0[:, None]
    pst_offs0 = (ps * D + d_offs[None, :]) * N + n_offs0[:, None]
    # carry = dLoss/d(state leaving the current chunk in scan order); starts as d(final state),
    # or, for a part, as the gradient of the state leaving that part. dA sums over the steps.
    carry0 = tl.zeros([NPS, BD], dtype=COMPUTE)
    dA0 = tl.zeros([NPS, BD], dtype=COMPUTE)
    if HAS_DLAST:
        carry0 = tl.load(dlast_ptr + pst_offs0, mask=n_ok0[:, None], other=0.0)
    if NSPLIT == 2:
        carry1 = tl.zeros([NPS, BD], dtype=COMPUTE)
        dA1 = tl.zeros([NPS, BD], dtype=COMPUTE)
        if HAS_DLAST:
            carry1 = tl.load(dlast_ptr + pst_offs1, mask=n_ok1[:, None], other=0.0)
    dD_acc = tl.zeros([BD], dtype=COMPUTE)
    dbias_acc = tl.zeros([BD], dtype=COMPUTE)

    urow_offs, prow_ptr, u_ps, brow_offs, b_ps = _path_rows(row_offs, path_ptr, row, d0, d_offs, L, D, DU, PATH,
                                                            PATH_CL)
    # dout: like u (the merged [S, DU, L] gradient, read through the path) when DOUT_SHARED,
    # else per path at raster positions ([S, K*DU, L], reduce "none"), else like delta.
    dout_urow = brow_offs
    dout_ps = b_ps
    if DOUT_SHARED:
        dout_urow = urow_offs
        dout_ps = u_ps
    save_offs = ((pid_s.to(tl.int64) * D + d_offs[None, :]) * NSEG) * N + n_offs[:, None]
    scr_offs = (prog * KSUB * NP + n_offs[:, None]) * BD + tl.arange(0, BD)[None, :]
    first_f: tl.constexpr = T - 1 if REVERSE else 0
    last_f: tl.constexpr = 0 if REVERSE else T - 1
    bc_offs0 = row.to(tl.int64) * SBB + (d0 // DPG).to(tl.int64) * SBG + start  # B/C row of state 0
    bcb_offs0 = bc_offs0 + n_offs0.to(tl.int64) * SBN  # [NPS], B/C rows of each state block
    if NSPLIT == 2:
        bcb_offs1 = bc_offs0 + n_offs1.to(tl.int64) * SBN
    scr_offs0 = (prog * KSUB * NP + n_offs0[:, None]) * BD + tl.arange(0, BD)[None, :]

    nchunks = tl.cdiv(seqlen, T)
    nseg = tl.cdiv(nchunks, KSUB)
    j_lo = pid_p * SEGS_PER_PART
    j_hi = tl.minimum(j_lo + SEGS_PER_PART, nseg)
    for sj in range(0, j_hi - j_lo):
        if REVERSE:
            j = j_lo + sj
        else:
            j = j_hi - 1 - sj
        k0 = j * KSUB
        k1 = tl.minimum(k0 + KSUB, nchunks)
        # Pass 1: from the saved segment-entry state, the state entering each chunk (scan order).
        h = tl.load(hsave_ptr + save_offs + j * N, mask=n_ok[:, None], other=0.0)
        # The scan-order step between chunks; pass 2 walks the other way.
        step1: tl.constexpr = -1 if REVERSE else 1
        if PREFETCH:
            pu, pdl, pB, p_unc, p_unz = _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, row_offs,
                                                    urow_offs, prow_ptr, u_ps, bc_offs, n_ok,
                                                    k1 - 1 if REVERSE else k0, seqlen, T, True, False, False,
                                                    PATH)
        for i in range(0, k1 - k0):
            if REVERSE:
                k = k1 - 1 - i
            else:
                k = k0 + i
            if PREFETCH:
                u_raw, dl_raw, B_raw = pu, pdl, pB
                pu, pdl, pB, p_unc, p_unz = _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, row_offs,
                                                        urow_offs, prow_ptr, u_ps, bc_offs, n_ok, k + step1, seqlen,
                                                        T, True, False, False, PATH)
            else:
                u_raw, dl_raw, B_raw, p_unc, p_unz = _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr,
                                                                 row_offs, urow_offs, prow_ptr, u_ps, bc_offs, n_ok,
                                                                 k, seqlen, T, True, False, False, PATH)
            tl.store(scratch_ptr + scr_offs + (k - k0) * (NP * BD), h)
            t_offs = k * T + t_idx
            t_ok = t_offs < seqlen
            u = _upcast(u_raw, COMPUTE, ASM_CVT)
            dt, _ = _step_size(_upcast(dl_raw, COMPUTE, ASM_CVT), bias, t_ok, HAS_BIAS, SOFTPLUS)
            Bt = _upcast(B_raw, COMPUTE, ASM_CVT)
            a = tl.exp2(dt[:, None, :] * A2[None, :, :])
            b = (dt * u)[:, None, :] * Bt[:, :, None]
            b = tl.where(t_idx[:, None, None] == first_f, b + a * h[None, :, :], b)
            hh = _affine_scan(a, b, T, REVERSE)
            h = tl.sum(tl.where(t_idx[:, None, None] == last_f, hh, 0.0), axis=0)
        tl.debug_barrier()
        # Pass 2: the chunks of the segment against scan order, with the adjoint scan. The loads
        # cover state block 0 (all states when NSPLIT = 1); block 1 loads its own B/C and entry state.
        step2: tl.constexpr = 1 if REVERSE else -1
        if PREFETCH:
            kp = k0 if REVERSE else k1 - 1
            pu, pdl, pB, pC, pz = _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, row_offs, urow_offs,
                                              prow_ptr, u_ps, bcb_offs0, n_ok0, kp, seqlen, T, True, True, HAS_Z,
                                              PATH)
            pdo, p_und, p_unb, p_unc2, p_unz2 = _load_chunk(dout_ptr, dout_ptr, B_ptr, C_ptr, z_ptr, row_offs,
                                                            dout_urow, prow_ptr, dout_ps, bcb_offs0, n_ok0, kp,
                                                            seqlen, T, False, False, False, PATH)
            ph = tl.load(scratch_ptr + scr_offs0 + (kp - k0) * (NP * BD))
        for ci in range(0, k1 - k0):
            if REVERSE:
                k = k0 + ci
            else:
                k = k1 - 1 - ci
            if PREFETCH:
                u_raw, dl_raw, B_raw, C_raw, z_raw, do_raw, h_in = pu, pdl, pB, pC, pz, pdo, ph
                kn = k + step2
                pu, pdl, pB, pC, pz = _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, row_offs, urow_offs,
                                                  prow_ptr, u_ps, bcb_offs0, n_ok0, kn, seqlen, T, True, True,
                                                  HAS_Z, PATH)
                pdo, p_und, p_unb, p_unc2, p_unz2 = _load_chunk(dout_ptr, dout_ptr, B_ptr, C_ptr, z_ptr,
                                                                row_offs, dout_urow, prow_ptr, dout_ps, bcb_offs0,
                                                                n_ok0, kn, seqlen, T, False, False, False, PATH)
                # The scratch holds this segment's chunks only: no read past either end.
                kn_ok = (kn >= k0) & (kn < k1)
                ph = tl.load(scratch_ptr + scr_offs0 + (kn - k0) * (NP * BD), mask=n_ok0[:, None] & kn_ok,
                             other=0.0)
            else:
                u_raw, dl_raw, B_raw, C_raw, z_raw = _load_chunk(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr,
                                                                 row_offs, urow_offs, prow_ptr, u_ps, bcb_offs0,
                                                                 n_ok0, k, seqlen, T, True, True, HAS_Z, PATH)
                do_raw, p_und, p_unb, p_unc2, p_unz2 = _load_chunk(dout_ptr, dout_ptr, B_ptr, C_ptr, z_ptr,
                                                                   row_offs, dout_urow, prow_ptr, dout_ps, bcb_offs0,
                                                                   n_ok0, k, seqlen, T, False, False, False,
                                                                   PATH)
                h_in = tl.load(scratch_ptr + scr_offs0 + (k - k0) * (NP * BD))
            t_offs = k * T + t_idx
            t_ok = t_offs < seqlen
            x_offs = row_offs[None, :] + t_offs[:, None]  # [T, BD]
            u = _upcast(u_raw, COMPUTE, ASM_CVT)
            dt, ddt_dx = _step_size(_upcast(dl_raw, COMPUTE, ASM_CVT), bias, t_ok, HAS_BIAS, SOFTPLUS)
            dout = _upcast(do_raw, COMPUTE, ASM_CVT)
            dtu = dt * u
            # dy = d(pre-gate y): the gate's derivative needs z only; dz needs y, summed below.
            dy = dout
            if HAS_Z:
                zt = _upcast(z_raw, COMPUTE, ASM_CVT)
                sz = tl.sigmoid(zt)
                dy = dout * zt * sz
            if NSPLIT == 2:
                # Block 1's inputs are loaded before block 0 computes, so their latency overlaps it.
                bc_ptrs1 = bcb_offs1[None, :] + t_offs[:, None]
                bc_m1 = t_ok[:, None] & n_ok1[None, :]
                B_raw1 = tl.load(B_ptr + bc_ptrs1, mask=bc_m1, other=0.0)
                C_raw1 = tl.load(C_ptr + bc_ptrs1, mask=bc_m1, other=0.0)
                h_in1 = tl.load(scratch_ptr + scr_offs1 + (k - k0) * (NP * BD))
            bc_ptrs0 = bcb_offs0[None, :] + t_offs[:, None]  # [T, NPS]
            bc_m0 = t_ok[:, None] & n_ok0[None, :]
            y, sum_gB, gahA, dA_k, carry0 = _adjoint_states(
                dB_ptr, dC_ptr, B_raw, C_raw, h_in, carry0, A2_0, A_nat0, u, dt, dtu, dy, t_idx, t_ok, bc_ptrs0,
                bc_m0, bc_offs0, 0, k, seqlen, N, SBN, T, REVERSE, HAS_Z, LANE_RS, COMPUTE, ASM_CVT)
            dA0 += dA_k
            if NSPLIT == 2:
                y1, sum_gB1, gahA1, dA_k1, carry1 = _adjoint_states(
                    dB_ptr, dC_ptr, B_raw1, C_raw1, h_in1, carry1, A2_1, A_nat1, u, dt, dtu, dy, t_idx, t_ok,
                    bc_ptrs1, bc_m1, bc_offs0, NPS, k, seqlen, N, SBN, T, REVERSE, HAS_Z, LANE_RS, COMPUTE,
                    ASM_CVT)
                y += y1
                sum_gB += sum_gB1
                gahA += gahA1
                dA1 += dA_k1
            if HAS_Z:
                if HAS_D:
                    y += dskip[None, :] * u
                dz = dout * y * sz * (1.0 + zt * (1.0 - sz))
                tl.store(dz_ptr + x_offs, dz.to(dz_ptr.dtype.element_ty), mask=t_ok[:, None])
                if STORE_Y:
                    # The gated output again, for a caller that did not keep it (the Mamba layer's
                    # out_proj weight gradient): one store instead of a saved [S, D, L] activation.
                    tl.store(y_ptr + x_offs, (y * zt * sz).to(y_ptr.dtype.element_ty), mask=t_ok[:, None])

            ddt = u * sum_gB + gahA
            du = dt * sum_gB
            if HAS_D:
                du += dskip[None, :] * dy
                dD_acc += tl.sum(dy * u, axis=0)
            if SOFTPLUS:
                ddelta = ddt * ddt_dx
            else:
                ddelta = ddt
            ddelta = tl.where(t_ok[:, None], ddelta, 0.0)
            dbias_acc += tl.sum(ddelta, axis=0)
            if PATH:  # du of each path at its raster positions (a per-path buffer), summed on the host
                pos = tl.load(prow_ptr + t_offs, mask=t_ok, other=0).to(tl.int64)
                tl.store(du_ptr + brow_offs[None, :] + pos[:, None] * b_ps, du.to(du_ptr.dtype.element_ty),
                         mask=t_ok[:, None])
            else:
                tl.store(du_ptr + x_offs, du.to(du_ptr.dtype.element_ty), mask=t_ok[:, None])
            tl.store(ddelta_ptr + x_offs, ddelta.to(ddelta_ptr.dtype.element_ty), mask=t_ok[:, None])

        tl.debug_barrier()

    # Only the part holding the scan's first step sees the initial state.
    if REVERSE:
        holds_start = pid_p == tl.maximum(nseg - 1, 0) // SEGS_PER_PART
    else:
        holds_start = pid_p == 0
    # dA, dD and d(delta_bias) of this (part, sequence): rows of SPART values per channel in one
    # [P*S, D, SPART] partials buffer (dA at 0..N-1; the host passes dD and dbias pointers offset
    # into the same rows), summed over P*S by one host call.
    s_offs = (ps * D + d_offs).to(tl.int64) * SPART
    if STORE_DH0:
        tl.store(dh0_ptr + st_offs0, carry0, mask=n_ok0[:, None] & holds_start)
    tl.store(dA_ptr + s_offs[None, :] + n_offs0[:, None], dA0, mask=n_ok0[:, None])
    if NSPLIT == 2:
        if STORE_DH0:
            tl.store(dh0_ptr + st_offs1, carry1, mask=n_ok1[:, None] & holds_start)
        tl.store(dA_ptr + s_offs[None, :] + n_offs1[:, None], dA1, mask=n_ok1[:, None])
    if HAS_D:
        tl.store(dD_ptr + s_offs, dD_acc)
    if HAS_BIAS:
        tl.store(dbias_ptr + s_offs, dbias_acc)
