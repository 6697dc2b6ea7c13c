"""Mega's multi-dimensional damped EMA: validated public entry point and backend dispatch.

    h_t = alpha * beta * x_t + (1 - alpha * delta) * h_{t-1},     y_t = sum_n eta * h_t

Backends: ``"reference"`` (loop over time, ``reference.py``) and ``"fft"`` (one causal FFT
convolution, ``fft.py``, the default on every device). ``ema_step`` advances one step for
streaming inference. ``SSMKIT_BACKEND`` overrides ``"auto"`` when it names one of these backends.
"""

from __future__ import annotations

import os

import torch

from ssmkit._checks import one_of
from ssmkit.ops.ema.fft import ema_fft, ema_kernel
from ssmkit.ops.ema.reference import ema_reference, ema_step

BACKENDS = ("auto", "reference", "fft")


def resolve_backend(backend: str) -> str:
    """Map ``"auto"`` (or an SSMKIT_BACKEND naming one of this op's backends) to a backend."""
    one_of(backend, BACKENDS, "backend", "ema")
    if backend == "auto":
        env = os.environ.get("SSMKIT_BACKEND", "auto") or "auto"
        backend = env if env in BACKENDS else "auto"
    return "fft" if backend == "auto" else backend


def _validate(x, alpha, delta, beta, eta, initial_state, check_finite) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a 3-D tensor [B, D, L], got {getattr(x, 'shape', type(x).__name__)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got {x.dtype}")
    D = x.shape[1]
    shape = None
    for name, p in (("alpha", alpha), ("delta", delta), ("beta", beta), ("eta", eta)):
        if not isinstance(p, torch.Tensor) or p.dim() != 2 or p.shape[0] != D:
            raise ValueError(f"{name} must be [D, N] with D={D}, got {getattr(p, 'shape', type(p).__name__)}")
        shape = shape or p.shape
        if p.shape != shape:
            raise ValueError(f"alpha, delta, beta, eta must share [D, N] = {tuple(shape)}; {name} is {tuple(p.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (x.shape[0], D, shape[1]):
        raise ValueError(f"initial_state must be [B, D, N] = {(x.shape[0], D, shape[1])}, "
                         f"got {tuple(initial_state.shape)}")
    if check_finite:
        for name, t in (("x", x), ("alpha", alpha), ("delta", delta), ("beta", beta), ("eta", eta),
                        ("initial_state", initial_state)):
            if t is not None and not torch.isfinite(t).all():
                raise ValueError(f"{name} holds NaN or inf")
        for name, p in (("alpha", alpha), ("delta", delta)):
            if (p < 0).any() or (p > 1).any():
                raise ValueError(f"{name} must lie in [0, 1] (e.g. a sigmoid), got range "
                                 f"[{float(p.min()):.4g}, {float(p.max()):.4g}]")


def ema(
    x: torch.Tensor,
    alpha: torch.Tensor,
    delta: torch.Tensor,
    beta: torch.Tensor,
    eta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    backend: str = "auto",
    check_finite: bool = False,
):
    """Multi-dimensional damped EMA (Mega), causal along L.

    Args:
        x: [B, D, L] input.
        alpha, delta: [D, N] input weight and damping, in [0, 1] (pass sigmoids of parameters).
        beta: [D, N] expansion weights; eta: [D, N] projection weights.
        initial_state: [B, D, N] state before the first step (differentiable).
        return_final_state: also return the state after the last step, [B, D, N] float32
            (float64 for float64 inputs); feed it to ``ema_step`` to continue streaming.
        backend: "auto" | "reference" | "fft".
        check_finite: raise ValueError on NaN/inf or alpha/delta outside [0, 1].

    Returns:
        y [B, D, L] in x's dtype, or (y, final_state).
    """
    _validate(x, alpha, delta, beta, eta, initial_state, check_finite)
    fn = ema_reference if resolve_backend(backend) == "reference" else ema_fft
    return fn(x, alpha, delta, beta, eta, initial_state=initial_state, return_final_state=return_final_state)


__all__ = ["BACKENDS", "ema", "ema_fft", "ema_kernel", "ema_reference", "ema_step", "resolve_backend"]
