"""Gated linear attention (GLA): the recurrent reference, the definition of correct.

    S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t        S: [K, V] per batch and head
    o_t = scale * q_t S_t

A plain loop over time. Math runs in float32 (float64 when every input is float64), so the
reference doubles as a float64 oracle for gradcheck.
"""

from __future__ import annotations

import itertools

import torch


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    present = [t for t in tensors if t is not None]
    return torch.float64 if all(t.dtype == torch.float64 for t in present) else torch.float32


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
    cdt = _compute_dtype(q, k, v, gk, initial_state)
    qc, kc, vc, gc = (t.to(cdt) for t in (q, k, v, gk))
    B, H, _, K = q.shape
    V = v.shape[-1]
    if cu_seqlens is None:
        h0 = initial_state.to(cdt) if initial_state is not None else qc.new_zeros(B, H, K, V)
        o, ht = _recurrent_one(qc, kc, vc, gc, scale, h0)
        return o.to(v.dtype), (ht if output_final_state else None)
    bounds = [int(b) for b in cu_seqlens.tolist()]
    outs, finals = [], []
    for n, (s, e) in enumerate(itertools.pairwise(bounds)):
        h0 = initial_state[n : n + 1].to(cdt) if initial_state is not None else qc.new_zeros(1, H, K, V)
        o, ht = _recurrent_one(qc[:, :, s:e], kc[:, :, s:e], vc[:, :, s:e], gc[:, :, s:e], scale, h0)
        outs.append(o)
        finals.append(ht)
    o = torch.cat(outs, dim=2)
    return o.to(v.dtype), (torch.cat(finals, dim=0) if output_final_state else None)
