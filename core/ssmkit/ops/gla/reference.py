"""Gated linear attention (GLA): the recurrent reference, the definition of correct.

    S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t        S: [K, V] per batch and head
    o_t = scale * q_t S_t

A plain loop over time. Math runs in float32 (float64 when every input is float64), so the
reference doubles as a float64 oracle for gradcheck.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ssmkit.ops.utils import compute_dtype, sequence_spans


def _recurrent_one(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, gk: [B, H, T, K]; v: [B, H, T, V]; state: [B, H, K, V] -> (o [B, H, T, V], state)."""
    outs = []
    for t in range(q.shape[2]):
        state = gk[:, :, t, :, None].exp() * state + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], state) * scale)
    o = torch.stack(outs, dim=2) if outs else v.new_zeros(v.shape)
    return o, state


def gla_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Loop-over-time GLA on head-first inputs (inputs are assumed validated).

    Args:
        q, k, gk: [B, H, T, K]; v: [B, H, T, V]; gk is the log forget gate (<= 0).
        initial_state: [N, H, K, V] with N = B, or N = number of sequences with ``cu_seqlens``.
        cu_seqlens: [N+1] boundaries of sequences packed along T (B == 1).

    Returns:
        (o [B, H, T, V] in v's dtype, final state [N, H, K, V] in the compute dtype or None).
    """
    return per_sequence(lambda q, k, v, g, h0: _recurrent_one(q, k, v, g, scale, h0), q, k, v, gk, initial_state,
                        output_final_state, cu_seqlens)


def per_sequence(
    one: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``one(q, k, v, gk, h0) -> (o, final state)`` in the compute dtype over the batch, or over
    each packed sequence with ``cu_seqlens`` (the state restarts from ``initial_state[n]`` or zero).
    Shapes as in :func:`gla_reference`; every backend written in PyTorch shares this driver."""
    cdt = compute_dtype(q, k, v, gk, initial_state)
    qc, kc, vc, gc = (t.to(cdt) for t in (q, k, v, gk))
    B, H, T, K = q.shape
    V = v.shape[-1]
    if cu_seqlens is None:
        h0 = initial_state.to(cdt) if initial_state is not None else qc.new_zeros(B, H, K, V)
        o, ht = one(qc, kc, vc, gc, h0)
        return o.to(v.dtype), (ht if output_final_state else None)
    outs, finals = [], []
    for n, (s, e) in enumerate(sequence_spans(T, cu_seqlens)):
        h0 = initial_state[n : n + 1].to(cdt) if initial_state is not None else qc.new_zeros(1, H, K, V)
        o, ht = one(qc[:, :, s:e], kc[:, :, s:e], vc[:, :, s:e], gc[:, :, s:e], h0)
        outs.append(o)
        finals.append(ht)
    o = torch.cat(outs, dim=2)
    return o.to(v.dtype), (torch.cat(finals, dim=0) if output_final_state else None)
