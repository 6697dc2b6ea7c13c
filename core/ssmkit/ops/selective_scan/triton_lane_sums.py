"""The backward's dB/dC channel sums as a reduce-scatter across the lanes of a warp (``LANE_RS``).

dB[t, n] and dC[t, n] sum over a program's channels, which sit on the lanes of its one warp. tl.sum
would all-reduce (every lane ends with every sum) and then move the sums through shared memory to
the atomics' layout; here each step exchanges half of what a lane holds with PTX shuffles, so
every lane ends with distinct sums and adds them with its own atomics. Used by
:mod:`ssmkit.ops.selective_scan.triton_scan_kernels`; the host decides where the layout allows it
(``_lane_levels`` in :mod:`ssmkit.ops.selective_scan.triton_scan`). Imports only Triton, so
``scripts/sass_histogram.py`` can compile the kernels under another Triton without torch.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _xor_lanes(x, MASK: tl.constexpr):
    # Every register of x from the lane whose id differs in the MASK bits (PTX shfl.sync.bfly).
    # The asm string has to be a literal (no string building in a Triton function), and the lane
    # mask an immediate, hence one branch per mask.
    xi = x.to(tl.int32, bitcast=True)
    if MASK == 1:
        r = tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 1, 31, -1;", "=r,r", [xi], dtype=tl.int32,
                                      is_pure=True, pack=1)
    elif MASK == 2:
        r = tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 2, 31, -1;", "=r,r", [xi], dtype=tl.int32,
                                      is_pure=True, pack=1)
    elif MASK == 4:
        r = tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 4, 31, -1;", "=r,r", [xi], dtype=tl.int32,
                                      is_pure=True, pack=1)
    elif MASK == 8:
        r = tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 8, 31, -1;", "=r,r", [xi], dtype=tl.int32,
                                      is_pure=True, pack=1)
    else:
        r = tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 16, 31, -1;", "=r,r", [xi], dtype=tl.int32,
                                      is_pure=True, pack=1)
    return r.to(x.dtype, bitcast=True)


@triton.jit
def _halves(x):
    # [T, R, C] -> (lo, hi), its two halves along the highest bit of t (of r once T == 1). Both
    # axes live in each thread's registers, so this only renames registers.
    T: tl.constexpr = x.shape[0]
    R: tl.constexpr = x.shape[1]
    C: tl.constexpr = x.shape[2]
    if T > 1:
        y = tl.permute(tl.reshape(x, [2, T // 2, R, C]), (1, 2, 3, 0))
    else:
        y = tl.permute(tl.reshape(x, [1, 2, R // 2, C]), (0, 2, 3, 1))
    return tl.split(y)


@triton.jit
def _exchange_halves(vb, vc, bit, MASK: tl.constexpr):
    # One reduce-scatter step between lane pairs (ids differing in MASK): the lane whose channel
    # bit is set keeps the high halves and receives its partner's high halves; its partner keeps
    # and receives the low ones.
    b_lo, b_hi = _halves(vb)
    c_lo, c_hi = _halves(vc)
    vb = tl.where(bit, b_hi, b_lo) + _xor_lanes(tl.where(bit, b_lo, b_hi), MASK)
    vc = tl.where(bit, c_hi, c_lo) + _xor_lanes(tl.where(bit, c_lo, c_hi), MASK)
    return vb, vc


@triton.jit
def _add_channel_sums(dB_ptr, dC_ptr, vb, vc, bc_base, t0, seqlen, N, stride_n, LEVELS: tl.constexpr):
    """dB[t, n] += sum_d vb[t, n, d] and dC likewise (``stride_n`` elements between states, time
    contiguous), for [T, NP, BD] tiles whose channels sit on
    2**LEVELS lanes (lane bit i = channel bit i, the default layout of one warp) with t and n in
    registers. A reduce-scatter over those lanes: each step halves the values a lane holds, so
    after LEVELS steps each of the 32 lanes owns T*NP/32 of the sums of dB and as many of dC, and
    adds them with one atomic each. tl.sum instead all-reduces (every lane ends with every sum:
    LEVELS shuffles per value) and then moves the sums through shared memory to the atomics'
    layout. The shuffles address lanes, not tensor elements, so this relies on vb/vc arriving in
    that default layout: tests/core/ops/test_selective_scan_sm90_compile.py checks it on the
    installed Triton's sm_90 compile, and the `gpu` tests check dB and dC against the reference on
    every tile the host enables this for (Triton 3.6 on an H100)."""
    T: tl.constexpr = vb.shape[0]
    NP: tl.constexpr = vb.shape[1]
    BD: tl.constexpr = vb.shape[2]
    d3 = tl.arange(0, BD)[None, None, :]
    # code = t * NP + n of each value a lane keeps: the low half's (the same in every lane) plus,
    # per step, the offset of the high half where the lane keeps that.
    code = tl.arange(0, T)[:, None, None] * NP + tl.arange(0, NP)[None, :, None] + d3 * 0
    lane_off = d3 * 0
    for lvl in tl.static_range(LEVELS):
        bit = ((d3 >> lvl) & 1) != 0
        half_off = (vb.shape[0] // 2) * NP if vb.shape[0] > 1 else vb.shape[1] // 2
        vb, vc = _exchange_halves(vb, vc, bit, 1 << lvl)
        code = _halves(code)[0]
        lane_off += tl.where(bit, half_off, 0)
    code += lane_off
    t = t0 + code // NP
    n = code % NP
    offs = bc_base + n.to(tl.int64) * stride_n + t
    ok = (t < seqlen) & (n < N)
    tl.atomic_add(dB_ptr + offs, vb, mask=ok, sem="relaxed")
    tl.atomic_add(dC_ptr + offs, vc, mask=ok, sem="relaxed")
