"""Triton selective scan against the reference: outputs, final state and every gradient.

CPU: the kernels run under ``TRITON_INTERPRET=1`` in one subprocess (the variable must be set
before the kernels are decorated, and other test files in the same session may already have
imported them for real), at tiny shapes covering L in {1, 63, 130}, D=12, G in {1, 2},
N in {4, 16}, reverse, cu_seqlens (with an empty sequence) and initial states, in float32,
bfloat16, float16 and float64, plus a run with NaN-filled output buffers. Small tiles and segments make
every case cross several chunks and segments.

GPU (``-m gpu``): odd shapes against the float64 reference, the issue's full shapes against the
chunked path in float32 and bf16, and NaN-poisoned buffers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

# (name, batch, L, G, N, dtype, reverse, varlen, init, full_features, poison)
INTERP_CASES = [
    ("L63_G1_N4_fwd", 2, 63, 1, 4, "float32", False, False, True, True, False),
    ("L63_G2_N16_rev", 1, 63, 2, 16, "float32", True, False, True, True, False),
    # "_split": the backward split into parts (phases A/B hand each part the gradient of the state
    # leaving it); L=130 with 32-step segments gives 3 parts, one of them empty for the short sequences.
    ("L130_G2_N4_varlen_split_poison", 1, 130, 2, 4, "float32", False, True, True, True, True),
    ("L130_G1_N16_varlen_rev_bf16_split", 1, 130, 1, 16, "bfloat16", True, True, False, True, False),
    ("L1_G2_N16", 2, 1, 2, 16, "float32", False, False, True, True, False),
    ("L63_G1_N4_fp16", 1, 63, 1, 4, "float16", False, False, True, True, False),
    ("L63_G2_N4_bare_rev_f64", 2, 63, 2, 4, "float64", True, False, True, False, False),
    # Without the register prefetch (the backward's path from N = 64 on).
    ("L130_G2_N16_varlen_rev_nopf", 1, 130, 2, 16, "float32", True, True, True, True, False),
    # "_nsplit": the backward's pass 2 over two blocks of states (the N = 64 layout), here with
    # N = 5 (block 1 is 1 valid state of 4) and N = 16, poisoned buffers and packed sequences.
    ("L63_G2_N5_rev_nsplit", 1, 63, 2, 5, "float32", True, False, True, True, False),
    ("L130_G1_N16_varlen_bf16_nsplit_poison", 1, 130, 1, 16, "bfloat16", False, True, True, True, True),
]
TOL = {"float32": 1e-4, "bfloat16": 1e-2, "float16": 1e-2, "float64": 1e-10}


def make_case(batch, L, G, N, dtype, varlen, init, full, device="cpu", dim=12, seed=0):
    """Random inputs (and cu_seqlens) for one case; A, D, delta_bias, initial_state stay float32."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, sc=1.0, sh=0.0: torch.randn(*s, generator=g) * sc + sh  # noqa: E731
    cu = None
    nseq = batch
    if varlen:
        batch = 1
        cu = torch.tensor([0, L // 3, L // 3, L - 5, L] if L > 10 else [0, L], dtype=torch.int64)
        nseq = cu.numel() - 1
    ins = dict(u=r(batch, dim, L), delta=r(batch, dim, L, sc=0.5, sh=-1.0), A=-torch.exp(r(dim, N) * 0.5),
               B=r(batch, G, N, L), C=r(batch, G, N, L), D=r(dim) if full else None,
               z=r(batch, dim, L) if full else None, delta_bias=r(dim, sc=0.1) if full else None,
               initial_state=r(nseq, dim, N) if init else None)
    wide = {"A", "D", "delta_bias", "initial_state"}
    for k, v in ins.items():
        if v is not None:
            keep = torch.float32 if k in wide and dtype != torch.float64 else dtype
            ins[k] = v.to(device=device, dtype=keep)
    return ins, (cu.to(device) if cu is not None else None)


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


def compare(ins, cu, reverse, softplus, device):
    """Errors of the Triton path against the float64 reference, plus dtype checks."""
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
    return errs, dtypes_ok


def _interp_worker(cases: list) -> dict:
    """Runs inside the TRITON_INTERPRET=1 subprocess: every case, returns {name: (errs, dtypes_ok)}."""
    from ssmkit.ops.selective_scan import triton_scan

    # Small tiles: several chunks and segments per sequence even at L=63, and fast interpretation.
    triton_scan.set_tile_config(T_fwd=16, T_bwd=8, seg=32, spw_fwd=512, spw_bwd=512)
    out = {}
    for name, batch, L, G, N, dtype, reverse, varlen, init, full, poison in cases:
        triton_scan.set_tile_config(pf=0 if name.endswith("_nopf") else 1, parts=3 if "_split" in name else 1,
                                    nsplit_bwd=2 if "_nsplit" in name else 1)
        torch.manual_seed(0)
        ins, cu = make_case(batch, L, G, N, getattr(torch, dtype), varlen, init, full, seed=L + N)
        real = triton_scan._empty, triton_scan._empty_like
        if poison:
            def nan_empty(*a, **k):
                t = real[0](*a, **k)
                return t.fill_(float("nan")) if t.is_floating_point() else t

            def nan_like(*a, **k):
                t = real[1](*a, **k)
                return t.fill_(float("nan")) if t.is_floating_point() else t

            triton_scan._empty, triton_scan._empty_like = nan_empty, nan_like
        try:
            out[name] = compare(ins, cu, reverse, full, "cpu")
        finally:
            triton_scan._empty, triton_scan._empty_like = real
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


@pytest.mark.parametrize("case", INTERP_CASES, ids=[c[0] for c in INTERP_CASES])
def test_interpreter_matches_reference(interp_results, case):
    errs, dtypes_ok = interp_results[case[0]]
    tol = TOL[case[5]]
    assert dtypes_ok, f"{case[0]}: output/final-state/gradient dtypes differ from the contract"
    bad = {k: v for k, v in errs.items() if not v < tol}
    assert not bad, f"{case[0]}: relative errors above {tol}: {bad} (all: {errs})"
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
    # ... also in its blocks of 32 states at T_bwd 4 (27 vs 16 ms in bf16, session 7).
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
    """Forward tiles (docs/benchmarks.md): below N = 64, 16 channels per program for 2-byte inputs
    and 8 for 4-byte ones (H200, session 6); from N = 64 on, 8 channels and T = 4."""
    from ssmkit.ops.selective_scan.triton_scan import _plan

    assert (_plan(16, 1536, 4096, 2)["BD_f"], _plan(16, 1536, 4096, 2)["T_f"]) == (16, 8)
    assert (_plan(16, 1536, 4096, 4)["BD_f"], _plan(16, 1536, 4096, 4)["T_f"]) == (8, 8)
    assert (_plan(64, 1536, 4096, 2)["BD_f"], _plan(64, 1536, 4096, 4)["T_f"]) == (8, 4)
    assert _plan(16, 12, 4096, 4)["BD_f"] == 4  # a program's channels stay in one group of 12


def test_backward_tiles_follow_the_measured_defaults():
    """Backward tiles (docs/benchmarks.md, session 7, H200): T_bwd 8 from N = 64 on for every dtype,
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


def test_saved_state_bytes_are_per_segment():
    from ssmkit.ops.selective_scan.triton_scan import forward_saved_bytes

    # N=16: one fp32 state per 128 steps -> L/128 * N * 4 bytes per channel.
    assert forward_saved_bytes(8, 1536, 4096, 16) == 8 * 1536 * 32 * 16 * 4


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("reverse,varlen", [(False, False), (True, False), (False, True), (True, True)])
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
    real_empty, real_like = triton_scan._empty, triton_scan._empty_like
    monkeypatch.setattr(triton_scan, "_empty", lambda *a, **k: real_empty(*a, **k).fill_(float("nan")))
    monkeypatch.setattr(triton_scan, "_empty_like", lambda *a, **k: real_like(*a, **k).fill_(float("nan")))
    errs, _ = compare(ins, cu, False, True, cuda_device)
    assert all(v < 1e-4 for v in errs.values()), errs


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(8, 1536, 4096, 16), (4, 2048, 16384, 16), (8, 1536, 4096, 64)])
def test_gpu_issue_shapes_match_chunked(cuda_device, shape, dtype):
    from ssmkit.bench.scan_gpu import make_inputs, run_scan

    ins = make_inputs(shape, getattr(torch, dtype), cuda_device, requires_grad=True, seed=3)
    gy = torch.randn(shape[0], shape[1], shape[2], device=cuda_device, dtype=ins["u"].dtype)
    y = run_scan(ins, "triton")
    y.backward(gy)
    got = {"y": y.detach()} | {k: v.grad for k, v in ins.items()}
    ins32 = {k: v.detach().float().requires_grad_(True) for k, v in ins.items()}
    y32 = run_scan(ins32, "chunked")
    y32.backward(gy.float())
    want = {"y": y32.detach()} | {k: v.grad for k, v in ins32.items()}
    tol = TOL[dtype]
    errs = {k: rel(got[k], want[k]) for k in got}
    assert all(v < tol for v in errs.values()), errs


if __name__ == "__main__" and "--interp-worker" in sys.argv:
    print(json.dumps(_interp_worker(INTERP_CASES)))
