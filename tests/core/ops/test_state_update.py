"""selective_state_update: stepping through a sequence equals the full scan (reference backend)."""

from __future__ import annotations

import pytest
import torch

from ssmkit.ops.selective_scan import selective_scan, selective_state_update
from ssmkit.ops.selective_scan.samples import sample_inputs
from tests.conftest import rel_err


def _inputs(batch, dim, L, N, groups, dtype, with_extras=True):
    """(u, delta, A, B, C, extras) from the shared builder; decay rates from 0.1 to 4.1."""
    ins = sample_inputs(batch, dim, L, N, groups=groups, dtype=dtype, skip=with_extras, gate=with_extras,
                        bias=with_extras, init=False, decay=(0.1, 4.1), bias_scale=0.3)
    extras = {k: ins[k] for k in ("D", "z", "delta_bias") if ins[k] is not None}
    return ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], extras


def _step_through(u, delta, A, Bm, Cm, extras, softplus=True, state=None):
    batch, dim, L = u.shape
    N = A.shape[1]
    state = torch.zeros(batch, dim, N) if state is None else state
    ys = []
    for t in range(L):
        ys.append(selective_state_update(
            state, u[:, :, t], delta[:, :, t], A, Bm[..., t], Cm[..., t],
            D=extras.get("D"), z=None if extras.get("z") is None else extras["z"][:, :, t],
            dt_bias=extras.get("delta_bias"), dt_softplus=softplus,
        ))
    return torch.stack(ys, dim=-1), state


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("with_extras", [True, False])
@pytest.mark.parametrize("L", [1, 7, 33])
def test_steps_equal_full_scan_float32(groups, with_extras, L):
    u, delta, A, Bm, Cm, extras = _inputs(2, 6, L, 5, groups, torch.float32, with_extras)
    y_ref, h_ref = selective_scan(u, delta, A, Bm, Cm, **extras, return_final_state=True, backend="reference")
    y, h = _step_through(u, delta, A, Bm, Cm, extras)
    assert y.dtype == torch.float32
    assert rel_err(y, y_ref) < 1e-5
    assert rel_err(h, h_ref) < 1e-5


def test_steps_without_softplus_and_with_initial_state():
    u, delta, A, Bm, Cm, extras = _inputs(3, 4, 9, 3, 2, torch.float32)
    delta = delta.abs() * 0.2  # without softplus, dt must stay positive
    h0 = torch.randn(3, 4, 3)
    y_ref, h_ref = selective_scan(u, delta, A, Bm, Cm, **extras, delta_softplus=False, initial_state=h0,
                                  return_final_state=True, backend="reference")
    y, h = _step_through(u, delta, A, Bm, Cm, extras, softplus=False, state=h0.clone())
    assert rel_err(y, y_ref) < 1e-5
    assert rel_err(h, h_ref) < 1e-5


def test_steps_equal_full_scan_float64_exactly():
    u, delta, A, Bm, Cm, extras = _inputs(2, 4, 12, 3, 2, torch.float64)
    A = A.double()
    extras = {k: v.double() for k, v in extras.items()}
    y_ref, h_ref = selective_scan(u, delta, A, Bm, Cm, **extras, return_final_state=True, backend="reference")
    y, h = _step_through(u, delta, A, Bm, Cm, extras, state=torch.zeros(2, 4, 3, dtype=torch.float64))
    assert y.dtype == torch.float64
    assert rel_err(y, y_ref) < 1e-12
    assert rel_err(h, h_ref) < 1e-12


def test_steps_bf16_inputs_match_float32_scan():
    u, delta, A, Bm, Cm, extras = _inputs(2, 8, 20, 4, 2, torch.bfloat16)
    # The float32 scan on the same (bf16-rounded) values is the oracle; only the output rounding differs.
    up = [t.float() for t in (u, delta, Bm, Cm)]
    ex32 = {k: v.float() for k, v in extras.items()}
    y_ref, h_ref = selective_scan(up[0], up[1], A, up[2], up[3], **ex32, return_final_state=True, backend="reference")
    y, h = _step_through(u, delta, A, Bm, Cm, extras)
    assert y.dtype == torch.bfloat16
    assert h.dtype == torch.float32
    assert rel_err(y, y_ref) < 1e-2
    assert rel_err(h, h_ref) < 1e-5


def test_state_updated_in_place_even_when_strided():
    u, delta, A, Bm, Cm, extras = _inputs(2, 6, 1, 4, 3, torch.float32)
    storage = torch.zeros(2, 4, 6).transpose(1, 2)  # [B, D, N] view with non-standard strides
    y_ref, h_ref = selective_scan(u, delta, A, Bm, Cm, **extras, return_final_state=True, backend="reference")
    selective_state_update(storage, u[..., 0], delta[..., 0], A, Bm[..., 0], Cm[..., 0], D=extras["D"],
                           z=extras["z"][..., 0], dt_bias=extras["delta_bias"])
    assert rel_err(storage, h_ref) < 1e-6


def test_one_group_shorthand_b_c_as_batch_by_state():
    u, delta, A, Bm, Cm, extras = _inputs(2, 5, 1, 3, 1, torch.float32)
    s1, s2 = torch.zeros(2, 5, 3), torch.zeros(2, 5, 3)
    y1 = selective_state_update(s1, u[..., 0], delta[..., 0], A, Bm[:, 0, :, 0], Cm[:, 0, :, 0])
    y2 = selective_state_update(s2, u[..., 0], delta[..., 0], A, Bm[..., 0], Cm[..., 0])
    assert torch.equal(y1, y2) and torch.equal(s1, s2)


def _good():
    batch, dim, N, G = 2, 6, 4, 2
    return dict(state=torch.zeros(batch, dim, N), x=torch.randn(batch, dim), dt=torch.randn(batch, dim),
                A=-torch.rand(dim, N), B=torch.randn(batch, G, N), C=torch.randn(batch, G, N),
                D=torch.randn(dim), z=torch.randn(batch, dim), dt_bias=torch.randn(dim))


@pytest.mark.parametrize("name, bad, err, match", [
    pytest.param("state", torch.zeros(2, 6), ValueError, r"state must be \[B, D, N\]", id="state_2d"),
    pytest.param("state", torch.zeros(2, 6, 4, dtype=torch.bfloat16), TypeError, "state has dtype torch.bfloat16",
                 id="state_bf16"),
    pytest.param("x", torch.randn(2, 5), ValueError, r"x has shape \[2, 5\]; expected \[B, D\] = \[2, 6\]",
                 id="x_shape"),
    pytest.param("dt", torch.randn(2, 6, 1), ValueError, r"dt has shape \[2, 6, 1\]", id="dt_shape"),
    pytest.param("A", -torch.rand(6, 3), ValueError, r"A has shape \[6, 3\]; expected \[D, N\] = \[6, 4\]",
                 id="A_shape"),
    pytest.param("B", torch.randn(2, 4, 4), ValueError, "G=4 groups, which does not divide D=6", id="B_groups"),
    pytest.param("B", torch.randn(2, 2, 4, 1), ValueError, r"B must be \[B, G, N\]", id="B_4d"),
    pytest.param("C", torch.randn(2, 2, 3), ValueError, r"C has shape \[2, 2, 3\]; expected \[B, G, N\] = \[2, 2, 4\]",
                 id="C_shape"),
    pytest.param("D", torch.randn(5), ValueError, r"D has shape \[5\]; expected \[D\] = \[6\]", id="D_shape"),
    pytest.param("z", torch.randn(3, 6), ValueError, r"z has shape \[3, 6\]", id="z_shape"),
    pytest.param("dt_bias", torch.randn(6, 1), ValueError, r"dt_bias has shape \[6, 1\]", id="dt_bias_shape"),
    pytest.param("x", torch.ones(2, 6, dtype=torch.int64), TypeError, "x has dtype torch.int64", id="x_int"),
    pytest.param("x", [[0.0] * 6] * 2, TypeError, "x must be a torch.Tensor", id="x_list"),
    pytest.param("A", torch.device("meta"), None, None, id="A_other_device"),
])
def test_bad_inputs_raise_clear_errors(name, bad, err, match):
    kw = _good()
    if isinstance(bad, torch.device):  # a tensor on another device than the rest
        kw[name] = kw[name].to(bad)
        err, match = ValueError, "all inputs must be on one device"
    else:
        kw[name] = bad
    state_before = kw["state"].clone() if isinstance(kw["state"], torch.Tensor) else None
    with pytest.raises(err, match=match):
        selective_state_update(**kw)
    if state_before is not None and kw["state"].shape == state_before.shape:
        assert torch.equal(kw["state"], state_before), "a rejected call must leave the state untouched"
