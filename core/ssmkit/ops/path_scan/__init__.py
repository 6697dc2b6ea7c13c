"""Multi-path selective scan: K scans of one feature map along K index paths, merged back.

This is the op under SS2D/SS3D. A 2-D/3-D scan strategy visits the same map along K paths
(``path_index[k, t]`` = raster position visited by path ``k`` at step ``t``). The naive
pipeline writes K permuted copies of the map, runs a 1-D scan on them and permutes the K
outputs back. Here the shared input ``u`` and the output stay in raster order and the op does
the gather / scatter itself:

- ``backend="reference"``: :func:`path_scan_reference`, a loop over paths that materialises
  each copy and scans it with the reference loop: the oracle.
- ``"triton"`` (asked for explicitly): the Triton selective scan's ``path_index`` mode. Its
  kernels read ``u`` (and, in the backward, the merged output gradient) through the path index,
  so the K permuted copies of the map are never written nor kept for the backward; each path's
  output and du land at raster positions in a transient [B, K*D, L] buffer that is summed.
  A map stored channels-last (a [B, D, L] view of [B, L, D] storage, as SS2D makes on CUDA) is
  read in place, so a step's channels are one contiguous run along any path.
- ``"auto"``: on CUDA with a channels-last map, the ``"triton"`` path-index mode: on an H100
  (bf16, B=8, D=384, cross, 64x64 and 128x128) it ran 1.32-1.52x faster than the materialising
  pipeline with 0.4-0.5x its peak memory. Otherwise the batched path below: with a channels-first map the
  in-kernel gathers touch one 32-byte sector per element along column paths, and the mode was
  1.2-2.4x slower than the batched path (docs/kernels.md, "Path-index mode").
- ``"chunked"`` and the other 1-D backends: the batched path (on CUDA its 1-D scan is the
  Triton selective scan).
- the batched path in detail: one gather builds all K paths at once,
  one selective-scan call runs over K*D channels with the paths as groups, and the outputs
  are merged by their exact inverse permutations.

The per-path inputs ``delta``, ``B`` and ``C`` are taken already in visit order: SS2D builds
them from a low-rank projection that it gathers cheaply (R + 2N channels instead of D).
"""

from __future__ import annotations

import torch

from ssmkit._checks import one_of
from ssmkit.ops.path_scan.reference import path_scan_reference
from ssmkit.ops.selective_scan import BACKENDS, resolve_backend, selective_scan
from ssmkit.ops.utils import channels_last_map, inverse_permutation, pairwise_sum
from ssmkit.ops.utils import format_shape as _shape

REDUCTIONS = ("sum", "mean", "none")


def _validate(u, delta, A, B, C, D, delta_bias, path_index, path_inverse, reduce, backend) -> None:
    one_of(reduce, REDUCTIONS, "reduce", "fused_path_scan")
    one_of(backend, BACKENDS, "backend", "fused_path_scan")
    if not isinstance(u, torch.Tensor) or u.dim() != 3:
        raise ValueError(f"u must be [B, D, L] (batch, channels, raster length); got {_shape(u)}")
    if not isinstance(path_index, torch.Tensor) or path_index.dim() != 2:
        raise ValueError(f"path_index must be a [K, L] integer tensor of raster positions; got {_shape(path_index)}")
    if path_index.dtype != torch.int64:
        raise TypeError(f"path_index has dtype {path_index.dtype}; expected torch.int64")
    K, L = path_index.shape
    batch, dim, length = u.shape
    if length != L:
        raise ValueError(f"path_index is [K, L] = {_shape(path_index)} but u has L={length} ({_shape(u)})")
    if path_index.device != u.device:
        raise ValueError(f"path_index is on {path_index.device} but u is on {u.device}; expected one device")
    if path_inverse is not None and (path_inverse.shape != path_index.shape or path_inverse.dtype != torch.int64):
        raise ValueError(f"path_inverse must be int64 {_shape(path_index)} like path_index; got {_shape(path_inverse)}")
    if not isinstance(delta, torch.Tensor) or tuple(delta.shape) != (batch, K * dim, L):
        raise ValueError(f"delta must be [B, K*D, L] = [{batch}, {K * dim}, {L}] (path-major channels); "
                         f"got {_shape(delta)}")
    if not isinstance(A, torch.Tensor) or A.dim() != 2 or A.shape[0] != K * dim:
        raise ValueError(f"A must be [K*D, N] with K*D={K * dim}; got {_shape(A)}")
    if not isinstance(B, torch.Tensor) or B.dim() != 4 or B.shape[1] % K != 0:
        raise ValueError(f"B must be [B, G, N, L] with G a multiple of K={K} (groups per path); got {_shape(B)}")
    want = (batch, B.shape[1], A.shape[1], L)
    for name, t in (("B", B), ("C", C)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != want:
            raise ValueError(f"{name} must be [B, G, N, L] = {list(want)}; got {_shape(t)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and (not isinstance(t, torch.Tensor) or tuple(t.shape) != (K * dim,)):
            raise ValueError(f"{name} must be [K*D] = [{K * dim}]; got {_shape(t)}")
    devices = {n: t.device for n, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D),
                                         ("delta_bias", delta_bias)) if isinstance(t, torch.Tensor)}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all inputs must be on one device; got {devices}")


def fused_path_scan(
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
    path_inverse: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Selective scan of one map along K paths, merged back to raster order.

    Args:
        u: [B, D, L] shared input in raster order (every path reads it).
        delta: [B, K*D, L] per-path step sizes, path-major (channel ``k*D + d``), in visit order.
        A: [K*D, N] per-path state matrices.
        B, C: [B, G, N, L] in visit order, G = K*g (g groups per path, path k owns groups
            ``k*g .. k*g+g-1``).
        path_index: [K, L] int64; row k is a permutation of range(L), the raster position
            that path k visits at each step.
        D, delta_bias: [K*D] per-path skip and step bias.
        reduce: "sum" | "mean" merge the paths into [B, D, L]; "none" returns the per-path
            outputs [B, K, D, L], each already back in raster order.
        path_inverse: the [K, L] inverse permutation, when the caller has it cached.
        backend: "reference" runs the materialising oracle; others pick the 1-D scan backend
            of the batched path (see :func:`ssmkit.ops.selective_scan.selective_scan`).

    Returns:
        [B, D, L] (or [B, K, D, L] for ``reduce="none"``) in u's dtype, raster order.
    """
    _validate(u, delta, A, B, C, D, delta_bias, path_index, path_inverse, reduce, backend)
    if backend == "reference":
        return path_scan_reference(u, delta, A, B, C, path_index, D=D, delta_bias=delta_bias,
                                   delta_softplus=delta_softplus, reduce=reduce)
    chosen = resolve_backend(backend, u.device)
    if backend == "triton" or (backend == "auto" and chosen == "triton" and channels_last_map(u)):
        from ssmkit.ops.selective_scan.triton_scan import selective_scan_triton

        return selective_scan_triton(u, delta, A, B, C, D=D, delta_bias=delta_bias, delta_softplus=delta_softplus,
                                     path_index=path_index, path_reduce=reduce)
    batch, dim, L = u.shape
    K = path_index.shape[0]
    gather_idx = path_index.view(1, K, 1, L).expand(batch, K, dim, L)
    # A single gather writes all K paths; the broadcast view of u costs no memory.
    u_paths = u.unsqueeze(1).expand(batch, K, dim, L).gather(-1, gather_idx).view(batch, K * dim, L)
    y = selective_scan(u_paths, delta, A, B, C, D=D, delta_bias=delta_bias,
                       delta_softplus=delta_softplus, backend=chosen)
    del u_paths
    inv = inverse_permutation(path_index) if path_inverse is None else path_inverse
    y = y.view(batch, K, dim, L)
    if reduce == "none":
        return y.gather(-1, inv.view(1, K, 1, L).expand(batch, K, dim, L))
    out = pairwise_sum(y[:, k].gather(-1, inv[k].expand(batch, dim, L)) for k in range(K))
    return out / K if reduce == "mean" else out


__all__ = ["REDUCTIONS", "fused_path_scan", "inverse_permutation", "pairwise_sum", "path_scan_reference"]
