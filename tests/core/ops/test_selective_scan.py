"""Selective scan: the chunked fast path against the loop reference, gradcheck, stability, errors.

Every comparison draws fresh random inputs and checks the output, the final state and the
gradient of every input. Sizes are odd on purpose (D=60, L around the chunk size).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from ssmkit.ops.selective_scan import selective_scan, selective_scan_reference
from ssmkit.ops.selective_scan.chunked import default_chunk_size, selective_scan_chunked
from ssmkit.ops.selective_scan.samples import call_scan, sample_inputs
from tests.conftest import rel_err

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def leaf_copy(inputs: dict, dtype: torch.dtype | None = None) -> dict:
    return {k: (None if v is None else v.detach().to(dtype or v.dtype).requires_grad_(True)) for k, v in inputs.items()}


def run_scan(fn, inputs: dict, **kw):
    return call_scan(fn, inputs, return_final_state=True, **kw)


def outputs_and_grads(fn, inputs: dict, gy: torch.Tensor, gf: torch.Tensor, **kw):
    y, final = run_scan(fn, inputs, **kw)
    loss = (y.double() * gy).sum() + (final.double() * gf).sum()
    leaves = [k for k in NAMES if inputs[k] is not None]
    grads = torch.autograd.grad(loss, [inputs[k] for k in leaves])
    return y, final, dict(zip(leaves, grads))


def assert_close_to_reference(inputs: dict, tol: float, ref_dtype: torch.dtype | None = None, **kw):
    """Chunked on ``inputs`` against the reference (on the same inputs, or upcast to ref_dtype)."""
    chunk_size = kw.pop("chunk_size", None)
    a, b = leaf_copy(inputs), leaf_copy(inputs, ref_dtype)
    batch, dim, _ = inputs["u"].shape
    cu = kw.get("cu_seqlens")
    rows = batch if cu is None else cu.numel() - 1
    gy = torch.randn(inputs["u"].shape, dtype=torch.float64)
    gf = torch.randn(rows, dim, inputs["A"].shape[1], dtype=torch.float64)
    y1, f1, g1 = outputs_and_grads(selective_scan_chunked, a, gy, gf, chunk_size=chunk_size, **kw)
    y2, f2, g2 = outputs_and_grads(selective_scan_reference, b, gy, gf, **kw)
    assert y1.dtype == inputs["u"].dtype and y1.shape == y2.shape
    assert f1.dtype == (torch.float64 if inputs["u"].dtype == torch.float64 else torch.float32)
    assert f1.shape == f2.shape
    errors = {"y": rel_err(y1, y2), "final_state": rel_err(f1, f2)}
    for k in g2:
        assert g1[k].dtype == inputs[k].dtype and g1[k].shape == inputs[k].shape, k
        assert torch.isfinite(g1[k]).all(), k
        errors[f"grad {k}"] = rel_err(g1[k], g2[k])
    worst = max(errors, key=errors.get)
    assert errors[worst] < tol, f"{worst}: rel err {errors[worst]:.2e} >= {tol} (all: {errors})"


# Every (G, N) pair at the short lengths, two pairs per length around a chunk of 16 steps and at
# L=300 (the loop reference's backward costs O(L^2) there); reverse and the optional inputs
# (D, z, delta_bias, initial_state) toggle across the cases.
_SIZES = [(L, gn) for L in (1, 7) for gn in ((1, 1), (1, 16), (2, 1), (2, 16))]
_SIZES += [(63, (1, 16)), (63, (2, 1)), (64, (2, 16)), (64, (1, 1)), (65, (2, 16)), (65, (1, 1))]
_SIZES += [(300, (2, 16)), (300, (1, 1))]
CASES = [
    pytest.param(L, G, N, rev, extras, id=f"L{L}_G{G}_N{N}" + ("_rev" if rev else "") + ("" if extras else "_bare"))
    for L, (G, N), rev, extras in ((L, gn, i % 2 == 1, i % 3 != 2) for i, (L, gn) in enumerate(_SIZES))
]


@pytest.mark.parametrize("L,G,N,reverse,extras", CASES)
def test_chunked_matches_reference_float32(L, G, N, reverse, extras):
    inputs = sample_inputs(batch=1 if L == 300 else 2, L=L, groups=G, nstate=N,
                           skip=extras, gate=extras, bias=extras, init=extras)
    chunk = 16 if L >= 63 else None
    assert_close_to_reference(inputs, 1e-4, reverse=reverse, chunk_size=chunk)


@pytest.mark.parametrize("L,G,N,reverse", [
    pytest.param(7, 2, 16, False, id="L7_G2_N16"),
    pytest.param(65, 1, 16, True, id="L65_G1_N16_rev"),
    pytest.param(150, 2, 1, False, id="L150_G2_N1"),
])
def test_chunked_matches_reference_bfloat16(L, G, N, reverse):
    inputs = sample_inputs(L=L, groups=G, nstate=N, dtype=torch.bfloat16)
    assert_close_to_reference(inputs, 1e-2, reverse=reverse, chunk_size=32)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bounds", [pytest.param([0, 5, 5, 6, 40, 90], id="five_with_empty_and_single"),
                                    pytest.param([0, 90], id="one")])
def test_packed_sequences_match_reference(bounds, reverse):
    """cu_seqlens restarts the state per sequence, including an empty and a length-1 sequence."""
    cu = torch.tensor(bounds, dtype=torch.int32)
    inputs = sample_inputs(batch=1, L=bounds[-1], groups=2, nstate=16, nseq=len(bounds) - 1)
    assert_close_to_reference(inputs, 1e-4, reverse=reverse, cu_seqlens=cu, chunk_size=16)


def test_packed_equals_separate_calls():
    """A packed batch gives each sequence exactly what a call on that sequence alone gives."""
    bounds = [0, 9, 40, 41]
    inputs = sample_inputs(batch=1, L=41, groups=1, nstate=4, nseq=3, dtype=torch.float64)
    y, final = run_scan(selective_scan_chunked, inputs, cu_seqlens=torch.tensor(bounds), chunk_size=8)
    for s, (a, b) in enumerate(itertools.pairwise(bounds)):
        part = {k: v for k, v in inputs.items()}
        for k in ("u", "delta", "z"):
            part[k] = inputs[k][..., a:b]
        for k in ("B", "C"):
            part[k] = inputs[k][..., a:b]
        part["initial_state"] = inputs["initial_state"][s : s + 1]
        ys, fs = run_scan(selective_scan_chunked, part, chunk_size=8)
        torch.testing.assert_close(y[..., a:b], ys, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(final[s : s + 1], fs, rtol=1e-12, atol=1e-12)


def test_reverse_equals_flipped_forward():
    inputs = sample_inputs(L=50, groups=2, nstate=4, dtype=torch.float64)
    flipped = {k: (v.flip(-1) if k in ("u", "delta", "z", "B", "C") else v) for k, v in inputs.items()}
    y_rev, f_rev = run_scan(selective_scan_chunked, inputs, reverse=True, chunk_size=16)
    y_fwd, f_fwd = run_scan(selective_scan_chunked, flipped, chunk_size=16)
    torch.testing.assert_close(y_rev, y_fwd.flip(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f_rev, f_fwd, rtol=1e-12, atol=1e-12)


def test_chunk_size_does_not_change_the_result():
    inputs = sample_inputs(L=70, groups=2, nstate=8, dtype=torch.float64)
    gy = torch.randn(2, 60, 70, dtype=torch.float64)
    gf = torch.randn(2, 60, 8, dtype=torch.float64)
    results = [outputs_and_grads(selective_scan_chunked, leaf_copy(inputs), gy, gf, chunk_size=c)
               for c in (1, 3, 16, 70, 1000)]
    y0, f0, g0 = results[0]
    for y, f, g in results[1:]:
        torch.testing.assert_close(y, y0, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(f, f0, rtol=1e-10, atol=1e-12)
        for k in g0:
            torch.testing.assert_close(g[k], g0[k], rtol=1e-10, atol=1e-12)


def test_gradient_through_only_the_output_or_only_the_final_state():
    inputs = leaf_copy(sample_inputs(L=20, groups=2, nstate=4, dtype=torch.float64))
    y, final = run_scan(selective_scan_chunked, inputs, chunk_size=8)
    y_ref, final_ref = run_scan(selective_scan_reference, inputs)
    for out, ref in ((final, final_ref), (y, y_ref)):
        g = torch.autograd.grad(out.sum(), [inputs["u"], inputs["A"], inputs["initial_state"]], retain_graph=True)
        g_ref = torch.autograd.grad(ref.sum(), [inputs["u"], inputs["A"], inputs["initial_state"]], retain_graph=True)
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_no_softplus_and_no_optional_inputs():
    inputs = sample_inputs(L=33, groups=1, nstate=4, skip=False, gate=False, bias=False, init=False)
    inputs["delta"] = inputs["delta"].abs() * 0.2
    assert_close_to_reference(inputs, 1e-4, delta_softplus=False, chunk_size=8)


def test_output_without_final_state_and_empty_sequence():
    inputs = sample_inputs(L=0, groups=1, nstate=4)
    y, final = run_scan(selective_scan_chunked, inputs)
    assert y.shape == (2, 60, 0)
    torch.testing.assert_close(final, inputs["initial_state"])
    u = torch.randn(1, 6, 9)
    y = selective_scan(u, torch.randn(1, 6, 9), -torch.rand(6, 2), torch.randn(1, 3, 2, 9),
                       torch.randn(1, 3, 2, 9), backend="chunked")
    assert isinstance(y, torch.Tensor) and y.shape == u.shape


def test_auto_backend_on_cpu_is_chunked(monkeypatch):
    inputs = sample_inputs(L=20, groups=2, nstate=4, dtype=torch.float64)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C")]
    y_auto = selective_scan(*args, D=inputs["D"], z=inputs["z"], backend="auto")
    y_ref = selective_scan(*args, D=inputs["D"], z=inputs["z"], backend="reference")
    torch.testing.assert_close(y_auto, y_ref, rtol=1e-10, atol=1e-12)
    monkeypatch.setenv("SSMKIT_BACKEND", "reference")
    torch.testing.assert_close(selective_scan(*args), selective_scan_reference(*args), rtol=0, atol=0)


# --- gradcheck in float64 through the public function ------------------------------------------

@pytest.mark.parametrize("backend", ["chunked", "reference"])
@pytest.mark.parametrize("reverse,packed", [pytest.param(False, False, id="forward"),
                                            pytest.param(True, False, id="reverse"),
                                            pytest.param(False, True, id="packed")])
def test_gradcheck_public(backend, reverse, packed):
    if packed:
        inputs = sample_inputs(batch=1, dim=4, L=6, groups=2, nstate=3, nseq=3, dtype=torch.float64)
        kw = {"cu_seqlens": torch.tensor([0, 2, 2, 6])}
    else:
        inputs = sample_inputs(batch=2, dim=4, L=5, groups=2, nstate=3, dtype=torch.float64)
        kw = {}
    leaves = leaf_copy(inputs)
    names = [k for k in NAMES if leaves[k] is not None]

    def fn(*tensors):
        given = dict(zip(names, tensors))
        args = [given[k] for k in ("u", "delta", "A", "B", "C")]
        rest = {k: given[k] for k in ("D", "z", "delta_bias", "initial_state")}
        return selective_scan(*args, **rest, return_final_state=True, reverse=reverse, backend=backend, **kw)

    assert torch.autograd.gradcheck(fn, [leaves[k] for k in names], eps=1e-6, atol=1e-7)


def test_gradcheck_chunked_across_chunk_boundaries():
    inputs = leaf_copy(sample_inputs(batch=1, dim=4, L=9, groups=2, nstate=2, dtype=torch.float64))
    names = list(NAMES)

    def fn(*tensors):
        return run_scan(selective_scan_chunked, dict(zip(names, tensors)), chunk_size=2, reverse=True)

    assert torch.autograd.gradcheck(fn, [inputs[k] for k in names], eps=1e-6, atol=1e-7)


# --- long sequences ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("decay", ["strong", "none"])
def test_long_sequence_is_finite_and_accurate(decay):
    """L=65536: strong decay (dt·A down to about -9 per step) and almost none (A = -1e-5)."""
    L = 65536
    if decay == "strong":
        inputs = sample_inputs(batch=1, dim=4, L=L, nstate=4, decay=(1.0, 6.0), gate=False)
        inputs["delta"] = inputs["delta"] + 2.0
    else:
        inputs = sample_inputs(batch=1, dim=4, L=L, nstate=4, decay=(1e-6, 1e-5), gate=False)
        inputs["delta"] = inputs["delta"] - 3.0
    f32 = leaf_copy(inputs)
    f64 = leaf_copy(inputs, torch.float64)
    y32, s32 = run_scan(selective_scan_chunked, f32)
    y64, s64 = run_scan(selective_scan_chunked, f64)
    with torch.no_grad():
        y_ref, s_ref = run_scan(selective_scan_reference, {k: v.detach() for k, v in f64.items() if v is not None}
                                | {"z": None})
    torch.testing.assert_close(y64, y_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s64, s_ref, rtol=1e-9, atol=1e-9)
    assert torch.isfinite(y32).all() and torch.isfinite(s32).all()
    assert rel_err(y32, y_ref) < 1e-3 and rel_err(s32, s_ref) < 1e-3
    (y32.sum() + s32.sum()).backward()
    (y64.sum() + s64.sum()).backward()
    for k in NAMES:
        if f32[k] is not None:
            assert torch.isfinite(f32[k].grad).all(), k
            assert rel_err(f32[k].grad, f64[k].grad) < 1e-3, k


# --- errors --------------------------------------------------------------------------------------

def _args(batch=1, dim=6, L=8, groups=2, nstate=3):
    return {"u": torch.randn(batch, dim, L), "delta": torch.randn(batch, dim, L), "A": -torch.rand(dim, nstate),
                "B": torch.randn(batch, groups, nstate, L), "C": torch.randn(batch, groups, nstate, L)}


@pytest.mark.parametrize(
    "change,error,match",
    [
        pytest.param({"u": torch.randn(6, 8)}, ValueError, r"u must be \[B, D, L\].*\[6, 8\]", id="u_2d"),
        pytest.param({"A": torch.randn(5, 3)}, ValueError, r"A must be \[D, N\] with D=6.*\[5, 3\]", id="A_rows"),
        pytest.param({"B": torch.randn(1, 2, 3)}, ValueError, r"B must be \[B, G, N, L\]", id="B_3d"),
        pytest.param({"B": torch.randn(1, 4, 3, 8), "C": torch.randn(1, 4, 3, 8)}, ValueError, r"G=4 .* D=6",
                     id="groups_do_not_divide"),
        pytest.param({"delta": torch.randn(1, 6, 7)}, ValueError, r"delta has shape \[1, 6, 7\]; expected \[B, D, L\]",
                     id="delta_length"),
        pytest.param({"C": torch.randn(1, 2, 3, 9)}, ValueError, r"C has shape \[1, 2, 3, 9\]", id="C_length"),
        pytest.param({"D": torch.randn(5)}, ValueError, r"D has shape \[5\]; expected \[D\] = \[6\]", id="D_length"),
        pytest.param({"z": torch.randn(2, 6, 8)}, ValueError, r"z has shape", id="z_batch"),
        pytest.param({"delta_bias": torch.randn(6, 1)}, ValueError, r"delta_bias has shape", id="delta_bias_2d"),
        pytest.param({"initial_state": torch.randn(1, 3, 6)}, ValueError,
                     r"initial_state has shape \[1, 3, 6\].*\[1, 6, 3\]",
                     id="initial_state_shape"),
        pytest.param({"delta": torch.ones(1, 6, 8, dtype=torch.int64)}, TypeError, r"delta has dtype torch.int64",
                     id="delta_int"),
        pytest.param({"D": [1.0] * 6}, TypeError, r"D must be a torch.Tensor", id="D_list"),
        pytest.param({"delta": None}, TypeError, r"delta must be a torch.Tensor of shape \[B, D, L\]",
                     id="delta_missing"),
        pytest.param({"C": None}, TypeError, r"C must be a torch.Tensor of shape \[B, G, N, L\]", id="C_missing"),
        pytest.param({"backend": "cuda"}, ValueError, r"selective_scan backend must be one of .*; got 'cuda'",
                     id="backend_unknown"),
    ],
)
def test_bad_inputs_raise(change, error, match):
    kw = _args() | change
    with pytest.raises(error, match=match):
        selective_scan(**kw)


@pytest.mark.parametrize("name", ["u", "delta", "A", "B", "C"])
def test_non_finite_inputs_raise_when_checked(name):
    kw = _args()
    kw[name] = kw[name].clone()
    kw[name].view(-1)[3] = float("nan") if name != "A" else float("-inf")
    with pytest.raises(ValueError, match=rf"{name} contains 1 non-finite value"):
        selective_scan(**kw, check_finite=True)
    selective_scan(**kw)  # unchecked, the call goes through (the caller opted out)


@pytest.mark.parametrize(
    "cu,kw,error,match",
    [
        pytest.param(torch.tensor([[0, 8]]), {}, ValueError, r"cu_seqlens must be a 1-D", id="two_dims"),
        pytest.param(torch.tensor([0]), {}, ValueError, r"cu_seqlens must be a 1-D", id="one_bound"),
        pytest.param(torch.tensor([0.0, 8.0]), {}, TypeError, r"cu_seqlens has dtype torch.float32", id="float"),
        pytest.param(torch.tensor([0, 5, 3, 8]), {}, ValueError, r"without decreasing; got \[0, 5, 3, 8\]",
                     id="decreasing"),
        pytest.param(torch.tensor([0, 5, 7]), {}, ValueError, r"from 0 to L=8", id="short_of_L"),
        pytest.param(torch.tensor([1, 8]), {}, ValueError, r"from 0 to L=8", id="not_from_0"),
        pytest.param(torch.tensor([0, 4, 8]), {"initial_state": torch.randn(1, 6, 3)}, ValueError,
                     r"\[S, D, N\].*\[2, 6, 3\]",
                     id="initial_state_per_sequence"),
    ],
)
def test_bad_cu_seqlens_raise(cu, kw, error, match):
    with pytest.raises(error, match=match):
        selective_scan(**_args(), cu_seqlens=cu, **kw)


def test_packed_batch_must_be_one():
    with pytest.raises(ValueError, match=r"needs batch 1.*\[2, 6, 8\]"):
        selective_scan(**_args(batch=2), cu_seqlens=torch.tensor([0, 4, 8]))


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True])
def test_bad_chunk_size_raises(chunk):
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        selective_scan_chunked(**_args(), chunk_size=chunk)


def test_default_chunk_size_bounds():
    assert default_chunk_size(2, 256, 16) == 64
    assert default_chunk_size(1, 4, 1) == 256
    assert default_chunk_size(64, 4096, 64) == 16


def test_intra_op_thread_count_is_restored():
    """The chunked path caps PyTorch's threads for its small ops and must hand them back."""
    before = torch.get_num_threads()
    inputs = leaf_copy(sample_inputs(L=40, groups=2, nstate=4))
    y, final = run_scan(selective_scan_chunked, inputs, chunk_size=8)
    assert torch.get_num_threads() == before
    (y.sum() + final.sum()).backward()
    assert torch.get_num_threads() == before
