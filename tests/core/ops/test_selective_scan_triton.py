"""Triton selective scan against the reference: outputs, final state and every gradient.

CPU: the kernels run under ``TRITON_INTERPRET=1`` in one subprocess (the variable must be set
before the kernels are decorated, and other test files in the same pytest process may already
have imported them for real), at tiny shapes covering L in {1, 63, 130}, D=12, G in {1, 2},
N in {4, 16}, reverse, cu_seqlens (with an empty sequence) and initial states, in float32,
bfloat16, float16 and float64, plus a run with NaN-filled output buffers and runs on the
channel-major layout the Mamba layer passes (u, delta, z as [D, B*L] and B, C as [G*N, B*L]
matmul outputs viewed as [B, D, L] and [B, G, N, L], read in place). Small tiles and segments make
every case cross several chunks and segments.

GPU (``-m gpu``): odd shapes against the float64 reference, the GPU table's full shapes against the
chunked path in float32 and bf16, and NaN-poisoned buffers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import torch

from ssmkit.ops.selective_scan import selective_scan
from ssmkit.ops.selective_scan.samples import call_scan, sample_inputs


@dataclass(frozen=True)
class InterpCase:
    """One interpreter case: shapes, dtype, scan options and the tile knobs it runs under.

    ``full`` adds D, z and delta_bias; ``varlen`` packs sequences (with an empty one) into a batch
    of one; ``poison`` fills every buffer the kernels allocate with NaN, so an element they fail
    to write shows up as a NaN in the result; ``channel_major`` passes the inputs in the
    Mamba layer's layout (see :func:`channel_major`)."""

    name: str
    batch: int
    L: int
    G: int
    N: int
    dtype: str = "float32"
    reverse: bool = False
    varlen: bool = False
    init: bool = True
    full: bool = True
    poison: bool = False
    channel_major: bool = False
    knobs: dict = field(default_factory=dict)


INTERP_CASES = [
    InterpCase("L63_G1_N4_fwd", batch=2, L=63, G=1, N=4),
    InterpCase("L63_G2_N16_rev", batch=1, L=63, G=2, N=16, reverse=True),
    # parts=3: the backward split into parts (phases A/B hand each part the gradient of the state
    # leaving it); L=130 with 32-step segments gives 3 parts, one of them empty for the short sequences.
    InterpCase("L130_G2_N4_varlen_split_poison", batch=1, L=130, G=2, N=4, varlen=True, poison=True,
               knobs={"parts": 3}),
    InterpCase("L130_G1_N16_varlen_rev_bf16_split", batch=1, L=130, G=1, N=16, dtype="bfloat16", reverse=True,
               varlen=True, init=False, knobs={"parts": 3}),
    InterpCase("L1_G2_N16", batch=2, L=1, G=2, N=16),
    InterpCase("L63_G1_N4_fp16", batch=1, L=63, G=1, N=4, dtype="float16"),
    InterpCase("L63_G2_N4_bare_rev_f64", batch=2, L=63, G=2, N=4, dtype="float64", reverse=True, full=False),
    # pf=0: without the register prefetch (the backward's path from N = 64 on).
    InterpCase("L130_G2_N16_varlen_rev_nopf", batch=1, L=130, G=2, N=16, reverse=True, varlen=True,
               knobs={"pf": 0}),
    # nsplit_bwd=2: the backward's pass 2 over two blocks of states (the N = 64 layout), here with
    # N = 5 (block 1 is 1 valid state of 4) and N = 16, poisoned buffers and packed sequences.
    InterpCase("L63_G2_N5_rev_nsplit", batch=1, L=63, G=2, N=5, reverse=True, knobs={"nsplit_bwd": 2}),
    InterpCase("L130_G1_N16_varlen_bf16_nsplit_poison", batch=1, L=130, G=1, N=16, dtype="bfloat16", varlen=True,
               poison=True, knobs={"nsplit_bwd": 2}),
    # The Mamba layer's channel-major layout, read through strides: batch 3, two groups, reverse.
    InterpCase("L63_G2_N4_channel_major_rev_poison", batch=3, L=63, G=2, N=4, reverse=True, init=False,
               poison=True, channel_major=True),
]
# Every case resets these knobs first, so one case's knobs never leak into the next.
CASE_KNOB_DEFAULTS = {"pf": 1, "parts": 1, "nsplit_bwd": 1}
TOL = {"float32": 1e-4, "bfloat16": 1e-2, "float16": 1e-2, "float64": 1e-10}


def make_case(batch, L, G, N, dtype, varlen, init, full, device="cpu", dim=12, seed=0):
    """Random inputs (and cu_seqlens) for one case; A, D, delta_bias, initial_state stay float32."""
    cu = None
    nseq = batch
    if varlen:
        batch = 1
        cu = torch.tensor([0, L // 3, L // 3, L - 5, L] if L > 10 else [0, L], dtype=torch.int64, device=device)
        nseq = cu.numel() - 1
    ins = sample_inputs(batch, dim, L, N, groups=G, dtype=dtype, device=device, skip=full, gate=full, bias=full,
                        init=init, nseq=nseq, decay="lognormal", seed=seed)
    return ins, cu


def channel_major(ins: dict) -> dict:
    """The same values in the layout of a Mamba layer's matmul outputs: u, delta, z as [B, D, L]
    views of [D, B*L] storage, B and C as [B, G, N, L] views of [G*N, B*L]."""
    out = dict(ins)
    for k in ("u", "delta", "z"):
        if ins.get(k) is not None:
            out[k] = ins[k].permute(1, 0, 2).contiguous().permute(1, 0, 2)
    for k in ("B", "C"):
        out[k] = ins[k].permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3)
    return out


def run_with_grads(fn, ins, cu, reverse, softplus, gy, gh):
    """Call ``fn`` (selective_scan-like) and backprop fixed cotangents through y and the final state."""
    leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in ins.items()}
    y, hT = fn(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves["D"], z=leaves["z"],
               delta_bias=leaves["delta_bias"], initial_state=leaves["initial_state"], delta_softplus=softplus,
               return_final_state=True, reverse=reverse, cu_seqlens=cu)
    ((y.double() * gy).sum() + (hT.double() * gh).sum()).backward()
    return y, hT, {k: v.grad for k, v in leaves.items() if v is not None}


def rel(a: torch.Tensor, e: torch.Tensor) -> float:
    a, e = a.detach().double().cpu(), e.detach().double().cpu()
    if not bool(torch.isfinite(a).all()):
        return float("inf")
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-12)) if e.numel() else 0.0


def compare(ins, cu, reverse, softplus, device, same_layout: bool = False):
    """Errors of the Triton path against the float64 reference, plus dtype checks (and, with
    ``same_layout``, that y and the gradients of u, delta, z, B and C keep their inputs' strides)."""
    from ssmkit.ops.selective_scan.reference import selective_scan_reference
    from ssmkit.ops.selective_scan.triton_scan import selective_scan_triton

    g = torch.Generator().manual_seed(99)
    gy = torch.randn(ins["u"].shape, generator=g, dtype=torch.float64).to(device)
    nseq = cu.numel() - 1 if cu is not None else ins["u"].shape[0]
    gh = torch.randn(nseq, ins["u"].shape[1], ins["A"].shape[1], generator=g, dtype=torch.float64).to(device)
    y, hT, grads = run_with_grads(selective_scan_triton, ins, cu, reverse, softplus, gy, gh)
    ref_ins = {k: (v.double() if v is not None else None) for k, v in ins.items()}
    yr, hr, gr = run_with_grads(selective_scan_reference, ref_ins, cu, reverse, softplus, gy, gh)
    errs = {"y": rel(y, yr), "final_state": rel(hT, hr)}
    errs.update({"d" + k: rel(grads[k], gr[k]) for k in grads})
    want_state = torch.float64 if ins["u"].dtype == torch.float64 else torch.float32
    dtypes_ok = y.dtype == ins["u"].dtype and hT.dtype == want_state and all(
        grads[k].dtype == ins[k].dtype for k in grads)
    if same_layout:
        dtypes_ok = dtypes_ok and y.stride() == ins["u"].stride() and all(
            grads[k].stride() == ins[k].stride() for k in ("u", "delta", "z", "B", "C") if k in grads)
    return errs, dtypes_ok


def _poisoned(alloc):
    """``alloc`` (torch.empty or torch.empty_like) with floating buffers filled with NaN."""

    def nan_filled(*args, **kwargs):
        t = alloc(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    return nan_filled


def _interp_worker(cases: list[InterpCase]) -> dict:
    """Runs inside the TRITON_INTERPRET=1 subprocess: every case, returns {name: (errs, dtypes_ok)}."""
    from ssmkit.ops.selective_scan import triton_scan

    # Small tiles: several chunks and segments per sequence even at L=63, and fast interpretation.
    triton_scan.set_tile_config(T_fwd=16, T_bwd=8, seg=32, spw_fwd=512, spw_bwd=512)
    out = {}
    for case in cases:
        triton_scan.set_tile_config(**(CASE_KNOB_DEFAULTS | case.knobs))
        torch.manual_seed(0)
        ins, cu = make_case(case.batch, case.L, case.G, case.N, getattr(torch, case.dtype), case.varlen, case.init,
                            case.full, seed=case.L + case.N)
        real = triton_scan._empty, triton_scan._empty_like, triton_scan._empty_strided
        if case.poison:
            triton_scan._empty, triton_scan._empty_like, triton_scan._empty_strided = (_poisoned(f) for f in real)
        try:
            out[case.name] = compare(channel_major(ins) if case.channel_major else ins, cu, case.reverse, case.full,
                                     "cpu", same_layout=case.channel_major)
        finally:
            triton_scan._empty, triton_scan._empty_like, triton_scan._empty_strided = real
    out["_inference"] = _inference_vs_autograd(triton_scan)
    return out


def _inference_vs_autograd(triton_scan) -> dict:
    """With no input needing a gradient the op skips autograd.Function (host time); its outputs must
    be the very values the autograd path computes, with no graph attached."""
    ins, cu = make_case(2, 63, 2, 16, torch.float32, False, True, True, seed=5)
    kw = dict(D=ins["D"], z=ins["z"], delta_bias=ins["delta_bias"], initial_state=ins["initial_state"],
              return_final_state=True)
    leaves = {k: v.clone().requires_grad_(True) for k, v in ins.items() if v is not None}
    y_ag, h_ag = triton_scan.selective_scan_triton(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
                                                   **{k: leaves.get(k) for k in kw if k != "return_final_state"},
                                                   return_final_state=True)
    y_ng, h_ng = triton_scan.selective_scan_triton(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], **kw)
    with torch.no_grad():
        y_nog, _ = triton_scan.selective_scan_triton(leaves["u"], leaves["delta"], leaves["A"], leaves["B"],
                                                     leaves["C"], **{k: leaves.get(k) for k in kw
                                                                     if k != "return_final_state"},
                                                     return_final_state=True)
    return {"same": bool(torch.equal(y_ag.detach(), y_ng) and torch.equal(h_ag.detach(), h_ng)
                         and torch.equal(y_ng, y_nog)),
            "graph_when_needed": y_ag.grad_fn is not None,
            "no_graph_otherwise": y_ng.grad_fn is None and y_nog.grad_fn is None and not y_ng.requires_grad}


@pytest.fixture(scope="module")
def interp_results():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--interp-worker"], env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"interpreter worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_inference_calls_skip_autograd_and_match_it(interp_results):
    assert interp_results["_inference"] == {"same": True, "graph_when_needed": True, "no_graph_otherwise": True}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in INTERP_CASES])
def test_interpreter_matches_reference(interp_results, case):
    errs, dtypes_ok = interp_results[case.name]
    tol = TOL[case.dtype]
    assert dtypes_ok, f"{case.name}: output/final-state/gradient dtypes differ from the contract"
    bad = {k: v for k, v in errs.items() if not v < tol}
    assert not bad, f"{case.name}: relative errors above {tol}: {bad} (all: {errs})"
    expected = {"y", "final_state", "du", "ddelta", "dA", "dB", "dC"}
    assert expected <= set(errs)


def test_tile_config_rejects_bad_knobs():
    from ssmkit.ops.selective_scan import triton_scan

    with pytest.raises(ValueError, match="unknown tile knob"):
        triton_scan.set_tile_config(chunk=8)
    with pytest.raises(ValueError, match="power of two"):
        triton_scan.set_tile_config(T_fwd=6)
    with pytest.raises(ValueError, match="mode knob pf=2"):
        triton_scan.set_tile_config(pf=2)
    with pytest.raises(ValueError, match="parts=-1 must be >= 0"):
        triton_scan.set_tile_config(parts=-1)
    triton_scan.set_tile_config(parts=3, regs_bwd=168)  # counts, not powers of two
    triton_scan.set_tile_config()


def test_lane_reduce_scatter_only_where_the_layout_allows_it():
    """dB/dC go through the PTX-shuffle reduce-scatter only on CUDA, in float32 math, for one-warp
    programs whose lanes cover the channels, with a register axis to halve per lane bit and the
    tiles the H100 measured as faster (T_bwd <= 4, N < 64); everything else uses tl.sum."""
    from ssmkit.ops.selective_scan import triton_scan
    from ssmkit.ops.selective_scan.triton_scan import _lane_levels, _plan

    cuda, cpu, f32 = torch.device("cuda"), torch.device("cpu"), torch.float32
    bf16_n16 = _plan(16, 1536, 4096, 2)
    assert (bf16_n16["BD_b"], bf16_n16["T_b"]) == (8, 4)
    assert _lane_levels(bf16_n16, f32, cuda) == 3  # 8 channel lanes: 3 shuffle steps
    assert _lane_levels(bf16_n16, f32, cpu) == 0  # the interpreter runs no PTX
    assert _lane_levels(bf16_n16, torch.float64, cuda) == 0  # 32-bit shuffles
    assert _lane_levels(dict(bf16_n16, lane_rs=0), f32, cuda) == 0  # the knob
    assert _lane_levels(dict(bf16_n16, warps_b=2), f32, cuda) == 0  # lanes no longer the layout's
    assert _lane_levels(_plan(16, 1536, 4096, 4), f32, cuda) == 3  # fp32 inputs, T_bwd = 4 too
    assert _lane_levels(dict(bf16_n16, T_b=8), f32, cuda) == 0  # T_bwd = 8 spills
    assert _lane_levels(_plan(64, 1536, 4096, 2), f32, cuda) == 0  # N = 64 spills
    # ... also in its blocks of 32 states at T_bwd 4 (27 vs 16 ms in bf16 on an H200, docs/kernels.md).
    assert _lane_levels(dict(_plan(64, 1536, 4096, 2), T_b=4, nsplit_b=2), f32, cuda) == 0
    assert _lane_levels(dict(_plan(64, 1536, 4096, 2), lane_rs=2), f32, cuda) > 0  # unless forced
    assert _lane_levels(dict(bf16_n16, BD_b=2), f32, cuda) == 1
    assert _lane_levels(dict(bf16_n16, BD_b=1), f32, cuda) == 0  # nothing to sum across lanes
    # 32 channel lanes need 32 registers to halve into: T * NP = 2 * 4 is too few.
    assert _lane_levels(dict(bf16_n16, BD_b=32, NP=4, T_b=2), f32, cuda) == 0
    assert _lane_levels(dict(bf16_n16, BD_b=32, NP=16, T_b=2), f32, cuda) == 5
    # 16 state lanes for 4 states: the layout would put lanes on t.
    assert _lane_levels(dict(bf16_n16, BD_b=2, NP=4), f32, cuda) == 0
    with pytest.raises(ValueError, match="mode knob lane_rs=3"):
        triton_scan.set_tile_config(lane_rs=3)


def test_forward_tiles_follow_the_measured_defaults():
    """Forward tiles (docs/kernels.md, "Tile defaults"): below N = 64, 16 channels per program for
    2-byte inputs and 8 for 4-byte ones (H200); from N = 64 on, 8 channels and T = 4."""
    from ssmkit.ops.selective_scan.triton_scan import _plan

    assert (_plan(16, 1536, 4096, 2)["BD_f"], _plan(16, 1536, 4096, 2)["T_f"]) == (16, 8)
    assert (_plan(16, 1536, 4096, 4)["BD_f"], _plan(16, 1536, 4096, 4)["T_f"]) == (8, 8)
    assert (_plan(64, 1536, 4096, 2)["BD_f"], _plan(64, 1536, 4096, 4)["T_f"]) == (8, 4)
    assert _plan(16, 12, 4096, 4)["BD_f"] == 4  # a program's channels stay in one group of 12


def test_backward_tiles_follow_the_measured_defaults():
    """Backward tiles (docs/kernels.md, "Tile defaults", H200): T_bwd 8 from N = 64 on for every dtype,
    with pass 2 over two blocks of 32 states, since a thread would hold 64 values of each tile; below
    that, T_bwd 4 and one block. The knob overrides the rule, and a block keeps at least 2 states."""
    from ssmkit.ops.selective_scan import triton_scan
    from ssmkit.ops.selective_scan.triton_scan import _plan

    tiles = lambda p: (p["T_b"], p["BD_b"], p["nsplit_b"])  # noqa: E731
    for elem in (2, 4):
        assert tiles(_plan(16, 1536, 4096, elem)) == (4, 8, 1)
        assert tiles(_plan(64, 1536, 4096, elem)) == (8, 4, 2)
    assert tiles(_plan(128, 1536, 4096, 2)) == (8, 2, 2)  # 256 states per warp: 2 channels
    try:
        triton_scan.set_tile_config(T_bwd=4)  # 32 values a thread at N = 64: one block
        assert tiles(_plan(64, 1536, 4096, 2)) == (4, 4, 1)
        triton_scan.set_tile_config(nsplit_bwd=2)
        assert _plan(16, 1536, 4096, 2)["nsplit_b"] == 2
        assert _plan(2, 1536, 4096, 2)["nsplit_b"] == 1  # NP = 2: blocks of one state are not made
        triton_scan.set_tile_config(nsplit_bwd=1)
        assert _plan(64, 1536, 4096, 2)["nsplit_b"] == 1
        with pytest.raises(ValueError, match="mode knob nsplit_bwd=4"):
            triton_scan.set_tile_config(nsplit_bwd=4)
    finally:
        triton_scan.set_tile_config()


def test_ptx_upcast_only_on_cuda_with_float32_math():
    """2-byte inputs are converted with a PTX cvt (ASM_CVT) only where PTX runs and the math is
    float32; the knob turns it off for side-by-side timings."""
    from ssmkit.ops.selective_scan import triton_scan
    from ssmkit.ops.selective_scan.triton_scan import _asm_upcast, _plan

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    plan = _plan(16, 1536, 4096, 2)
    assert _asm_upcast(plan, torch.float32, cuda)
    assert not _asm_upcast(plan, torch.float32, cpu)  # the interpreter
    assert not _asm_upcast(plan, torch.float64, cuda)  # float64 math: nothing to convert by cvt.f32
    n64 = _plan(64, 1536, 4096, 2)
    assert not _asm_upcast(n64, torch.float32, cuda)  # the forward: more registers, a second wave
    assert _asm_upcast(n64, torch.float32, cuda, backward=True)  # the backward converts at every N
    assert not _asm_upcast(n64, torch.float32, cpu, backward=True)
    try:
        triton_scan.set_tile_config(asm_cvt=2)  # at every N, for sweeps
        assert _asm_upcast(_plan(64, 1536, 4096, 2), torch.float32, cuda)
        triton_scan.set_tile_config(asm_cvt=0)
        assert not _asm_upcast(_plan(16, 1536, 4096, 2), torch.float32, cuda)
        with pytest.raises(ValueError, match="mode knob asm_cvt=3"):
            triton_scan.set_tile_config(asm_cvt=3)
    finally:
        triton_scan.set_tile_config()


def test_tile_config_is_an_immutable_value():
    """A TileConfig is frozen and hashable (plans are cached by it); replace() validates, and
    tile_config() restores the previous value on exit, also after an error."""
    import dataclasses

    from ssmkit.ops.selective_scan.triton_scan import DEFAULT_TILES, TileConfig, current_tiles, tile_config

    cfg = TileConfig(T_bwd=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.T_bwd = 4
    assert cfg == TileConfig().replace(T_bwd=8) and hash(cfg) == hash(TileConfig(T_bwd=8))
    with pytest.raises(ValueError, match="unknown tile knob 'chunk'"):
        cfg.replace(chunk=8)
    with pytest.raises(TypeError, match="must be an int"):
        TileConfig(T_bwd=4.0)
    assert current_tiles() == DEFAULT_TILES
    with pytest.raises(RuntimeError):
        with tile_config(T_bwd=8, occupancy=12) as inner:
            assert current_tiles() == inner == TileConfig(T_bwd=8, occupancy=12)
            raise RuntimeError("leave the block early")
    assert current_tiles() == DEFAULT_TILES


@pytest.mark.parametrize("shape,elem,want", [
    # (B, D, L, N), input bytes, (BD_f, BD_b): reference shapes keep their measured tiles ...
    pytest.param((8, 1536, 4096, 16), 4, (8, 8), id="B8_D1536_fp32"),
    pytest.param((4, 2048, 16384, 16), 2, (8, 8), id="B4_D2048_bf16"),
    pytest.param((8, 1536, 4096, 64), 2, (8, 4), id="B8_D1536_N64_bf16"),
    # ... narrow or small batches get fewer channels per forward program, down to 4; the backward
    # keeps 8 unless its grid has fewer programs than multiprocessors, then takes 2.
    pytest.param((2, 1536, 512, 16), 2, (4, 8), id="B2_D1536_bf16"),
    pytest.param((1, 768, 256, 16), 4, (4, 2), id="B1_D768_fp32"),
    pytest.param((16, 768, 1024, 16), 2, (8, 8), id="B16_D768_bf16"),
])
def test_channels_per_program_follow_occupancy(shape, elem, want):
    """Forward programs get fewer channels where B·D would leave an H200's 132 multiprocessors with
    fewer than PROGRAMS_PER_SM one-warp programs each (the ``occupancy`` knob moves that target);
    backward programs only where their grid would not cover the multiprocessors."""
    from ssmkit.ops.selective_scan.triton_scan import TileConfig, _plan

    batch, dim, L, N = shape
    plan = _plan(N, dim, L, elem, None, batch * dim, 132)
    assert (plan["BD_f"], plan["BD_b"]) == want
    assert batch * dim // plan["BD_f"] >= 6 * 132 or plan["BD_f"] == 4
    bare = _plan(N, dim, L, elem)  # no grid given: the tiles of the knobs alone
    off = _plan(N, dim, L, elem, TileConfig(occupancy=1), batch * dim, 132)  # aims for 1 program per SM
    assert plan["BD_f"] <= off["BD_f"] <= bare["BD_f"] and plan["BD_b"] <= off["BD_b"] <= bare["BD_b"]


def test_saved_state_bytes_are_per_segment():
    from ssmkit.ops.selective_scan.triton_scan import forward_saved_bytes

    # N=16: one fp32 state per 128 steps -> L/128 * N * 4 bytes per channel.
    assert forward_saved_bytes(8, 1536, 4096, 16) == 8 * 1536 * 32 * 16 * 4


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("reverse,varlen", [pytest.param(False, False, id="forward"),
                                            pytest.param(True, False, id="reverse"),
                                            pytest.param(False, True, id="packed"),
                                            pytest.param(True, True, id="packed_reverse")])
def test_gpu_odd_shapes_match_reference(cuda_device, dtype, reverse, varlen):
    ins, cu = make_case(2, 301, 2, 16, getattr(torch, dtype), varlen, True, True, device=cuda_device, dim=40)
    errs, dtypes_ok = compare(ins, cu, reverse, True, cuda_device)
    assert dtypes_ok
    bad = {k: v for k, v in errs.items() if not v < TOL[dtype]}
    assert not bad, f"errors above {TOL[dtype]}: {bad}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("N", [5, 64])
@pytest.mark.parametrize("knobs", [{"nsplit_bwd": 1}, {"nsplit_bwd": 2}, {"nsplit_bwd": 2, "asm_cvt": 2}],
                         ids=["one_block", "two_blocks", "two_blocks_cvt"])
def test_gpu_state_blocks_match_reference(cuda_device, dtype, N, knobs):
    """The backward's pass 2 over one or two blocks of states, with odd N (block 1 partly masked),
    packed sequences and a reverse scan, at the compile the device really runs."""
    from ssmkit.ops.selective_scan import triton_scan

    ins, cu = make_case(1, 301, 2, N, getattr(torch, dtype), True, True, True, device=cuda_device, dim=40)
    triton_scan.set_tile_config(**knobs)
    try:
        errs, dtypes_ok = compare(ins, cu, True, True, cuda_device)
    finally:
        triton_scan.set_tile_config()
    assert dtypes_ok
    bad = {k: v for k, v in errs.items() if not v < TOL[dtype]}
    assert not bad, f"errors above {TOL[dtype]}: {bad}"


@pytest.mark.gpu
def test_gpu_unwritten_elements_are_caught(cuda_device, monkeypatch):
    from ssmkit.ops.selective_scan import triton_scan

    ins, cu = make_case(1, 333, 2, 16, torch.float32, True, True, True, device=cuda_device, dim=40)
    monkeypatch.setattr(triton_scan, "_empty", _poisoned(triton_scan._empty))
    monkeypatch.setattr(triton_scan, "_empty_like", _poisoned(triton_scan._empty_like))
    monkeypatch.setattr(triton_scan, "_empty_strided", _poisoned(triton_scan._empty_strided))
    errs, _ = compare(ins, cu, False, True, cuda_device)
    assert all(v < 1e-4 for v in errs.values()), errs


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [pytest.param((8, 1536, 4096, 16), id="B8_D1536_L4096_N16"),
                                   pytest.param((4, 2048, 16384, 16), id="B4_D2048_L16384_N16"),
                                   pytest.param((8, 1536, 4096, 64), id="B8_D1536_L4096_N64")])
def test_gpu_table_shapes_match_chunked(cuda_device, shape, dtype):
    """The GPU table's full shapes (bench/scan_gpu.py), Triton against the chunked path in float32."""
    batch, dim, L, N = shape
    ins = sample_inputs(batch, dim, L, N, dtype=getattr(torch, dtype), device=cuda_device, init=False,
                        delta_shift=-2.0, decay="lognormal", seed=3, requires_grad=True)
    gy = torch.randn(batch, dim, L, device=cuda_device, dtype=ins["u"].dtype)
    y = call_scan(selective_scan, ins, backend="triton")
    y.backward(gy)
    got = {"y": y.detach()} | {k: v.grad for k, v in ins.items() if v is not None}
    ins32 = {k: (v.detach().float().requires_grad_(True) if v is not None else None) for k, v in ins.items()}
    y32 = call_scan(selective_scan, ins32, backend="chunked")
    y32.backward(gy.float())
    want = {"y": y32.detach()} | {k: v.grad for k, v in ins32.items() if v is not None}
    tol = TOL[dtype]
    errs = {k: rel(got[k], want[k]) for k in got}
    assert all(v < tol for v in errs.values()), errs


if __name__ == "__main__" and "--interp-worker" in sys.argv:
    print(json.dumps(_interp_worker(INTERP_CASES)))
