"""Multi-path selective scan: the batched fast path against the materialising reference."""

from __future__ import annotations

import pytest
import torch

from ssmkit.ops.path_scan import fused_path_scan, inverse_permutation, path_scan_reference
from ssmkit.registry import create_scan
from tests.conftest import rel_err

TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}


def _inputs(batch, dim, nstate, shape, strategy, groups_per_path=1, dtype=torch.float32):
    index = create_scan(strategy).index(shape)
    K, L = index.shape
    G = K * groups_per_path
    u = torch.randn(batch, dim, L).to(dtype)
    delta = (0.5 * torch.randn(batch, K * dim, L)).to(dtype)
    A = -(torch.rand(K * dim, nstate) + 0.5)
    B = torch.randn(batch, G, nstate, L).to(dtype)
    C = torch.randn(batch, G, nstate, L).to(dtype)
    D = torch.randn(K * dim)
    bias = 0.3 * torch.randn(K * dim)
    return [u, delta, A, B, C, D, bias], index


@pytest.mark.parametrize(
    "strategy,shape,dim,gpp",
    [pytest.param("cross", (5, 7), 6, 1, id="cross_5x7"),
     pytest.param("sass", (4, 3), 4, 2, id="sass_4x3_two_groups_per_path"),
     pytest.param("diagonal", (1, 9), 3, 1, id="diagonal_1x9"),
     pytest.param("tri_orient", (3, 2, 4), 5, 1, id="tri_orient_3x2x4"),
     pytest.param("multi_order", (2, 3, 2), 2, 1, id="multi_order_2x3x2")],
)
@pytest.mark.parametrize("reduce", ["sum", "mean", "none"])
def test_batched_matches_reference_with_gradients(strategy, shape, dim, gpp, reduce):
    tensors, index = _inputs(2, dim, 3, shape, strategy, gpp)
    for t in tensors:
        t.requires_grad_(True)
    u, delta, A, B, C, D, bias = tensors
    ref = path_scan_reference(u, delta, A, B, C, index, D=D, delta_bias=bias, reduce=reduce)
    out = fused_path_scan(u, delta, A, B, C, index, D=D, delta_bias=bias, reduce=reduce, backend="chunked")
    assert out.shape == ref.shape
    assert rel_err(out, ref) < 1e-4
    gy = torch.randn_like(ref)
    g_ref = torch.autograd.grad(ref, tensors, gy)
    g_out = torch.autograd.grad(out, tensors, gy)
    for name, a, b in zip("u delta A B C D delta_bias".split(), g_out, g_ref):
        assert rel_err(a, b) < 1e-4, name


def test_bf16_inputs():
    tensors, index = _inputs(2, 4, 4, (3, 5), "cross", dtype=torch.bfloat16)
    u, delta, A, B, C, D, bias = tensors
    u.requires_grad_(True)
    ref = path_scan_reference(*[t.float() if t.dtype == torch.bfloat16 else t for t in tensors[:5]], index,
                              D=D, delta_bias=bias)
    out = fused_path_scan(u, delta, A, B, C, index, D=D, delta_bias=bias, backend="chunked")
    assert out.dtype == torch.bfloat16
    assert rel_err(out, ref) < 1e-2
    (gu,) = torch.autograd.grad(out.float().square().sum(), [u])
    assert gu.dtype == torch.bfloat16 and bool(torch.isfinite(gu).all())


def test_float64_gradcheck_through_the_reference():
    tensors, index = _inputs(1, 2, 2, (2, 3), "snake")
    tensors = [t.double().requires_grad_(True) for t in tensors]
    u, delta, A, B, C, D, bias = tensors
    assert torch.autograd.gradcheck(
        lambda *ts: fused_path_scan(ts[0], ts[1], ts[2], ts[3], ts[4], index, D=ts[5], delta_bias=ts[6],
                                    backend="chunked"),
        tuple(tensors), atol=1e-6, rtol=1e-4)


def test_one_path_identity_equals_the_1d_scan():
    from ssmkit.ops.selective_scan import selective_scan

    tensors, index = _inputs(2, 3, 2, (4, 5), "raster")
    u, delta, A, B, C, D, bias = tensors
    expected = selective_scan(u, delta, A, B, C, D=D, delta_bias=bias, backend="reference")
    torch.testing.assert_close(fused_path_scan(u, delta, A, B, C, index, D=D, delta_bias=bias), expected,
                               rtol=1e-5, atol=1e-5)


def test_cached_inverse_is_used_and_equal():
    tensors, index = _inputs(1, 2, 2, (3, 4), "cross")
    u, delta, A, B, C, D, bias = tensors
    inv = inverse_permutation(index)
    a = fused_path_scan(u, delta, A, B, C, index, D=D, path_inverse=inv)
    b = fused_path_scan(u, delta, A, B, C, index, D=D)
    assert torch.equal(a, b)


def test_errors_name_the_problem():
    tensors, index = _inputs(1, 2, 2, (3, 4), "cross")
    u, delta, A, B, C, D, bias = tensors
    with pytest.raises(ValueError, match=r"delta must be \[B, K\*D, L\] = \[1, 8, 12\]"):
        fused_path_scan(u, delta[:, :4], A, B, C, index)
    with pytest.raises(TypeError, match="int64"):
        fused_path_scan(u, delta, A, B, C, index.int())
    with pytest.raises(ValueError, match="L=12"):
        fused_path_scan(u, delta, A, B, C, index[:, :6])
    with pytest.raises(ValueError, match="multiple of K=4"):
        fused_path_scan(u, delta, A, B[:, :3], C[:, :3], index)
    with pytest.raises(ValueError, match="reduce"):
        fused_path_scan(u, delta, A, B, C, index, reduce="max")
    with pytest.raises(ValueError, match="backend"):
        fused_path_scan(u, delta, A, B, C, index, backend="cuda")
