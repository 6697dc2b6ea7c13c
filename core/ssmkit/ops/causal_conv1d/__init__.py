"""Depthwise causal conv1d with an optional SiLU (the short convolution of a Mamba block).

Backends:
- ``"reference"``: K shifted products in PyTorch (``reference.py``), the definition of correct;
- ``"triton"``: one fused kernel each way (``triton_conv.py``), the default on CUDA when Triton
  imports; it reads and writes any [B, D, L] layout whose time axis is contiguous.

``backend="auto"`` picks triton on CUDA tensors, the reference otherwise.

    >>> x, w = torch.randn(2, 3, 7), torch.randn(3, 4)
    >>> y = causal_conv1d(x, w, activation="silu")
    >>> tuple(y.shape)
    (2, 3, 7)
    >>> ref = F.silu(F.conv1d(x, w[:, None, :], padding=3, groups=3)[..., :7])
    >>> bool(torch.allclose(y, ref, atol=1e-6))
    True
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F  # noqa: F401 - used by the doctest above

from ssmkit._checks import check_shape, one_of
from ssmkit.ops.causal_conv1d.reference import causal_conv1d_reference

BACKENDS = ("auto", "reference", "triton")
ACTIVATIONS = (None, "silu")
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _triton_usable(device: torch.device) -> tuple[bool, str]:
    try:
        import triton  # noqa: F401
    except Exception as err:  # pragma: no cover - depends on the install
        return False, f"triton does not import ({err})"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return False, f"tensors are on {device.type}; triton needs CUDA (or TRITON_INTERPRET=1)"
    return True, ""


def _validate(x, weight, bias, activation, backend) -> None:
    one_of(backend, BACKENDS, "backend", "causal_conv1d")
    one_of(activation, ACTIVATIONS, "activation", "causal_conv1d")
    _, dim, _ = check_shape(x, ("B", "D", "L"), "x", "causal_conv1d")
    check_shape(weight, (dim, None), "weight", "causal_conv1d")
    if weight.shape[1] < 1:
        raise ValueError(f"causal_conv1d: weight must be [D, K] with K >= 1 taps; got {list(weight.shape)}")
    if bias is not None:
        check_shape(bias, (dim,), "bias", "causal_conv1d")
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is not None and t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"causal_conv1d: {name} has dtype {t.dtype}; expected float32, float16, bfloat16 or "
                            "float64")
        if t is not None and t.device != x.device:
            raise ValueError(f"causal_conv1d: {name} is on {t.device} but x is on {x.device}; expected one device")


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  activation: str | None = None, reverse: bool = False, backend: str = "auto") -> torch.Tensor:
    """Depthwise causal conv1d: ``y[t] = act(bias + sum_k weight[:, k] * x[t - (K-1) + k])``.

    Args:
        x: [B, D, L] input (any strides; a contiguous time axis is read in place by Triton).
        weight: [D, K] taps (an ``nn.Conv1d(D, D, K, groups=D)`` weight is ``w[:, 0, :]``).
        bias: [D] or None.
        activation: None or "silu".
        reverse: anti-causal, ``x[t + (K-1) - k]`` (the mirror image; nothing is flipped).
        backend: "auto" | "reference" | "triton".

    Returns:
        [B, D, L] in x's dtype. Differentiable in x, weight and bias.
    """
    _validate(x, weight, bias, activation, backend)
    if backend == "auto":
        backend = "triton" if x.device.type == "cuda" and _triton_usable(x.device)[0] else "reference"
    if backend == "triton":
        ok, why = _triton_usable(x.device)
        if not ok:
            raise RuntimeError(f"causal_conv1d: backend='triton' is unavailable: {why}")
        from ssmkit.ops.causal_conv1d.triton_conv import causal_conv1d_triton

        return causal_conv1d_triton(x, weight, bias, activation, reverse)
    return causal_conv1d_reference(x, weight, bias, activation, reverse)


__all__ = ["ACTIVATIONS", "BACKENDS", "causal_conv1d", "causal_conv1d_reference"]
