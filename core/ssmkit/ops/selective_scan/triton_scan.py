"""Triton selective scan (Mamba-1 / S6) for CUDA and TRITON_INTERPRET=1: the host side.

The tile configuration (:class:`TileConfig`, an immutable value), the tiling plan of one call
(:func:`_plan`, cached by its arguments), the two kernel launches (:func:`scan_forward`,
:func:`scan_backward`, which the fused Mamba layer of :mod:`.triton_mamba_inner` calls too), the
autograd Function and :func:`selective_scan_triton`. The kernels and their design (layout,
segments, the two-pass backward, the split backward, the path-index mode) are in
:mod:`ssmkit.ops.selective_scan.triton_scan_kernels`; the measurements behind the defaults are
in docs/kernels.md ("Tile defaults") and docs/benchmarks.md.

Layouts. u, delta, z, y and their gradients are [S, D, L] with the time axis contiguous and any
common (batch, channel) strides: a contiguous tensor, or the [D, S*L] output of a matmul viewed
as [S, D, L] (what the Mamba layer makes, so nothing is transposed). B and C are [S, G, N, L]
with the time axis contiguous and strides shared by the two. Anything else is made contiguous.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import weakref
from collections.abc import Iterator
from contextvars import ContextVar

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

# Every buffer a kernel fills is allocated through these names, so a test can swap in NaN-filled
# allocations and catch elements the kernels fail to write.
_empty = torch.empty
_empty_like = torch.empty_like
_empty_strided = torch.empty_strided

# Knob kinds, for validation: tile sizes are powers of two; mode knobs take a few values; count
# knobs take any value >= 0.
_POW2_KNOBS = ("spw_fwd", "spw_bwd", "T_fwd", "T_bwd", "warps", "warps_bwd", "seg")
_MODE_KNOBS = {"pf": (0, 1), "lane_rs": (0, 1, 2), "asm_cvt": (0, 1, 2), "nsplit_bwd": (0, 1, 2)}
_COUNT_KNOBS = ("parts", "regs_bwd", "occupancy")


@dataclasses.dataclass(frozen=True)
class TileConfig:
    """How the Triton scan tiles its work; 0 means automatic for every knob that allows it.

    Each program is ``warps`` warps over BD channels, with BD * N about ``spw_*`` (states per
    warp) * warps, so each thread keeps a few states of one channel for T steps in registers.
    The forward walks chunks of ``T_fwd`` steps, the backward chunks of ``T_bwd``; the forward
    keeps the state entering every segment of ``seg`` steps for the backward.

    Automatic values (measured on an H100 and an H200, docs/kernels.md "Tile defaults"): below
    N = 64, T_fwd 8 and spw_fwd 256 for 2-byte inputs (128 for 4-byte ones), T_bwd 4 and spw_bwd
    128; from N = 64 on, T_fwd 4, spw_fwd 512, T_bwd 8, spw_bwd 256 and the backward's pass 2
    over two blocks of N/2 states (``nsplit_bwd``); seg = 8·N clamped to [64, 1024];
    warps_bwd = warps.

    Mode knobs: ``pf`` 1 loads the next chunk's inputs into registers while the current one
    computes (the backward only below N = 64); ``lane_rs`` sums dB/dC over a backward program's
    channels with a reduce-scatter across lanes (1 where measured faster, 2 wherever the layout
    allows, 0 never); ``asm_cvt`` converts 2-byte inputs by PTX cvt (1 where measured faster,
    2 everywhere, 0 never); ``nsplit_bwd`` 1 or 2 blocks of states in the backward's pass 2.

    Count knobs: ``parts`` splits each sequence of the backward into that many parts run by
    separate programs (0: enough for a few waves; 1: no split, the default, since the split lost
    6-15% at long sequences); ``regs_bwd`` caps the backward's registers per thread (0: the
    automatic cap of :func:`_register_cap`; 255: none); ``occupancy`` is the number of forward
    programs per multiprocessor the channel split aims for at small B·D (0: ``PROGRAMS_PER_SM``;
    1: one per multiprocessor, which leaves all but tiny problems alone): forward programs then
    get fewer channels, down to 4. The backward keeps its tiles unless its grid would hold fewer
    programs than there are multiprocessors; it then takes 2 channels per program.
    """

    spw_fwd: int = 0
    spw_bwd: int = 0
    T_fwd: int = 0
    T_bwd: int = 0
    warps: int = 1
    warps_bwd: int = 0
    seg: int = 0
    pf: int = 1
    parts: int = 1
    regs_bwd: int = 0
    lane_rs: int = 1
    asm_cvt: int = 1
    nsplit_bwd: int = 0
    occupancy: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            key, val = f.name, getattr(self, f.name)
            if not isinstance(val, int) or isinstance(val, bool):
                raise TypeError(f"tile knob {key}={val!r} must be an int")
            if key in _COUNT_KNOBS:
                if val < 0:
                    raise ValueError(f"knob {key}={val} must be >= 0")
            elif key in _MODE_KNOBS:
                if val not in _MODE_KNOBS[key]:
                    raise ValueError(f"mode knob {key}={val}; expected one of {_MODE_KNOBS[key]}")
            elif val < 0 or val & (val - 1) or (key == "warps" and val == 0):
                raise ValueError(f"tile knob {key}={val} must be a power of two")

    def replace(self, **overrides: int) -> TileConfig:
        """A copy with ``overrides`` applied (names checked, values validated)."""
        names = {f.name for f in dataclasses.fields(self)}
        for key in overrides:
            if key not in names:
                raise ValueError(f"unknown tile knob {key!r}; expected one of {sorted(names)}")
        return dataclasses.replace(self, **{k: int(v) for k, v in overrides.items()})


DEFAULT_TILES = TileConfig()
# The configuration calls use when none is passed: an immutable value per context, replaced (not
# mutated) by set_tile_config / tile_config, so a plan cached under one value never goes stale.
_CURRENT_TILES: ContextVar[TileConfig] = ContextVar("ssmkit_scan_tiles", default=DEFAULT_TILES)

# Forward programs per multiprocessor the channel split aims for (occupancy 0). The one-warp
# programs are latency-bound: with fewer than ~6 resident per SM (1.5 per scheduler) the chunk
# loop's loads and scans find nothing else to hide behind; halving the channels per program down
# to 4 made the forward 5-15% faster at B·D <= 6144 on an H200. The backward is different: 4
# channels per program (N = 16) were 25-55% slower than 8 at B·D = 6144, 2 were 7-28% faster than
# 4 at B·D = 768 (docs/kernels.md), so it only drops to 2 when its grid has fewer programs than
# there are multiprocessors.
PROGRAMS_PER_SM = 6
_MIN_BD_FWD, _MIN_BD_BWD = 4, 2
_SPLIT_WAVES = 4
# Unconstrained, ptxas gives the backward 220-255 registers per thread: 8 one-warp programs per SM.
# Capped at 168 (12 per SM) it spills a little; that pays only when the cap turns a partial second
# wave of programs into one wave (5.24 vs 5.77 ms fwd+bwd at B=8, D=1536, L=4096, N=16 bf16 on an
# H100; 5-35% slower where the grid already fits or spans many waves).
_WARPS_PER_SM = 8
_CAPPED_REGS, _CAPPED_WARPS_PER_SM = 168, 12


def current_tiles() -> TileConfig:
    """The tile configuration calls without an explicit ``tiles`` use."""
    return _CURRENT_TILES.get()


def set_tile_config(**overrides: int) -> None:
    """Make the current configuration ``current_tiles().replace(**overrides)``; no arguments
    restore :data:`DEFAULT_TILES`. Knobs as in :class:`TileConfig`. Prefer :func:`tile_config`,
    which restores the previous value on exit."""
    _CURRENT_TILES.set(_CURRENT_TILES.get().replace(**overrides) if overrides else DEFAULT_TILES)


@contextlib.contextmanager
def tile_config(**overrides: int) -> Iterator[TileConfig]:
    """Run the block under ``current_tiles().replace(**overrides)``, then restore the previous value."""
    token = _CURRENT_TILES.set(_CURRENT_TILES.get().replace(**overrides))
    try:
        yield _CURRENT_TILES.get()
    finally:
        _CURRENT_TILES.reset(token)


# Host time matters: at a 64x64 SS2D map the whole fused forward is ~0.8 ms of GPU work and an
# isolated call spent ~0.4 ms in Python before its kernel reached the GPU. So per-call work that
# only depends on its arguments' identity or values is cached below.
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


@functools.lru_cache(maxsize=16)
def _sm_count(device: torch.device) -> int:
    """Multiprocessors of a CUDA device; 0 elsewhere (the interpreter: no occupancy to aim for)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 0


def _alloc_as(ref: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised buffer of ``ref``'s shape and strides (``ref`` dense), in ``dtype``."""
    dtype = dtype or ref.dtype
    if ref.is_contiguous():
        return _empty(ref.shape, device=ref.device, dtype=dtype)
    return _empty_strided(ref.shape, ref.stride(), device=ref.device, dtype=dtype)


def _as(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """t in `dtype`, contiguous, without a dispatch when it already is (None passes through)."""
    if t is None or (t.dtype == dtype and t.is_contiguous()):
        return t
    return t.to(dtype).contiguous()


def _dense(t: torch.Tensor) -> bool:
    """Whether ``t`` covers its storage span without gaps or overlaps (a permutation of a contiguous
    tensor), so a buffer allocated with its strides has exactly its elements."""
    dims = sorted((s, n) for s, n in zip(t.stride(), t.shape) if n > 1)
    want = 1
    for stride, size in dims:
        if stride != want:
            return False
        want *= size
    return True


def _shared_strides(*ts: torch.Tensor | None) -> tuple[int, ...] | None:
    """The strides the given tensors share, if their last axis is contiguous and they are dense;
    else None (the caller makes them contiguous)."""
    first = next(t for t in ts if t is not None)
    s = first.stride()
    if first.shape[-1] > 1 and s[-1] != 1:
        return None
    for t in ts:
        if t is not None and (t.stride() != s or not _dense(t)):
            return None
    return s


def _plan(N: int, dpg: int, maxlen: int, elem_size: int = 2, tiles: TileConfig | None = None, rows: int = 0,
          sms: int = 0) -> dict:
    """Concrete tile sizes for N states, `dpg` channels per group, the longest sequence, inputs of
    `elem_size` bytes, ``rows`` = sequences x channels and ``sms`` multiprocessors (0: no occupancy
    rule), under ``tiles`` (default: :func:`current_tiles`). Cached per arguments."""
    return dict(_plan_cached(N, dpg, maxlen, elem_size, tiles or _CURRENT_TILES.get(), rows, sms))


@functools.lru_cache(maxsize=512)
def _plan_cached(N: int, dpg: int, maxlen: int, elem_size: int, cfg: TileConfig, rows: int, sms: int) -> dict:
    NP = max(2, triton.next_power_of_2(N))
    warps = cfg.warps
    warps_b = cfg.warps_bwd or warps
    target = (cfg.occupancy or PROGRAMS_PER_SM) * sms if rows and sms else 0

    def channels(spw: int, warps: int) -> int:
        bd = max(1, (spw * warps) // NP)
        while dpg % bd:  # a program's channels must share one group (one B/C row)
            bd //= 2
        return bd

    BD_f = channels(cfg.spw_fwd or (512 if NP >= 64 else 128 if elem_size >= 4 else 256), warps)
    BD_b = channels(cfg.spw_bwd or (256 if NP >= 64 else 128), warps_b)
    # Fewer channels per program where the grid would leave multiprocessors short of warps.
    while target and BD_f > _MIN_BD_FWD and rows // BD_f < target:
        BD_f //= 2
    if sms and rows and rows // BD_b < sms:
        BD_b = min(BD_b, _MIN_BD_BWD)

    cap = triton.next_power_of_2(max(1, maxlen))
    T_f = cfg.T_fwd or (4 if NP >= 64 else 8)
    T_b = cfg.T_bwd or (8 if NP >= 64 else 4)
    T_f, T_b = max(2, min(T_f, cap)), max(2, min(T_b, cap))
    seg = cfg.seg or min(1024, max(64, 8 * NP))
    seg = max(T_f, T_b, min(seg, cap))
    return dict(NP=NP, BD_f=BD_f, BD_b=BD_b,
                warps=warps, warps_b=warps_b, T_f=T_f, T_b=T_b, seg=seg, pf=cfg.pf,
                pf_b=bool(cfg.pf) and NP < 64, parts=cfg.parts, regs_bwd=cfg.regs_bwd,
                lane_rs=cfg.lane_rs, asm_cvt=cfg.asm_cvt,
                nsplit_b=_nsplit(cfg.nsplit_bwd, T_b, NP, BD_b, warps_b))


def _nsplit(knob: int, T: int, NP: int, BD: int, warps: int) -> int:
    """Blocks of states the backward's pass 2 walks one after the other (1 or 2; a block keeps at
    least 2 states). Automatic: 2 where a thread would hold 64 or more values of each [T, NP, BD]
    tile, which spills. Measured on an H200 at B=8, D=1536, L=4096, N=64, T_bwd 8: fp32 fwd+bwd
    17.6 -> 15.6 ms; with tiles of 32 values a thread (N = 64 at T_bwd 4, or N = 16) two blocks
    were 8-15% slower (docs/kernels.md)."""
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
    # Measured on an H100: 2-8% faster with T_bwd = 4 at N = 16, 12-45% slower with T_bwd = 8 or
    # N = 64, whose tiles already spill and spill more around the halving steps; at N = 64 split
    # into two blocks of 32 too (27.1 vs 16.3 ms fwd+bwd in bf16 on an H200, docs/kernels.md).
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
    the interpreter runs no PTX. Measured on an H200: bf16 forward 0.78 -> 0.59 ms and
    forward+backward 4.45 -> 3.65 ms at B=8, D=1536, L=4096, N=16. The forward goes without it
    from N = 64 on (asm_cvt 2 forces it): there the forward that saves states for the backward
    went from 162 to 191 registers, a second wave of programs, and forward+backward from
    16.2-16.7 to 17.3-18.0 ms. The backward converts by cvt at every N (with the two-block pass 2
    at N = 64 it compiles like the fp32 kernel)."""
    if not plan["asm_cvt"] or device.type != "cuda" or compute != torch.float32:
        return False
    return plan["asm_cvt"] == 2 or backward or plan["NP"] < 64


def _register_cap(plan: dict, programs: int, device: torch.device) -> int | None:
    """The backward's register cap (None: none) for a grid of `programs` one-warp programs."""
    if plan["regs_bwd"]:
        return None if plan["regs_bwd"] >= 255 else plan["regs_bwd"]
    if device.type != "cuda" or plan["warps_b"] != 1 or plan["NP"] >= 64 or plan["T_b"] > 4:
        return None
    sms = _sm_count(device)
    waves = triton.cdiv(programs, _WARPS_PER_SM * sms)
    capped_waves = triton.cdiv(programs, _CAPPED_WARPS_PER_SM * sms)
    return _CAPPED_REGS if capped_waves < waves and capped_waves == 1 else None


def _split_parts(plan: dict, nseg: int, programs: int, device: torch.device) -> tuple[int, int]:
    """(parts, segments per part) for the backward: ``programs`` is the unsplit grid size."""
    parts = plan["parts"]
    if parts == 0:
        sms = _sm_count(device) or 1
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


@dataclasses.dataclass
class ScanProblem:
    """One scan's sizes, layout and options, shared by its forward and backward launches.

    ``sx`` = (batch, channel) strides of every [S, D, L] tensor (u, delta, z, y and their
    gradients; time stride 1); ``sb`` = (batch, group, state) strides of B, C and their fp32
    gradient buffers. ``cu`` is int32 cu_seqlens or None; ``pidx`` the int32 path index or None.
    """

    batch: int
    dim: int
    L: int
    N: int
    G: int
    nseq: int
    maxlen: int
    du_ch: int
    sx: tuple[int, int]
    sb: tuple[int, int, int]
    compute: torch.dtype
    plan: dict
    nseg: int
    softplus: bool
    reverse: bool
    cu: torch.Tensor | None = None
    pidx: torch.Tensor | None = None
    path_cl: bool = False
    path_reduce: str = "sum"

    @property
    def tl_compute(self):
        return tl.float64 if self.compute == torch.float64 else tl.float32


def make_problem(u: torch.Tensor, delta: torch.Tensor, Bm: torch.Tensor, compute: torch.dtype,
                 softplus: bool, reverse: bool, cu: torch.Tensor | None = None, pidx: torch.Tensor | None = None,
                 path_cl: bool = False, path_reduce: str = "sum", tiles: TileConfig | None = None) -> ScanProblem:
    """The :class:`ScanProblem` of inputs already in their final layout (``delta`` gives the
    [S, D, L] strides, ``Bm`` the [S, G, N, L] ones)."""
    batch, dim, L = delta.shape
    G, N = Bm.shape[1], Bm.shape[2]
    if cu is not None:
        nseq = cu.numel() - 1
        maxlen = int((cu[1:] - cu[:-1]).max().item()) if nseq > 0 else 0
    else:
        nseq, maxlen = batch, L
    # The path-index mode keeps its measured tiles (its channel runs were tuned for them): no
    # occupancy rule there.
    rows = 0 if pidx is not None else nseq * dim
    plan = _plan(N, dim // G, maxlen, u.element_size(), tiles, rows, _sm_count(u.device))
    sx = (delta.stride(0), delta.stride(1))
    sb = (Bm.stride(0), Bm.stride(1), Bm.stride(2))
    du_ch = u.shape[2] if path_cl else u.shape[1]
    return ScanProblem(batch, dim, L, N, G, nseq, maxlen, du_ch, sx, sb, compute, plan,
                       max(1, triton.cdiv(maxlen, plan["seg"])), bool(softplus), bool(reverse), cu, pidx, path_cl,
                       path_reduce)


def scan_forward(p: ScanProblem, u, delta, A, Bm, Cm, Dskip, z, bias, h0, y, hlast, hsave) -> None:
    """Launch the forward kernel: y (and hlast, hsave when given) from the inputs. A, Dskip, bias
    and h0 are contiguous in the compute dtype; y has the strides ``p.sx`` (per path, raster
    order, with a path index)."""
    if p.nseq == 0 or p.dim == 0:
        return
    plan = p.plan
    dummy = A
    _scan_fwd_kernel[(p.dim // plan["BD_f"], p.nseq)](
        u, delta, A, Bm, Cm,
        Dskip if Dskip is not None else dummy, z if z is not None else dummy,
        bias if bias is not None else dummy, h0 if h0 is not None else dummy,
        y, hlast if hlast is not None else dummy, hsave if hsave is not None else dummy,
        p.cu if p.cu is not None else dummy, p.pidx if p.pidx is not None else dummy,
        p.L, p.dim, p.N, p.G, p.dim // p.G, p.nseg, p.du_ch, *p.sx, *p.sb,
        COMPUTE=p.tl_compute,
        BD=plan["BD_f"], NP=plan["NP"], T=plan["T_f"], KSUB=plan["seg"] // plan["T_f"],
        HAS_D=Dskip is not None, HAS_Z=z is not None,
        HAS_BIAS=bias is not None, SOFTPLUS=p.softplus, HAS_H0=h0 is not None,
        SAVE=hsave is not None, STORE_LAST=hlast is not None, REVERSE=p.reverse, VARLEN=p.cu is not None,
        PREFETCH=bool(plan["pf"]), PATH=p.pidx is not None, PATH_CL=p.path_cl,
        ASM_CVT=_asm_upcast(plan, p.compute, u.device), num_warps=plan["warps"],
    )


def scan_backward(p: ScanProblem, u, delta, A, Bm, Cm, Dskip, z, bias, hsave, dy, dlast,
                  du, ddelta, dz, dB, dC, y_out=None, need_dh0: bool = True):
    """Launch the backward: fills du, ddelta, dz (when z is given) and adds into dB, dC (fp32,
    zeroed by the caller, strides ``p.sb``); with ``y_out`` (z given) it also writes the gated
    output again. ``dy`` has the strides ``p.sx`` (or, with a path index and a merged output, the
    map's). Returns (dA [D, N], dD [D] or None, dbias [D] or None, dh0 [S, D, N] or None), in the
    compute dtype."""
    plan = p.plan
    dim, N, nseq, device = p.dim, p.N, p.nseq, u.device
    compute = p.compute
    BD, NP, T = plan["BD_b"], plan["NP"], plan["T_b"]
    ksub = plan["seg"] // T
    path = p.pidx is not None
    parts, spp = _split_parts(plan, p.nseg, (dim // BD) * nseq, device)
    if path:
        parts, spp = 1, p.nseg  # phase A reads dout in visit order; paths keep one part
    # dA, dD and d(delta_bias) as per-(part, sequence) partials in one buffer, summed by one call.
    width = N + (Dskip is not None) + (bias is not None)
    partial = _empty(parts * nseq, dim, width, device=device, dtype=compute)
    dA_part = partial[..., :N]
    dD_part = partial[..., N] if Dskip is not None else None
    dbias_part = partial[..., width - 1] if bias is not None else None
    dh0 = _empty(nseq, dim, N, device=device, dtype=compute) if need_dh0 else None
    if nseq == 0 or dim == 0:
        for t in (du, ddelta, dz, partial):
            if t is not None:
                t.zero_()
        if dh0 is not None:
            dh0.copy_(dlast) if dlast is not None else dh0.zero_()
        return _split_partials(partial, N, Dskip, bias) + (dh0,)
    dummy = A
    carry_in = dlast
    dout_shared = path and p.path_reduce != "none"
    if parts > 1:
        # Phase A: each part's own contribution to the gradient of its entering state and its
        # total decay; phase B: the gradient of the state leaving each part.
        qloc = _empty(parts, nseq, dim, N, device=device, dtype=compute)
        decay = _empty(parts, nseq, dim, N, device=device, dtype=compute)
        _scan_bwd_part_kernel[(dim // plan["BD_f"], nseq, parts)](
            delta, A, Cm, z if z is not None else dummy, bias if bias is not None else dummy, dy,
            p.cu if p.cu is not None else dummy, qloc, decay,
            p.L, dim, N, p.G, dim // p.G, spp, plan["seg"], *p.sx, *p.sb,
            COMPUTE=p.tl_compute, BD=plan["BD_f"], NP=NP, T=plan["T_f"], HAS_Z=z is not None,
            HAS_BIAS=bias is not None, SOFTPLUS=p.softplus, REVERSE=p.reverse,
            VARLEN=p.cu is not None, num_warps=plan["warps"],
        )
        carry_in = _empty(parts, nseq, dim, N, device=device, dtype=compute)
        sdn = nseq * dim * N
        _part_carry_kernel[(triton.cdiv(sdn, 1024),)](
            qloc, decay, dlast if dlast is not None else dummy, carry_in, sdn, parts,
            BLOCK=1024, HAS_DLAST=dlast is not None, REVERSE=p.reverse,
        )
    grid = (dim // BD, nseq, parts)
    scratch = _empty(grid[0] * grid[1] * parts * ksub * NP * BD, device=device, dtype=compute)
    launch = dict(num_warps=plan["warps_b"])
    cap = _register_cap(plan, grid[0] * grid[1] * grid[2], device)
    if cap is not None:
        launch["maxnreg"] = cap
    _scan_bwd_kernel[grid](
        u, delta, A, Bm, Cm,
        Dskip if Dskip is not None else dummy, z if z is not None else dummy,
        bias if bias is not None else dummy, hsave, dy,
        carry_in if carry_in is not None else dummy, p.cu if p.cu is not None else dummy, scratch,
        p.pidx if path else dummy,
        du, ddelta, dz if dz is not None else dummy, dB, dC, dA_part,
        dD_part if dD_part is not None else dummy, dbias_part if dbias_part is not None else dummy,
        dh0 if dh0 is not None else dummy, y_out if y_out is not None else dummy,
        p.L, dim, N, p.G, dim // p.G, p.nseg, spp, p.du_ch, *p.sx, *p.sb, width,
        COMPUTE=p.tl_compute,
        BD=BD, NP=NP, T=T, KSUB=ksub, HAS_D=Dskip is not None, HAS_Z=z is not None,
        HAS_BIAS=bias is not None, SOFTPLUS=p.softplus, HAS_DLAST=carry_in is not None,
        REVERSE=p.reverse, VARLEN=p.cu is not None, PREFETCH=bool(plan["pf_b"]),
        PATH=path, DOUT_SHARED=dout_shared, PATH_CL=p.path_cl,
        LANE_RS=_lane_levels(plan, compute, device),
        ASM_CVT=_asm_upcast(plan, compute, device, backward=True), NSPLIT=plan["nsplit_b"],
        STORE_Y=y_out is not None, STORE_DH0=dh0 is not None, **launch,
    )
    return _split_partials(partial, N, Dskip, bias) + (dh0,)


def _split_partials(partial: torch.Tensor, N: int, Dskip, bias) -> tuple:
    """(dA, dD, dbias) from the [P*S, D, N (+1) (+1)] partials: one reduction for all three."""
    total = partial[0] if partial.shape[0] == 1 else partial.sum(0)
    return (total[:, :N], total[:, N] if Dskip is not None else None,
            total[:, -1] if bias is not None else None)


class _InferenceCtx:
    """Stands in for autograd's ctx when no input needs a gradient."""

    needs_input_grad = (False,) * 15

    def save_for_backward(self, *tensors) -> None:
        pass


def _x_layout(*ts: torch.Tensor | None) -> list[torch.Tensor | None]:
    """u, delta, z as the kernels read them: as they are when they share dense strides with the
    time axis contiguous, else contiguous."""
    if _shared_strides(*ts) is not None:
        return list(ts)
    return [t.contiguous() if t is not None else None for t in ts]


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm, Dskip, z, delta_bias, h0, cu_seqlens,
                delta_softplus, reverse, return_final, path_index, path_reduce):
        compute = torch.float64 if u.dtype == torch.float64 else torch.float32
        pidx = _int32_index(path_index, u.device) if path_index is not None else None
        # A channels-last map is read in place ([S, L, DU] storage): each step's channels are then
        # contiguous, so gathers along any path coalesce. Its outputs come back channels-last too.
        path_cl = pidx is not None and channels_last_map(u)
        if pidx is not None:
            u = u.transpose(1, 2).contiguous() if path_cl else u.contiguous()
            delta = delta.contiguous()
            z = z.contiguous() if z is not None else None
        else:
            u, delta, z = _x_layout(u, delta, z)
        if _shared_strides(Bm, Cm) is None:
            Bm, Cm = Bm.contiguous(), Cm.contiguous()
        Ac = _as(A, compute)  # the kernels scale it by log2(e)
        Dc = _as(Dskip, compute)
        bias = _as(delta_bias, compute)
        h0c = _as(h0, compute)
        cu = cu_seqlens.to(device=u.device, dtype=torch.int32).contiguous() if cu_seqlens is not None else None
        p = make_problem(u, delta, Bm, compute, delta_softplus, reverse, cu, pidx, path_cl, path_reduce)
        needs_grad = any(ctx.needs_input_grad[:9])
        batch, dim, L = delta.shape
        # per path, raster order, with a path index
        y = _empty(batch, L, dim, device=u.device, dtype=u.dtype) if path_cl else _alloc_as(delta, u.dtype)
        hlast = _empty(p.nseq, dim, p.N, device=u.device, dtype=compute) if return_final else None
        hsave = _empty(p.nseq, dim, p.nseg, p.N, device=u.device, dtype=compute) if needs_grad else None
        scan_forward(p, u, delta, Ac, Bm, Cm, Dc, z, bias, h0c, y, hlast, hsave)
        if pidx is not None:
            if p.nseq == 0 or dim == 0:
                y.zero_()
            y = _merge_paths(y, pidx.shape[0], path_reduce, path_cl)
        ctx.save_for_backward(u, delta, Ac, Bm, Cm, Dc, z, bias, hsave)
        ctx.problem = p
        ctx.dtypes = (A.dtype, None if Dskip is None else Dskip.dtype,
                      None if delta_bias is None else delta_bias.dtype, None if h0 is None else h0.dtype)
        if return_final:
            return y, hlast
        return y

    @staticmethod
    def backward(ctx, dy, *rest):
        u, delta, Ac, Bm, Cm, Dc, z, bias, hsave = ctx.saved_tensors
        p: ScanProblem = ctx.problem
        dlast = rest[0] if rest else None
        batch, dim, L = delta.shape
        path = p.pidx is not None
        dout_shared = path and p.path_reduce != "none"
        K = p.pidx.shape[0] if path else 1
        if dy is None:
            shape = (batch, p.du_ch, L) if dout_shared else (batch, K, p.du_ch, L) if path else (batch, dim, L)
            dy = torch.zeros(shape, device=u.device, dtype=u.dtype)
        elif path and p.path_reduce == "mean":
            dy = dy / K
        if path:
            # reduce "none": [S, K, DU, L] per-path outputs, read as [S, K*DU, L] channels
            # ([S, L, K*DU] when channels-last, like the forward's buffer).
            if p.path_cl:
                dy = (dy.transpose(1, 2).contiguous() if dout_shared
                      else dy.permute(0, 3, 1, 2).reshape(batch, L, dim).contiguous())
            else:
                dy = dy.reshape(batch, p.du_ch if dout_shared else dim, L).contiguous()
        elif dy.stride() != delta.stride():
            dy = torch.empty_strided(delta.shape, delta.stride(), device=dy.device, dtype=u.dtype).copy_(dy)
        dlast = dlast.to(p.compute).contiguous() if dlast is not None else None
        # With a path index each path's du lands at raster positions and the K are summed below.
        if path:
            du = _empty(*((batch, L, dim) if p.path_cl else (batch, dim, L)), device=u.device, dtype=u.dtype)
        else:
            du = _alloc_as(u)
        ddelta = _alloc_as(delta)
        dz = _alloc_as(z) if z is not None else None
        # dB and dC accumulate in float32, in one zeroed buffer with B's strides.
        dBC = _zeros_like_pair(Bm, p.compute)
        dA, dD, dbias, dh0 = scan_backward(p, u, delta, Ac, Bm, Cm, Dc, z, bias, hsave, dy, dlast,
                                           du, ddelta, dz, dBC[0], dBC[1], need_dh0=ctx.needs_input_grad[8])
        A_dt, D_dt, bias_dt, h0_dt = ctx.dtypes
        if p.path_cl:
            du = du.view(batch, L, K, p.du_ch).sum(2).transpose(1, 2)
        elif path:
            du = du.view(batch, K, p.du_ch, L).sum(1)
        dBC = dBC.to(Bm.dtype)
        return (du, ddelta, dA.to(A_dt), dBC[0], dBC[1], dD.to(D_dt) if dD is not None else None, dz,
                dbias.to(bias_dt) if dbias is not None else None, dh0.to(h0_dt) if dh0 is not None else None,
                None, None, None, None, None, None)


def _zeros_like_pair(Bm: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A zeroed [2, *Bm.shape] buffer whose two halves have Bm's strides (one fill for dB and dC)."""
    if Bm.is_contiguous():
        return torch.zeros((2, *Bm.shape), device=Bm.device, dtype=dtype)
    span = Bm.numel()
    buf = torch.zeros(2 * span, device=Bm.device, dtype=dtype)
    return buf.as_strided((2, *Bm.shape), (span, *Bm.stride()))


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
    :func:`ssmkit.ops.selective_scan.selective_scan` does that. u, delta and z that share dense
    strides with a contiguous time axis are read in place and y comes back with those strides;
    likewise B and C.

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
    # time of an isolated call; the forward then saves nothing.
    return _SelectiveScanTriton.forward(_InferenceCtx(), *args)


def forward_saved_bytes(batch: int, dim: int, L: int, N: int) -> int:
    """Bytes the forward keeps for the backward beyond its inputs: one fp32 state per segment."""
    plan = _plan(N, dim, L)
    return batch * dim * max(1, math.ceil(L / plan["seg"])) * N * 4


__all__ = ["DEFAULT_TILES", "PROGRAMS_PER_SM", "ScanProblem", "TileConfig", "current_tiles", "forward_saved_bytes",
           "make_problem", "scan_backward", "scan_forward", "selective_scan_triton", "set_tile_config",
           "tile_config"]
