"""Triton selective scan (Mamba-1 / S6) for CUDA and TRITON_INTERPRET=1: the host side.

Tiling plans, the autograd Function and :func:`selective_scan_triton`. The kernels and their
design (layout, segments, the two-pass backward, the split backward, the path-index mode) are
in :mod:`ssmkit.ops.selective_scan.triton_scan_kernels`; H100 timings in docs/benchmarks.md.
"""

from __future__ import annotations

import functools
import math
import weakref

import torch
import triton
import triton.language as tl

from ssmkit.ops.selective_scan.triton_scan_kernels import (
    _part_carry_kernel,
    _scan_bwd_kernel,
    _scan_bwd_part_kernel,
    _scan_fwd_kernel,
)
from ssmkit.ops.utils import channels_last_map

# Every buffer a kernel fills is allocated through these two names, so a test can swap in
# NaN-filled allocations and catch elements the kernels fail to write.
_empty = torch.empty
_empty_like = torch.empty_like

# Tiling. Each program is `warps` warps over BD channels, with BD * N about `states_per_warp`
# * warps, so each thread keeps a few states of one channel for T steps in registers (the
# forward holds fewer live tiles, so it takes more states per thread). The forward walks chunks
# of T_fwd steps, the backward chunks of T_bwd. The forward keeps the state entering every segment
# of `seg` steps for the backward, which rebuilds the chunk-entry states of one segment at a time
# into a small per-program scratch buffer. Defaults come from the H100 sweeps in
# docs/benchmarks.md (spw_fwd 256 beat 128 by 1.2-1.45x; v5: with 4-byte inputs, spw_bwd 256 at
# N=64 by 1.3x; session 5, with the lane reduce-scatter: T_bwd 4 at N=16 for 4-byte inputs too,
# 4.37 vs 4.76 ms, and for 2-byte inputs at N=64 T_bwd 4 with spw_bwd 256, 16.5 vs 20.4 ms) and
# an H200 (session 6: with today's forward, spw_fwd 128 at N = 16 is 5-9% faster for 4-byte
# inputs, within 1.5% for 2-byte ones, which keep 256; session 7: from N = 64 on, T_bwd 8 with
# pass 2 over two blocks of states and the backward's PTX cvt, 16.5 -> 14.5 ms bf16 fwd+bwd and
# 17.6 -> 15.6 ms fp32).
_DEFAULT_CONFIG = {"spw_fwd": 0, "spw_bwd": 0, "T_fwd": 0, "T_bwd": 0, "warps": 1, "warps_bwd": 0, "seg": 0,
                   "pf": 1, "parts": 1, "regs_bwd": 0, "lane_rs": 1, "asm_cvt": 1, "nsplit_bwd": 0}
_config = dict(_DEFAULT_CONFIG)
_config_key: list = [None]  # the knob settings as a hashable tuple; None after any change
# Mode knobs (not tile sizes): pf 1 loads the next chunk's inputs into registers while the
# current one computes, in the forward and, below N = 64, in both backward passes (at N = 64 the
# extra [T_bwd, 64] B/C tiles cost the backward 10%, docs/benchmarks.md v4); pf 0 loads each chunk
# when it starts. lane_rs sums dB/dC over a backward program's channels with a reduce-scatter
# across the lanes (PTX shuffles, CUDA only, see _lane_levels): 1 on the tiles where the H100
# measured it faster, 2 wherever the layout allows it; 0 uses tl.sum, an all-reduce. asm_cvt 1
# converts 2-byte inputs to float32 with a PTX cvt on CUDA where it measured faster (the forward
# below N = 64, the backward at every N: _asm_upcast), 2 at every N, 0 nowhere (Triton's cast).
# nsplit_bwd 2 runs the backward's pass 2 over two blocks of N/2 states one after the other
# (smaller live tiles), 1 over all N at once, 0 picks (_nsplit).
_MODE_KNOBS = {"pf": (0, 1), "lane_rs": (0, 1, 2), "asm_cvt": (0, 1, 2), "nsplit_bwd": (0, 1, 2)}
# Count knobs (any value >= 0, not only powers of two): parts splits each sequence of the backward
# into that many parts run by separate programs (0: enough parts for `_SPLIT_WAVES` waves of
# programs on the device, 1: no split), after two small phases compute the gradient entering each
# part; regs_bwd caps the backward kernel's registers per thread (ptxas .maxnreg), so more warps
# fit on an SM (0: automatic, see _register_cap; 255: no cap). v5 (docs/benchmarks.md): splitting
# lost 6-15% at every issue shape (phase A costs about a forward), so it is off by default.
_COUNT_KNOBS = ("parts", "regs_bwd")
_SPLIT_WAVES = 4
# Unconstrained, ptxas gives the backward 220-255 registers per thread: 8 one-warp programs per SM.
# Capped at 168 (12 per SM) it spills a little; that pays only when the cap turns a partial second
# wave of programs into one wave (v5: 5.24 vs 5.77 ms fwd+bwd at B=8, D=1536, L=4096, N=16 bf16;
# 5-35% slower where the grid already fits or spans many waves).
_WARPS_PER_SM = 8
_CAPPED_REGS, _CAPPED_WARPS_PER_SM = 168, 12


def set_tile_config(**overrides: int) -> None:
    """Override tiling knobs (spw_fwd, spw_bwd, T_fwd, T_bwd, warps, warps_bwd, seg), the mode
    knobs pf, lane_rs, asm_cvt and nsplit_bwd (_MODE_KNOBS) and the count knobs parts and regs_bwd
    (_COUNT_KNOBS). 0 means automatic: below N = 64 T_fwd = 8 and spw_fwd = 256 (128 for 4-byte
    inputs), from N = 64 on T_fwd = 4 and spw_fwd = 512; T_bwd = 4 (8 from N = 64 on);
    spw_bwd = 128 (256 from N = 64 on); nsplit_bwd = 2 where a backward tile would give a thread
    64 values (_nsplit: from N = 64 on), else 1; seg = 8·N clamped to [64, 1024];
    warps_bwd = warps. No arguments restore the defaults. The GPU benchmark sweeps these."""
    _config_key[0] = None
    if not overrides:
        _config.clear()
        _config.update(_DEFAULT_CONFIG)
        return
    for key, val in overrides.items():
        if key not in _DEFAULT_CONFIG:
            raise ValueError(f"unknown tile knob {key!r}; expected one of {sorted(_DEFAULT_CONFIG)}")
        val = int(val)
        if key in _COUNT_KNOBS:
            if val < 0:
                raise ValueError(f"knob {key}={val} must be >= 0")
            _config[key] = val
            continue
        if key in _MODE_KNOBS:
            if val not in _MODE_KNOBS[key]:
                raise ValueError(f"mode knob {key}={val}; expected one of {_MODE_KNOBS[key]}")
            _config[key] = val
            continue
        if val < 0 or val & (val - 1) or key == "warps" and val == 0:
            raise ValueError(f"tile knob {key}={val} must be a power of two")
        _config[key] = val


# Host time matters: at a 64x64 SS2D map the whole fused forward is ~0.8 ms of GPU work and an
# isolated call spent ~0.4 ms in Python before its kernel reached the GPU (session 4 profile). So
# per-call work that only depends on its arguments' identity or values is cached below.
_INDEX_CACHE: dict = {}


def _int32_index(path_index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The [K, L] path index as contiguous int32 on `device`, converted once per index tensor (the
    strategies hand out one cached tensor per shape): keyed by the tensor's identity and version,
    holding only a weak reference to it."""
    key = (id(path_index), path_index._version, device)
    hit = _INDEX_CACHE.get(key)
    if hit is not None and hit[0]() is path_index:
        return hit[1]
    out = path_index.to(device=device, dtype=torch.int32).contiguous()
    if len(_INDEX_CACHE) > 64:
        _INDEX_CACHE.clear()
    _INDEX_CACHE[key] = (weakref.ref(path_index), out)
    return out


def _as(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """t in `dtype`, contiguous, without a dispatch when it already is (None passes through)."""
    if t is None or (t.dtype == dtype and t.is_contiguous()):
        return t
    return t.to(dtype).contiguous()


def _plan(N: int, dpg: int, maxlen: int, elem_size: int = 2) -> dict:
    """Concrete tile sizes for N states, `dpg` channels per group, the longest sequence and
    inputs of `elem_size` bytes (cached per arguments and knob settings)."""
    if _config_key[0] is None:
        _config_key[0] = tuple(sorted(_config.items()))
    return dict(_plan_cached(N, dpg, maxlen, elem_size, _config_key[0]))


@functools.lru_cache(maxsize=256)
def _plan_cached(N: int, dpg: int, maxlen: int, elem_size: int, knobs: tuple) -> dict:
    cfg = dict(knobs)
    NP = max(2, triton.next_power_of_2(N))
    warps = cfg["warps"]
    warps_b = cfg["warps_bwd"] or warps

    def channels(spw: int, warps: int) -> int:
        bd = max(1, (spw * warps) // NP)
        while dpg % bd:  # a program's channels must share one group (one B/C row)
            bd //= 2
        return bd

    cap = triton.next_power_of_2(max(1, maxlen))
    T_f = cfg["T_fwd"] or (4 if NP >= 64 else 8)
    T_b = cfg["T_bwd"] or (8 if NP >= 64 else 4)
    T_f, T_b = max(2, min(T_f, cap)), max(2, min(T_b, cap))
    seg = cfg["seg"] or min(1024, max(64, 8 * NP))
    seg = max(T_f, T_b, min(seg, cap))
    spw_f = cfg["spw_fwd"] or (512 if NP >= 64 else 128 if elem_size >= 4 else 256)
    spw_b = cfg["spw_bwd"] or (256 if NP >= 64 else 128)
    BD_b = channels(spw_b, warps_b)
    return dict(NP=NP, BD_f=channels(spw_f, warps), BD_b=BD_b,
                warps=warps, warps_b=warps_b, T_f=T_f, T_b=T_b, seg=seg, pf=cfg["pf"],
                pf_b=cfg["pf"] and NP < 64, parts=cfg["parts"], regs_bwd=cfg["regs_bwd"],
                lane_rs=cfg["lane_rs"], asm_cvt=cfg["asm_cvt"],
                nsplit_b=_nsplit(cfg["nsplit_bwd"], T_b, NP, BD_b, warps_b))


def _nsplit(knob: int, T: int, NP: int, BD: int, warps: int) -> int:
    """Blocks of states the backward's pass 2 walks one after the other (1 or 2; a block keeps at
    least 2 states). Automatic: 2 where a thread would hold 64 or more values of each [T, NP, BD]
    tile, which spills. Measured on an H200 (docs/benchmarks.md, session 7) at B=8, D=1536,
    L=4096, N=64, T_bwd 8: fp32 fwd+bwd 17.6 -> 15.6 ms; with tiles of 32 values a thread (N = 64
    at T_bwd 4, or N = 16) two blocks were 8-15% slower."""
    split = knob or (2 if T * NP * BD >= 64 * 32 * warps else 1)
    return split if NP // split >= 2 else 1


def _lane_levels(plan: dict, compute: torch.dtype, device: torch.device) -> int:
    """How many lane bits the backward's dB/dC reduce-scatter spans (0: tl.sum instead).

    It shuffles registers between lanes by id, so it relies on the layout Triton gives a one-warp
    [T, NP, BD] tile: lanes over the channels first (lane bit i = channel bit i, min(BD, 32)
    lanes), then over the states, with t and the rest of n in registers, and it needs enough
    registers to halve once per lane bit. Shuffles are 32-bit PTX, so float32 math on CUDA only
    (the interpreter runs no PTX)."""
    BD, NP, T = plan["BD_b"], plan["NP"] // plan["nsplit_b"], plan["T_b"]  # NP: the states of one block
    if (not plan["lane_rs"] or device.type != "cuda" or compute != torch.float32 or plan["warps_b"] != 1
            or not 2 <= BD <= 32):
        return 0
    # Measured on an H100 (docs/benchmarks.md, session 5): 2-8% faster with T_bwd = 4 at N = 16,
    # 12-45% slower with T_bwd = 8 or N = 64, whose tiles already spill and spill more around the
    # halving steps.
    # Also at N = 64 split into two blocks of 32: 27.1 vs 16.3 ms fwd+bwd in bf16 (session 7).
    if plan["lane_rs"] == 1 and (T > 4 or plan["NP"] >= 64):
        return 0
    levels = BD.bit_length() - 1
    lanes_np = 32 // BD
    if NP < lanes_np or T * (NP // lanes_np) < BD:
        return 0
    return levels


def _asm_upcast(plan: dict, compute: torch.dtype, device: torch.device, backward: bool = False) -> bool:
    """Whether the kernels convert 2-byte inputs to float32 with a PTX cvt (see _upcast in the
    kernels: it keeps Triton 3.6 from shuffling packed 16-bit values between layouts). CUDA only:
    the interpreter runs no PTX. Measured on an H200 (docs/benchmarks.md, session 6): bf16 forward
    0.78 -> 0.59 ms and forward+backward 4.45 -> 3.65 ms at B=8, D=1536, L=4096, N=16. The
    forward goes without it from N = 64 on (asm_cvt 2 forces it): there the forward that saves
    states for the backward went from 162 to 191 registers, a second wave of programs, and
    forward+backward from 16.2-16.7 to 17.3-18.0 ms. The backward converts by cvt at every N
    (session 7: with the two-block pass 2 at N = 64 it compiles like the fp32 kernel)."""
    if not plan["asm_cvt"] or device.type != "cuda" or compute != torch.float32:
        return False
    return plan["asm_cvt"] == 2 or backward or plan["NP"] < 64


def _register_cap(plan: dict, programs: int, device: torch.device) -> int | None:
    """The backward's register cap (None: none) for a grid of `programs` one-warp programs."""
    if plan["regs_bwd"]:
        return None if plan["regs_bwd"] >= 255 else plan["regs_bwd"]
    if device.type != "cuda" or plan["warps_b"] != 1 or plan["NP"] >= 64 or plan["T_b"] > 4:
        return None
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    waves = triton.cdiv(programs, _WARPS_PER_SM * sms)
    capped_waves = triton.cdiv(programs, _CAPPED_WARPS_PER_SM * sms)
    return _CAPPED_REGS if capped_waves < waves and capped_waves == 1 else None


def _split_parts(plan: dict, nseg: int, programs: int, device: torch.device) -> tuple[int, int]:
    """(parts, segments per part) for the backward: ``programs`` is the unsplit grid size."""
    parts = plan["parts"]
    if parts == 0:
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        # One-warp programs, about 8 resident per SM at the backward's register use.
        parts = max(1, triton.cdiv(_SPLIT_WAVES * 8 * sms, max(1, programs)))
    parts = max(1, min(parts, nseg))
    spp = triton.cdiv(nseg, parts)
    return triton.cdiv(nseg, spp), spp


def _merge_paths(y: torch.Tensor, K: int, reduce: str, channels_last: bool) -> torch.Tensor:
    """Per-path outputs in raster order, [S, K*DU, L] (or [S, L, K*DU] when ``channels_last``) ->
    [S, DU, L] ("sum"/"mean") or [S, K, DU, L], channels-last views in the second case."""
    if channels_last:
        S, L, KD = y.shape
        y = y.view(S, L, K, KD // K)
        if reduce == "none":
            return y.permute(0, 2, 3, 1)
        out = y.sum(2).transpose(1, 2)
    else:
        S, KD, L = y.shape
        y = y.view(S, K, KD // K, L)
        if reduce == "none":
            return y
        out = y.sum(1)
    return out / K if reduce == "mean" else out


class _InferenceCtx:
    """Stands in for autograd's ctx when no input needs a gradient."""

    needs_input_grad = (False,) * 15

    def save_for_backward(self, *tensors) -> None:
        pass


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm, Dskip, z, delta_bias, h0, cu_seqlens,
                delta_softplus, reverse, return_final, path_index, path_reduce):
        compute = torch.float64 if u.dtype == torch.float64 else torch.float32
        batch, dim, L = delta.shape  # the scan's channels (K*DU with a path index)
        du_ch = u.shape[1]
        pidx = _int32_index(path_index, u.device) if path_index is not None else None
        G, N = Bm.shape[1], Bm.shape[2]
        dpg = dim // G
        # A channels-last map is read in place ([S, L, DU] storage): each step's channels are then
        # contiguous, so gathers along any path coalesce. Its outputs come back channels-last too.
        path_cl = pidx is not None and channels_last_map(u)
        u = u.transpose(1, 2).contiguous() if path_cl else u.contiguous()
        delta, Bm, Cm = (t.contiguous() for t in (delta, Bm, Cm))
        z = z.contiguous() if z is not None else None
        Ac = _as(A, compute).contiguous()  # the kernels scale it by log2(e)
        Dc = _as(Dskip, compute)
        bias = _as(delta_bias, compute)
        h0c = _as(h0, compute)
        varlen = cu_seqlens is not None
        if varlen:
            cu = cu_seqlens.to(device=u.device, dtype=torch.int32).contiguous()
            nseq = cu.numel() - 1
            maxlen = int((cu[1:] - cu[:-1]).max().item()) if nseq > 0 else 0
        else:
            cu, nseq, maxlen = None, batch, L

        needs_grad = any(ctx.needs_input_grad[:9])
        plan = _plan(N, dpg, maxlen, u.element_size())
        nseg = max(1, triton.cdiv(maxlen, plan["seg"]))

        # per path, raster order, with pidx
        y = _empty(*((batch, L, dim) if path_cl else (batch, dim, L)), device=u.device, dtype=u.dtype)
        hlast = _empty(nseq, dim, N, device=u.device, dtype=compute) if return_final else None
        hsave = _empty(nseq, dim, nseg, N, device=u.device, dtype=compute) if needs_grad else None
        dummy = Ac
        if nseq > 0 and dim > 0:
            _scan_fwd_kernel[(dim // plan["BD_f"], nseq)](
                u, delta, Ac, Bm, Cm,
                Dc if Dc is not None else dummy, z if z is not None else dummy,
                bias if bias is not None else dummy, h0c if h0c is not None else dummy,
                y, hlast if hlast is not None else dummy, hsave if hsave is not None else dummy,
                cu if cu is not None else dummy, pidx if pidx is not None else dummy,
                L, dim, N, G, dpg, nseg, du_ch,
                COMPUTE=tl.float64 if compute == torch.float64 else tl.float32,
                BD=plan["BD_f"], NP=plan["NP"], T=plan["T_f"], KSUB=plan["seg"] // plan["T_f"],
                HAS_D=Dc is not None, HAS_Z=z is not None,
                HAS_BIAS=bias is not None, SOFTPLUS=bool(delta_softplus), HAS_H0=h0c is not None,
                SAVE=needs_grad, STORE_LAST=return_final, REVERSE=bool(reverse), VARLEN=varlen,
                PREFETCH=bool(plan["pf"]), PATH=pidx is not None, PATH_CL=path_cl,
                ASM_CVT=_asm_upcast(plan, compute, u.device), num_warps=plan["warps"],
            )
        elif pidx is not None:
            y.zero_()
        if pidx is not None:
            y = _merge_paths(y, pidx.shape[0], path_reduce, path_cl)
        ctx.save_for_backward(u, delta, Ac, Bm, Cm, Dc, z, bias, hsave, cu, pidx)
        ctx.meta = dict(softplus=bool(delta_softplus), reverse=bool(reverse), plan=plan, nseg=nseg,
                        path_reduce=path_reduce, path_cl=path_cl,
                        nseq=nseq, has_h0=h0 is not None, dtypes=(A.dtype, None if Dskip is None else Dskip.dtype,
                        None if delta_bias is None else delta_bias.dtype, None if h0 is None else h0.dtype))
        if return_final:
            return y, hlast
        return y

    @staticmethod
    def backward(ctx, dy, *rest):
        u, delta, Ac, Bm, Cm, Dc, z, bias, hsave, cu, pidx = ctx.saved_tensors
        m = ctx.meta
        plan = m["plan"]
        dlast = rest[0] if rest else None
        compute = Ac.dtype
        batch, dim, L = delta.shape
        path = pidx is not None
        path_cl = m["path_cl"]
        du_ch = u.shape[2] if path_cl else u.shape[1]  # u was saved as [S, L, DU] when channels-last
        G, N = Bm.shape[1], Bm.shape[2]
        dpg = dim // G
        nseq = m["nseq"]
        dout_shared = path and m["path_reduce"] != "none"
        if dy is None:
            shape = (batch, du_ch, L) if dout_shared else (batch, pidx.shape[0], du_ch, L) if path else (batch, dim, L)
            dy = torch.zeros(shape, device=u.device, dtype=u.dtype)
        elif path and m["path_reduce"] == "mean":
            dy = dy / pidx.shape[0]
        # reduce "none": [S, K, DU, L] per-path outputs, read as [S, K*DU, L] channels
        # ([S, L, K*DU] when channels-last, like the forward's buffer).
        if path_cl:
            dy = dy.transpose(1, 2).contiguous() if dout_shared else dy.permute(0, 3, 1, 2).reshape(batch, L, dim).contiguous()
        else:
            dy = dy.reshape(batch, du_ch if dout_shared else dim, L).contiguous()
        dlast = dlast.to(compute).contiguous() if dlast is not None else None

        BD, NP, T = plan["BD_b"], plan["NP"], plan["T_b"]
        ksub = plan["seg"] // T
        tl_compute = tl.float64 if compute == torch.float64 else tl.float32
        parts, spp = _split_parts(plan, m["nseg"], (dim // BD) * nseq, u.device)
        if path:
            parts, spp = 1, m["nseg"]  # phase A reads dout in visit order; paths keep one part
        # With a path index, each path's du lands at raster positions and the K are summed below.
        if path:
            du = _empty(*((batch, L, dim) if path_cl else (batch, dim, L)), device=u.device, dtype=u.dtype)
        else:
            du = _empty_like(u)
        ddelta = _empty_like(delta)
        dz = _empty_like(z) if z is not None else None
        dB = torch.zeros(Bm.shape, device=u.device, dtype=compute)
        dC = torch.zeros(Cm.shape, device=u.device, dtype=compute)
        dA_part = _empty(parts * nseq, dim, N, device=u.device, dtype=compute)
        dD_part = _empty(parts * nseq, dim, device=u.device, dtype=compute) if Dc is not None else None
        dbias_part = _empty(parts * nseq, dim, device=u.device, dtype=compute) if bias is not None else None
        dh0 = _empty(nseq, dim, N, device=u.device, dtype=compute)
        dummy = Ac
        if nseq > 0 and dim > 0:
            carry_in = dlast
            if parts > 1:
                # Phase A: each part's own contribution to the gradient of its entering state and its
                # total decay; phase B: the gradient of the state leaving each part.
                qloc = _empty(parts, nseq, dim, N, device=u.device, dtype=compute)
                decay = _empty(parts, nseq, dim, N, device=u.device, dtype=compute)
                _scan_bwd_part_kernel[(dim // plan["BD_f"], nseq, parts)](
                    delta, Ac, Cm, z if z is not None else dummy, bias if bias is not None else dummy, dy,
                    cu if cu is not None else dummy, qloc, decay,
                    L, dim, N, G, dpg, spp, plan["seg"],
                    COMPUTE=tl_compute, BD=plan["BD_f"], NP=NP, T=plan["T_f"], HAS_Z=z is not None,
                    HAS_BIAS=bias is not None, SOFTPLUS=m["softplus"], REVERSE=m["reverse"],
                    VARLEN=cu is not None, num_warps=plan["warps"],
                )
                carry_in = _empty(parts, nseq, dim, N, device=u.device, dtype=compute)
                sdn = nseq * dim * N
                _part_carry_kernel[(triton.cdiv(sdn, 1024),)](
                    qloc, decay, dlast if dlast is not None else dummy, carry_in, sdn, parts,
                    BLOCK=1024, HAS_DLAST=dlast is not None, REVERSE=m["reverse"],
                )
            grid = (dim // BD, nseq, parts)
            scratch = _empty(grid[0] * grid[1] * parts * ksub * NP * BD, device=u.device, dtype=compute)
            launch = dict(num_warps=plan["warps_b"])
            cap = _register_cap(plan, grid[0] * grid[1] * grid[2], u.device)
            if cap is not None:
                launch["maxnreg"] = cap
            _scan_bwd_kernel[grid](
                u, delta, Ac, Bm, Cm,
                Dc if Dc is not None else dummy, z if z is not None else dummy,
                bias if bias is not None else dummy, hsave, dy,
                carry_in if carry_in is not None else dummy, cu if cu is not None else dummy, scratch,
                pidx if pidx is not None else dummy,
                du, ddelta, dz if dz is not None else dummy, dB, dC, dA_part,
                dD_part if dD_part is not None else dummy, dbias_part if dbias_part is not None else dummy, dh0,
                L, dim, N, G, dpg, m["nseg"], spp, du_ch,
                COMPUTE=tl_compute,
                BD=BD, NP=NP, T=T, KSUB=ksub, HAS_D=Dc is not None, HAS_Z=z is not None,
                HAS_BIAS=bias is not None, SOFTPLUS=m["softplus"], HAS_DLAST=carry_in is not None,
                REVERSE=m["reverse"], VARLEN=cu is not None, PREFETCH=bool(plan["pf_b"]),
                PATH=path, DOUT_SHARED=dout_shared, PATH_CL=path_cl,
                LANE_RS=_lane_levels(plan, compute, u.device),
                ASM_CVT=_asm_upcast(plan, compute, u.device, backward=True), NSPLIT=plan["nsplit_b"], **launch,
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
        if path_cl:
            du = du.view(batch, L, pidx.shape[0], du_ch).sum(2).transpose(1, 2)
        elif path:
            du = du.view(batch, pidx.shape[0], du_ch, L).sum(1)
        return (du, ddelta, dA, dB.to(Bm.dtype), dC.to(Cm.dtype), dD, dz, dbias, dh0_out,
                None, None, None, None, None, None)


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
    path_index: torch.Tensor | None = None,
    path_reduce: str = "sum",
):
    """Triton selective scan with the semantics of :func:`selective_scan_reference`.

    u, delta, z: [B, D, L]; A: [D, N]; B, C: [B, G, N, L]; D, delta_bias: [D];
    initial_state: [B, D, N] ([S, D, N] with ``cu_seqlens`` [S+1] and batch 1).
    Returns y [B, D, L] in u's dtype and, with ``return_final_state``, the final state
    [B, D, N] (or [S, D, N]) in float32 (float64 for float64 inputs). Differentiable in every
    tensor argument and through the final state. Inputs are not validated here; the public
    :func:`ssmkit.ops.selective_scan.selective_scan` does that.

    With ``path_index`` [K, L] (row k a permutation of range(L): the raster position path k
    visits at each step), this is the multi-path scan of
    :func:`ssmkit.ops.path_scan.fused_path_scan`: u is ONE [B, DU, L] map in raster order that the
    kernels read through the index (no permuted copies), the scan runs over D = K*DU channels
    (path-major; delta, z, B, C in visit order, G a multiple of K), and y comes back in raster
    order merged by ``path_reduce`` ("sum" | "mean": [B, DU, L]; "none": [B, K, DU, L]). Each
    path's output (and du in the backward) is written at its raster positions into a transient
    [B, K*DU, L] buffer that is summed over K. A channels-last map (u a [B, DU, L] view of
    [B, L, DU] storage) is read in place, which coalesces the gathers along any path; y then
    comes back as channels-last views too. Not combined with ``cu_seqlens``.
    """
    if path_index is not None and cu_seqlens is not None:
        raise ValueError("path_index and cu_seqlens cannot be combined; scan packed sequences without a path index")
    if path_reduce not in ("sum", "mean", "none"):
        raise ValueError(f"path_reduce must be 'sum', 'mean' or 'none'; got {path_reduce!r}")
    args = (u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, delta_softplus, reverse,
            return_final_state, path_index, path_reduce)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args[:9]):
        return _SelectiveScanTriton.apply(*args)
    # Nothing to differentiate: skip autograd's Function machinery, a measurable part of the host
    # time of an isolated call (docs/benchmarks.md, session 6); the forward then saves nothing.
    return _SelectiveScanTriton.forward(_InferenceCtx(), *args)


def forward_saved_bytes(batch: int, dim: int, L: int, N: int) -> int:
    """Bytes the forward keeps for the backward beyond its inputs: one fp32 state per segment."""
    plan = _plan(N, dim, L)
    return batch * dim * max(1, math.ceil(L / plan["seg"])) * N * 4


__all__ = ["forward_saved_bytes", "selective_scan_triton", "set_tile_config"]
