"""Mega's damped EMA as one causal convolution computed with the FFT (parallel over time).

Unrolling the recurrence gives ``y_t = sum_{s<=t} kern[t - s] x_s`` with the kernel

    kern[d, j] = sum_n eta[d, n] * alpha[d, n] * beta[d, n] * q[d, n] ** j,   q = 1 - alpha * delta,

so the whole sequence costs O(D L log L). Powers are taken in log space,
``q ** j = exp(j * log q)``, which is exact for q in (0, 1] and never overflows. The FFT length
is 2L so the circular convolution equals the linear (causal) one.
"""

from __future__ import annotations

import torch

from ssmkit.ops.utils import compute_dtype


def _powers(q: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """q [D, N], steps [S] -> q ** steps, [D, N, S]."""
    tiny = torch.finfo(q.dtype).tiny  # q == 0 (alpha = delta = 1) would give 0 * log 0 = nan
    return torch.exp(steps * q.clamp_min(tiny).log()[..., None])


def ema_kernel(alpha: torch.Tensor, delta: torch.Tensor, beta: torch.Tensor, eta: torch.Tensor,
               length: int) -> torch.Tensor:
    """The EMA's impulse response, [D, length] (in the dtype of the parameters)."""
    q = 1 - alpha * delta
    steps = torch.arange(length, device=alpha.device, dtype=alpha.dtype)
    return torch.einsum("dn,dnl->dl", eta * alpha * beta, _powers(q, steps))


def ema_fft(
    x: torch.Tensor,
    alpha: torch.Tensor,
    delta: torch.Tensor,
    beta: torch.Tensor,
    eta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
):
    """FFT-convolution damped EMA; same contract as :func:`ema_reference`.

    Args:
        x: [B, D, L]. alpha, delta, beta, eta: [D, N]. initial_state: [B, D, N].

    Returns:
        y [B, D, L] in x's dtype, or (y, final state [B, D, N] in the compute dtype).
    """
    cdt = compute_dtype(x, alpha, delta, beta, eta, initial_state)
    a, d, b, e = (p.to(cdt) for p in (alpha, delta, beta, eta))
    xc = x.to(cdt)
    L = x.shape[-1]
    if L == 0:
        y = x.new_zeros(x.shape)
        if not return_final_state:
            return y
        h0 = initial_state.to(cdt) if initial_state is not None else x.new_zeros(*x.shape[:2], a.shape[-1], dtype=cdt)
        return y, h0
    kern = ema_kernel(a, d, b, e, L)  # [D, L]
    n_fft = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(xc, n=n_fft) * torch.fft.rfft(kern, n=n_fft), n=n_fft)[..., :L]
    q = 1 - a * d
    if initial_state is not None:
        # the initial state decays as q ** (t + 1) and is read out through eta
        decay = _powers(q, torch.arange(1, L + 1, device=x.device, dtype=cdt))  # [D, N, L]
        y = y + torch.einsum("bdn,dnl->bdl", initial_state.to(cdt) * e, decay)
    y_out = y.to(x.dtype)
    if not return_final_state:
        return y_out
    # h_L = q**L h_0 + alpha beta sum_s q**(L-1-s) x_s
    back = _powers(q, torch.arange(L - 1, -1, -1, device=x.device, dtype=cdt))  # [D, N, L]
    hL = torch.einsum("bdl,dnl->bdn", xc, back) * (a * b)
    if initial_state is not None:
        hL = hL + initial_state.to(cdt) * _powers(q, torch.tensor([float(L)], device=x.device, dtype=cdt))[..., 0]
    return y_out, hL
