"""Reference multi-path selective scan: materialise each path's copy, scan it, scatter it back.

This is the oracle for :func:`ssmkit.ops.path_scan.fused_path_scan`. It is deliberately the
plainest possible pipeline: for each path ``k`` it gathers a permuted copy of the shared
input, runs the 1-D reference selective scan on it, and scatters the output back to raster
positions with ``index_copy`` (not with an inverse permutation, so it does not share that
code with the fast path).
"""

from __future__ import annotations

import torch

from ssmkit.ops.selective_scan.reference import selective_scan_reference


def path_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    path_index: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    reduce: str = "sum",
) -> torch.Tensor:
    """Loop over the K paths. Shapes as in :func:`ssmkit.ops.path_scan.fused_path_scan`.

    u: [B, D, L] raster order; delta: [B, K*D, L], B/C: [B, K*g, N, L] in visit order;
    A: [K*D, N]; D, delta_bias: [K*D]; path_index: [K, L].
    Returns [B, D, L] (reduce "sum"/"mean") or [B, K, D, L] (reduce "none"), raster order.
    """
    K, L = path_index.shape
    dim = u.shape[1]
    g = B.shape[1] // K  # groups per path
    outs = []
    for k in range(K):
        ch = slice(k * dim, (k + 1) * dim)
        u_k = u.index_select(-1, path_index[k])  # the materialised copy this path reads
        y_k = selective_scan_reference(
            u_k, delta[:, ch], A[ch], B[:, k * g : (k + 1) * g], C[:, k * g : (k + 1) * g],
            D=None if D is None else D[ch],
            delta_bias=None if delta_bias is None else delta_bias[ch],
            delta_softplus=delta_softplus,
        )
        outs.append(torch.zeros_like(y_k).index_copy(-1, path_index[k], y_k))
    if reduce == "none":
        return torch.stack(outs, dim=1)
    total = outs[0]
    for o in outs[1:]:
        total = total + o
    return total / K if reduce == "mean" else total
