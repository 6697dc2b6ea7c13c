"""Mega's multi-dimensional damped EMA: the recurrent reference and the streaming step.

For every channel d and EMA dimension n (N of them per channel):

    h_t[d, n] = alpha[d, n] * beta[d, n] * x_t[d] + (1 - alpha[d, n] * delta[d, n]) * h_{t-1}[d, n]
    y_t[d]    = sum_n eta[d, n] * h_t[d, n]

``alpha`` (weight of the new input) and ``delta`` (damping) lie in [0, 1]; ``beta`` expands the
input into N dimensions and ``eta`` projects them back. Math in float32 (float64 when every input
is float64).
"""

from __future__ import annotations

import torch

from ssmkit.ops.utils import compute_dtype


def ema_step(
    x_t: torch.Tensor,
    state: torch.Tensor,
    alpha: torch.Tensor,
    delta: torch.Tensor,
    beta: torch.Tensor,
    eta: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step for streaming inference, O(D N).

    Args:
        x_t: [B, D] input at this step. state: [B, D, N] state after the previous step.
        alpha, delta, beta, eta: [D, N].

    Returns:
        (y_t [B, D] in x_t's dtype, new state [B, D, N] in the compute dtype).
    """
    cdt = compute_dtype(x_t, state, alpha, delta, beta, eta)
    a, d, b, e = (p.to(cdt) for p in (alpha, delta, beta, eta))
    state = (1 - a * d) * state.to(cdt) + (a * b) * x_t.to(cdt)[..., None]
    y = (state * e).sum(-1)
    return y.to(x_t.dtype), state


def ema_reference(
    x: torch.Tensor,
    alpha: torch.Tensor,
    delta: torch.Tensor,
    beta: torch.Tensor,
    eta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
):
    """Loop-over-time damped EMA (inputs are assumed validated).

    Args:
        x: [B, D, L]. alpha, delta, beta, eta: [D, N]. initial_state: [B, D, N].

    Returns:
        y [B, D, L] in x's dtype, or (y, final state [B, D, N] in the compute dtype).
    """
    cdt = compute_dtype(x, alpha, delta, beta, eta, initial_state)
    B, D, L = x.shape
    N = alpha.shape[-1]
    state = initial_state.to(cdt) if initial_state is not None else x.new_zeros(B, D, N, dtype=cdt)
    xc = x.to(cdt)
    ys = []
    for t in range(L):
        y_t, state = ema_step(xc[:, :, t], state, alpha, delta, beta, eta)
        ys.append(y_t)
    y = torch.stack(ys, dim=-1) if ys else xc.new_zeros(B, D, 0)
    y = y.to(x.dtype)
    return (y, state) if return_final_state else y
