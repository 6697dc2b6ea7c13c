"""ops.ema: the FFT form against the recurrence (outputs, final state, every gradient) and
streaming with ema_step."""

from __future__ import annotations

import pytest
import torch

from ssmkit.ops.ema import ema, ema_step
from tests.conftest import assert_grads_close, rel_err


def _params(D, N, dtype=torch.float32):
    alpha = torch.sigmoid(torch.randn(D, N)).to(dtype).requires_grad_()
    delta = torch.sigmoid(torch.randn(D, N)).to(dtype).requires_grad_()
    beta = (torch.randn(D, N) * 0.5 + 1).to(dtype).requires_grad_()
    eta = torch.randn(D, N).to(dtype).requires_grad_()
    return [alpha, delta, beta, eta]


def _run(backend, x, params, h0):
    y, hL = ema(x, *params, initial_state=h0, return_final_state=True, backend=backend)
    w = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
    loss = (y.float() * w).sum() + hL.float().square().sum() * 0.1
    leaves = [x, *params] + ([h0] if h0 is not None else [])
    return y, hL, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,D,N,L,with_state", [pytest.param(2, 5, 3, 63, True, id="L63_state"),
                                                pytest.param(1, 3, 1, 1, True, id="L1_state"),
                                                pytest.param(3, 7, 4, 130, False, id="L130")])
def test_fft_matches_recurrence(B, D, N, L, with_state, dtype):
    x = torch.randn(B, D, L).to(dtype).requires_grad_()
    params = _params(D, N)  # parameters stay float32, as in a bf16 autocast model
    h0 = torch.randn(B, D, N, requires_grad=True) if with_state else None
    y_r, h_r, g_r = _run("reference", x, params, h0)
    y_f, h_f, g_f = _run("fft", x, params, h0)
    assert y_f.dtype == dtype and y_f.shape == (B, D, L)
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    assert rel_err(y_f, y_r) < tol and rel_err(h_f, h_r) < tol
    for a, e in zip(g_f, g_r):
        assert rel_err(a, e) < tol


@pytest.mark.parametrize("decay", [1e-3, 0.088, 0.9999])
def test_fft_long_sequences_stay_finite(decay):
    # q = 1 - alpha * delta; q ** L underflows float32 at long L for small q. Output, final state
    # and every gradient must stay finite and match the float64 recurrence.
    B, D, N, L = 2, 3, 2, 1000
    x = torch.randn(B, D, L, requires_grad=True)
    alpha = torch.full((D, N), 0.5)
    delta = ((1 - torch.full((D, N), decay)) / alpha).clamp(0, 1)
    params = [alpha.requires_grad_(), delta.requires_grad_(), torch.randn(D, N).requires_grad_(),
              torch.randn(D, N).requires_grad_()]
    h0 = torch.randn(B, D, N, requires_grad=True)
    y_f, h_f, g_f = _run("fft", x, params, h0)
    leaves64 = [t.detach().double().requires_grad_() for t in (x, *params, h0)]
    y_r, h_r, g_r = _run("reference", leaves64[0], leaves64[1:5], leaves64[5])
    assert torch.isfinite(y_f).all() and torch.isfinite(h_f).all(), "EMA output or final state is not finite"
    assert rel_err(y_f, y_r) < 1e-3 and rel_err(h_f, h_r) < 1e-3
    assert_grads_close(g_f, g_r, ("x", "alpha", "delta", "beta", "eta", "h0"), 1e-3)


def test_float64_agreement_and_gradcheck():
    x = torch.randn(2, 3, 17, dtype=torch.float64, requires_grad=True)
    params = _params(3, 2, torch.float64)
    h0 = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    y_r, h_r, g_r = _run("reference", x, params, h0)
    y_f, h_f, g_f = _run("fft", x, params, h0)
    assert rel_err(y_f, y_r) < 1e-12 and rel_err(h_f, h_r) < 1e-12
    assert all(rel_err(a, e) < 1e-11 for a, e in zip(g_f, g_r))

    def f(x, a, d, b, e, s):
        return ema(x, a, d, b, e, initial_state=s, return_final_state=True, backend="fft")

    assert torch.autograd.gradcheck(f, (x[:1, :, :6].detach().requires_grad_(), *params, h0[:1]))


def test_streaming_continues_a_parallel_prefix():
    x = torch.randn(2, 4, 40)
    params = [p.detach() for p in _params(4, 3)]
    y_full = ema(x, *params)
    y_pre, state = ema(x[..., :25], *params, return_final_state=True)
    ys = [y_pre]
    for t in range(25, 40):
        y_t, state = ema_step(x[..., t], state, *params)
        ys.append(y_t[..., None])
    assert rel_err(torch.cat(ys, -1), y_full) < 1e-5


def test_long_sequence_slow_decay_is_accurate():
    # q close to 1: the kernel barely decays over 4096 steps, the hardest case for the FFT
    x = torch.randn(1, 2, 4096)
    alpha = torch.full((2, 2), 0.01)
    delta = torch.full((2, 2), 0.01)
    beta, eta = torch.ones(2, 2), torch.ones(2, 2)
    assert rel_err(ema(x, alpha, delta, beta, eta, backend="fft"),
                   ema(x, alpha, delta, beta, eta, backend="reference")) < 1e-4


def test_validation_errors():
    x = torch.randn(2, 3, 5)
    p = [torch.full((3, 2), 0.5) for _ in range(4)]
    with pytest.raises(ValueError, match=r"\[B, D, L\]"):
        ema(x[0], *p)
    with pytest.raises(ValueError, match="alpha must be"):
        ema(x, torch.zeros(4, 2), *p[1:])
    with pytest.raises(ValueError, match="share"):
        ema(x, p[0], p[1], p[2], torch.zeros(3, 5))
    with pytest.raises(ValueError, match="initial_state"):
        ema(x, *p, initial_state=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ema(x, p[0] + 1, *p[1:], check_finite=True)
    with pytest.raises(ValueError, match=r"ema backend must be one of .*; got"):
        ema(x, *p, backend="triton")
