"""Reference selective scan (Mamba-1 / S6): a plain loop over time. The definition of correct.

Recurrence, per channel d and state index n (g = d // (D // G) is the channel's group):

    dt[t]   = softplus(delta[t] + delta_bias)          (or delta[t] + delta_bias)
    h[t]    = exp(dt[t] * A[d, n]) * h[t-1] + dt[t] * B[g, n, t] * u[t]
    y[t]    = sum_n C[g, n, t] * h[t][n] + D[d] * u[t]
    y[t]   *= silu(z[t])                                (when z is given)

Math runs in float32 (float64 when every input is float64). Autograd through this loop is
slow; tests keep it to small shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmkit.ops.utils import compute_dtype, sequence_spans


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
):
    """Loop-over-time selective scan. Shapes as in :func:`ssmkit.ops.selective_scan.selective_scan`.

    u, delta, z: [B, D, L]; A: [D, N]; B, C: [B, G, N, L]; D, delta_bias: [D];
    initial_state: [B, D, N] (or [S, D, N] with ``cu_seqlens`` of S+1 boundaries and batch 1).
    Returns y [B, D, L] in u's dtype, and the final state [B, D, N] (or [S, D, N]) in the
    compute dtype when ``return_final_state``.
    """
    out_dtype = u.dtype
    compute = compute_dtype(u)  # float64 only for float64 inputs; u stands for all of them
    batch, dim, L = u.shape
    groups, nstate = B.shape[1], B.shape[2]
    u_, dt = u.to(compute), delta.to(compute)
    if delta_bias is not None:
        dt = dt + delta_bias.to(compute)[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A_ = A.to(compute)
    # Expand groups to channels: [B, G, N, L] -> [B, D, N, L]
    Bx = B.to(compute).repeat_interleave(dim // groups, dim=1)
    Cx = C.to(compute).repeat_interleave(dim // groups, dim=1)

    segments = sequence_spans(L, cu_seqlens)
    ys = [None] * L
    finals = []
    for s, (start, end) in enumerate(segments):
        if initial_state is None:
            h = u_.new_zeros(batch, dim, nstate)
        elif cu_seqlens is None:
            h = initial_state.to(compute)
        else:
            h = initial_state[s : s + 1].to(compute)
        steps = range(end - 1, start - 1, -1) if reverse else range(start, end)
        for t in steps:
            dA = torch.exp(dt[:, :, t, None] * A_)
            h = dA * h + (dt[:, :, t] * u_[:, :, t])[:, :, None] * Bx[:, :, :, t]
            ys[t] = (h * Cx[:, :, :, t]).sum(-1)
        finals.append(h)
    y = torch.stack(ys, dim=-1) if L > 0 else u_.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + D.to(compute)[None, :, None] * u_
    if z is not None:
        y = y * F.silu(z.to(compute))
    y = y.to(out_dtype)
    if not return_final_state:
        return y
    final = finals[0] if cu_seqlens is None else torch.cat(finals, dim=0)
    return y, final
