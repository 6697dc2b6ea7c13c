"""Gated linear attention (GLA): validated public entry point and backend dispatch.

    S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t,     o_t = scale * q_t S_t

Backends:
- ``"reference"``: loop over time (``reference.py``), the definition of correct;
- ``"chunked"``: chunked pure PyTorch with log-space secondary chunking (``chunked.py``), the
  CPU default and the GPU fallback; differentiated by autograd;
- ``"fla"``: fla-core's Triton ``fla.ops.gla.chunk_gla`` (``pip install fla-core``), imported
  lazily; its kernels are used as they are.

``backend="auto"`` picks fla on CUDA tensors when ``import fla`` works, chunked otherwise. The
environment variable ``SSMKIT_BACKEND`` overrides ``"auto"`` (values outside this op's backends,
such as ``"triton"``, map to ``"auto"``'s choice so one override can serve every op).

Contract of fla-core 0.6.0's ``chunk_gla(q, k, v, g, scale=None, initial_state=None,
output_final_state=False, state_v_first=False, cu_seqlens=None, cu_seqlens_cpu=None)``
(fla/ops/gla/chunk.py:1454): q, k, g ``[B, T, H, K]`` and v ``[B, T, H, V]`` ("time first"; no
``head_first`` argument, releases before 0.2 defaulted to ``head_first=True``); ``g`` is the
per-step natural-log forget gate, not cumulative (fla takes the chunk-local cumsum itself and
rescales it by 1/ln 2 for exp2, chunk.py:1223); ``scale`` defaults to ``K ** -0.5``;
``initial_state`` must be float32 (an assert) ``[N, H, K, V]`` unless ``state_v_first``;
``cu_seqlens`` is read by the kernels through its device pointer, so it must live on q's device
(``cu_seqlens_cpu`` is an optional host copy that spares a device sync); it returns
``(o, final_state)`` with o in v's dtype and the final state float32 ``[N, H, K, V]`` or None.
Its float32 matmuls run in TF32 unless ``TRITON_F32_DEFAULT=ieee``, so float32 results agree
with the reference to about 1e-3, not 1e-6. We inspect the signature and pin ``head_first=False``
and ``state_v_first=False`` where they exist, so fla always receives contiguous ``[B, T, H, *]``
tensors, a float32 ``initial_state`` on q's device and an int64 ``cu_seqlens`` on q's device.
"""

from __future__ import annotations

import functools
import inspect
import os

import torch

from ssmkit._checks import one_of
from ssmkit.ops.gla.chunked import gla_chunked
from ssmkit.ops.gla.reference import gla_reference
from ssmkit.ops.utils import check_cu_seqlens

BACKENDS = ("auto", "reference", "chunked", "fla")


@functools.lru_cache(maxsize=1)
def _fla_chunk_gla():
    """fla's chunk_gla, the layout keywords to pin, the name of its varlen argument, and whether it
    takes a host copy of the boundaries (``cu_seqlens_cpu``).

    Raises ImportError if fla-core is missing.
    """
    from fla.ops.gla import chunk_gla

    try:
        params = inspect.signature(chunk_gla).parameters
    except (TypeError, ValueError):  # a wrapped callable without a signature: assume recent fla
        params = {}
    # early fla-core releases called the packed-sequence boundaries ``offsets``
    varlen_name = "offsets" if "offsets" in params and "cu_seqlens" not in params else "cu_seqlens"
    fixed = {}
    if "head_first" in params:
        fixed["head_first"] = False  # releases before 0.2 default to head-first [B, H, T, K]
    if "state_v_first" in params:
        fixed["state_v_first"] = False  # recent releases can store states as [N, H, V, K]; ours are [N, H, K, V]
    return chunk_gla, fixed, varlen_name, "cu_seqlens_cpu" in params


def fla_status() -> tuple[bool, str]:
    """Whether fla-core's chunk_gla imports and, either way, why."""
    try:
        _fla_chunk_gla()
    except Exception as err:
        return False, f"fla-core does not import ({type(err).__name__}: {err}); pip install fla-core"
    return True, "fla-core available"


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``"auto"`` (or the SSMKIT_BACKEND override) to a concrete backend for ``device``."""
    one_of(backend, BACKENDS, "backend", "gla")
    if backend == "auto":
        env = os.environ.get("SSMKIT_BACKEND", "auto") or "auto"
        backend = env if env in BACKENDS else "auto"
    if backend == "auto":
        return "fla" if device.type == "cuda" and fla_status()[0] else "chunked"
    if backend == "fla":
        ok, why = fla_status()
        if not ok:
            raise RuntimeError(f"backend='fla' is unavailable: {why}")
        if device.type != "cuda":
            raise RuntimeError(f"backend='fla' needs CUDA tensors, got tensors on {device.type}")
    return backend


def _validate(q, k, v, gk, scale, initial_state, cu_seqlens, head_first, check_finite) -> None:
    for name, t in (("q", q), ("k", k), ("v", v), ("gk", gk)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            layout = "[B, H, T, *]" if head_first else "[B, T, H, *]"
            raise ValueError(f"{name} must be 4-D {layout}, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    if k.shape != q.shape or gk.shape != q.shape:
        raise ValueError(f"q, k and gk must share one shape; got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"gk {tuple(gk.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must match q in its first three dims {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    devices = {t.device for t in (q, k, v, gk)}
    if len(devices) != 1:
        raise ValueError(f"q, k, v, gk must be on one device, got {sorted(map(str, devices))}")
    if scale is not None and not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    B = q.shape[0]
    H = q.shape[1] if head_first else q.shape[2]
    K, V = q.shape[-1], v.shape[-1]
    n_states = B
    if cu_seqlens is not None:
        T = q.shape[2] if head_first else q.shape[1]
        n_states = check_cu_seqlens(cu_seqlens, T, B, shape=f"q of shape {list(q.shape)}", axis="T")
    if initial_state is not None:
        if not isinstance(initial_state, torch.Tensor):
            raise TypeError(f"initial_state must be a tensor, got {type(initial_state).__name__}")
        if tuple(initial_state.shape) != (n_states, H, K, V):
            raise ValueError(f"initial_state must be [N, H, K, V] = {(n_states, H, K, V)}, "
                             f"got {tuple(initial_state.shape)}")
    if check_finite:
        for name, t in (("q", q), ("k", k), ("v", v), ("gk", gk), ("initial_state", initial_state)):
            if t is not None and not torch.isfinite(t).all():
                raise ValueError(f"{name} holds NaN or inf")
        if (gk > 0).any():
            raise ValueError(f"gk is a log forget gate and must be <= 0; max is {float(gk.max()):.4g}")


def _gla_fla(q, k, v, gk, scale, initial_state, output_final_state, cu_seqlens):
    """fla's chunk_gla on time-first [B, T, H, *] tensors."""
    chunk_gla, fixed, varlen_name, takes_host_copy = _fla_chunk_gla()
    kw = dict(fixed)
    if cu_seqlens is not None:
        # fla's kernels load the boundaries through a device pointer: a host tensor would be read
        # as device memory, so move them next to q (int64, the dtype fla documents)
        kw[varlen_name] = cu_seqlens.to(device=q.device, dtype=torch.long)
        if takes_host_copy:
            kw["cu_seqlens_cpu"] = cu_seqlens.to(device="cpu", dtype=torch.long)  # spares a device sync
    if initial_state is not None:
        # fla asserts a float32 state; .to keeps the autograd link to the caller's tensor
        initial_state = initial_state.to(device=q.device, dtype=torch.float32)
    o, ht = chunk_gla(q.contiguous(), k.contiguous(), v.contiguous(), gk.contiguous(), scale=scale,
                      initial_state=initial_state, output_final_state=output_final_state, **kw)
    return o, (ht if output_final_state else None)


def gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    head_first: bool = True,
    backend: str = "auto",
    chunk_size: int = 64,
    check_finite: bool = False,
):
    """Gated linear attention with a per-key-channel log forget gate.

    Args:
        q, k: [B, H, T, K] (``head_first=False``: [B, T, H, K]).
        v: [B, H, T, V] (``head_first=False``: [B, T, H, V]).
        gk: [B, H, T, K] log forget gate, log-space and <= 0 (e.g. ``logsigmoid(x) / tau``).
        scale: multiplies q·S; default ``K ** -0.5``.
        initial_state: [N, H, K, V] state before the first step (differentiable); N = B, or the
            number of packed sequences with ``cu_seqlens``.
        output_final_state: also return the state after the last step, [N, H, K, V] float32
            (float64 for float64 inputs on the PyTorch backends; fla always returns float32);
            differentiable.
        cu_seqlens: [N+1] boundaries of N sequences packed along T (batch must be 1); the state
            restarts (from ``initial_state[n]`` or zero) at every boundary.
        head_first: layout of the inputs and the output. The layer uses ``False`` (its
            projections are already time-first, and that is fla's native layout).
        backend: "auto" | "reference" | "chunked" | "fla".
        chunk_size: chunk length of the "chunked" backend.
        check_finite: raise ValueError on NaN/inf inputs or a positive log gate.

    Returns:
        o in v's dtype and layout, or (o, final_state) when ``output_final_state``.
    """
    _validate(q, k, v, gk, scale, initial_state, cu_seqlens, head_first, check_finite)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    chosen = resolve_backend(backend, q.device)
    if chosen == "fla":
        if head_first:
            q, k, v, gk = (t.transpose(1, 2) for t in (q, k, v, gk))
        o, ht = _gla_fla(q, k, v, gk, float(scale), initial_state, output_final_state, cu_seqlens)
        if head_first:
            o = o.transpose(1, 2)
    else:
        if not head_first:
            q, k, v, gk = (t.transpose(1, 2) for t in (q, k, v, gk))
        if chosen == "reference":
            o, ht = gla_reference(q, k, v, gk, float(scale), initial_state, output_final_state, cu_seqlens)
        else:
            o, ht = gla_chunked(q, k, v, gk, float(scale), initial_state, output_final_state, cu_seqlens,
                                chunk_size=chunk_size)
        if not head_first:
            o = o.transpose(1, 2)
    return (o, ht) if output_final_state else o


__all__ = ["BACKENDS", "fla_status", "gla", "gla_chunked", "gla_reference", "resolve_backend"]
