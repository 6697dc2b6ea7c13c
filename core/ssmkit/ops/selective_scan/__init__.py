"""Selective scan (Mamba-1, S6): validated public entry point and backend dispatch.

Backends:
- ``"reference"``: loop over time (``reference.py``), the definition of correct;
- ``"chunked"``: parallel pure PyTorch with a hand-written backward (``chunked.py``), the CPU
  default and the GPU fallback;
- ``"triton"``: fused GPU kernels (``triton_scan.py``), the default on CUDA when Triton imports.

``backend="auto"`` picks triton on CUDA tensors, chunked otherwise. The environment variable
``SSMKIT_BACKEND`` overrides ``"auto"``.
"""

from __future__ import annotations

import os

import torch

from ssmkit._checks import one_of
from ssmkit.ops.selective_scan._validate import validate_selective_scan
from ssmkit.ops.selective_scan.reference import selective_scan_reference
from ssmkit.ops.selective_scan.state_update import selective_state_update

BACKENDS = ("auto", "reference", "chunked", "triton")


def triton_status(device: torch.device | None = None) -> tuple[bool, str]:
    """Whether the Triton backend can run on ``device`` and, either way, why."""
    try:
        import triton  # noqa: F401
    except Exception as err:  # pragma: no cover - depends on the install
        return False, f"triton does not import ({err})"
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if device is not None and device.type != "cuda" and not interpret:
        return False, f"tensors are on {device.type}; triton needs CUDA (or TRITON_INTERPRET=1)"
    if device is None and not torch.cuda.is_available() and not interpret:
        return False, "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on CPU, slowly)"
    try:
        from ssmkit.ops.selective_scan import triton_scan  # noqa: F401
    except Exception as err:
        return False, f"ssmkit triton kernels failed to import ({err})"
    return True, "CUDA tensors and triton available" if not interpret else "TRITON_INTERPRET=1"


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``"auto"`` (or the SSMKIT_BACKEND override) to a concrete backend for ``device``."""
    one_of(backend, BACKENDS, "backend", "selective_scan")
    if backend == "auto":
        backend = one_of(os.environ.get("SSMKIT_BACKEND", "auto") or "auto", BACKENDS, "SSMKIT_BACKEND")
    if backend == "auto":
        ok, _ = triton_status(device) if device.type == "cuda" else (False, "")
        return "triton" if ok else "chunked"
    if backend == "triton":
        ok, why = triton_status(device)
        if not ok:
            raise RuntimeError(f"backend='triton' is unavailable: {why}")
    return backend


def selective_scan(
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
    backend: str = "auto",
    check_finite: bool = False,
):
    """Selective scan ``h[t] = exp(dt A) h[t-1] + dt B[t] u[t]``, ``y[t] = C[t]·h[t] + D u[t]``.

    Args:
        u, delta: [B, D, L] input and (pre-softplus) step size.
        A: [D, N] state matrix diagonal (negative for decay), float32 or float64.
        B, C: [B, G, N, L] input-dependent projections; channel d uses group d // (D // G).
        D: [D] skip connection. z: [B, D, L] gate, the output is multiplied by silu(z).
        delta_bias: [D] added to delta before the softplus.
        initial_state: [B, D, N] state before the first step (differentiable). With
            ``cu_seqlens`` it is [S, D, N], one per packed sequence.
        return_final_state: also return the state after the last step ([B, D, N] or
            [S, D, N]); it is differentiable.
        reverse: scan right to left (the "initial" state enters at the end).
        cu_seqlens: [S+1] boundaries of S sequences packed along L (batch must be 1); the
            state restarts at every boundary.
        backend: "auto" | "reference" | "chunked" | "triton".
        check_finite: raise ValueError when an input holds NaN or inf.

    Returns:
        y [B, D, L] in u's dtype, or (y, final_state) with the final state in float32
        (float64 for float64 inputs).

    Examples:
        >>> import torch
        >>> from ssmkit.ops.selective_scan import selective_scan
        >>> _ = torch.manual_seed(0)
        >>> B, D, L, N = 2, 4, 16, 3
        >>> u, delta = torch.randn(B, D, L), torch.randn(B, D, L)
        >>> A = -torch.rand(D, N)  # negative: a decaying state
        >>> Bm, Cm = torch.randn(B, 1, N, L), torch.randn(B, 1, N, L)
        >>> y, h = selective_scan(u, delta, A, Bm, Cm, return_final_state=True)
        >>> y.shape, h.shape
        (torch.Size([2, 4, 16]), torch.Size([2, 4, 3]))

        Scanning the second half from the first half's final state continues the sequence:

        >>> y1, h1 = selective_scan(u[..., :8], delta[..., :8], A, Bm[..., :8], Cm[..., :8], return_final_state=True)
        >>> y2 = selective_scan(u[..., 8:], delta[..., 8:], A, Bm[..., 8:], Cm[..., 8:], initial_state=h1)
        >>> torch.allclose(torch.cat([y1, y2], -1), y, atol=1e-5)
        True
    """
    validate_selective_scan(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, check_finite)
    kwargs = dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                  initial_state=initial_state, return_final_state=return_final_state,
                  reverse=reverse, cu_seqlens=cu_seqlens)
    chosen = resolve_backend(backend, u.device)
    if chosen == "reference":
        return selective_scan_reference(u, delta, A, B, C, **kwargs)
    if chosen == "chunked":
        from ssmkit.ops.selective_scan.chunked import selective_scan_chunked

        return selective_scan_chunked(u, delta, A, B, C, **kwargs)
    from ssmkit.ops.selective_scan.triton_scan import selective_scan_triton

    return selective_scan_triton(u, delta, A, B, C, **kwargs)


__all__ = ["BACKENDS", "resolve_backend", "selective_scan", "selective_scan_reference", "selective_state_update",
           "triton_status"]
