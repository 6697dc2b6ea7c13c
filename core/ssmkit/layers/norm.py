"""RMS normalisation layers: plain RMSNorm and the gated variant Mamba-style blocks use.

Both normalise over the last axis (channels-last, [..., C]) and compute in float32 whatever the
input dtype, because the mean of squares of bf16 activations loses too much precision; the
result is cast back to the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``x / sqrt(mean(x**2, -1) + eps) * weight`` in float32, returned in x's dtype. x: [..., C]."""
    x32 = x.float()
    out = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        out = out * weight.float()
    return out.to(x.dtype)


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last axis: input [..., C] -> [..., C].

    Args:
        d_model: C, the size of the normalised (last) axis.
        eps: added to the mean square before the square root.
        elementwise_affine: learn a per-channel scale (initialised to 1).
    """

    def __init__(self, d_model: int, eps: float = 1e-5, elementwise_affine: bool = True,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"RMSNorm d_model must be a positive int; got {d_model!r}")
        if not eps > 0:
            raise ValueError(f"RMSNorm eps must be > 0; got {eps!r}")
        self.d_model = d_model
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype)) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(f"RMSNorm expects input [..., {self.d_model}]; got {list(x.shape)}")
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}, elementwise_affine={self.weight is not None}"


class GatedRMSNorm(nn.Module):
    """RMSNorm fused with a SiLU gate: input x, z [..., C] -> [..., C].

    ``norm_before_gate=False`` (the Mamba-2 choice) computes ``rmsnorm(x * silu(z))``; ``True``
    computes ``rmsnorm(x) * silu(z)``. With ``group_size`` the mean square is taken over groups
    of that many channels instead of all C, which keeps the statistics local to a head group and
    makes the norm independent of how channels are split across tensor-parallel ranks.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, norm_before_gate: bool = False,
                 group_size: int | None = None, device: torch.device | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"GatedRMSNorm d_model must be a positive int; got {d_model!r}")
        if group_size is not None and (group_size < 1 or d_model % group_size != 0):
            raise ValueError(f"GatedRMSNorm group_size={group_size} must divide d_model={d_model}")
        self.d_model = d_model
        self.eps = float(eps)
        self.norm_before_gate = norm_before_gate
        self.group_size = group_size or d_model
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(f"GatedRMSNorm expects x [..., {self.d_model}]; got {list(x.shape)}")
        if z is not None and z.shape != x.shape:
            raise ValueError(f"GatedRMSNorm gate z must match x {list(x.shape)}; got {list(z.shape)}")
        dtype = x.dtype
        h = x.float()
        if z is not None and not self.norm_before_gate:
            h = h * F.silu(z.float())
        groups = h.unflatten(-1, (self.d_model // self.group_size, self.group_size))
        h = (groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)
        h = h * self.weight.float()
        if z is not None and self.norm_before_gate:
            h = h * F.silu(z.float())
        return h.to(dtype)

    def extra_repr(self) -> str:
        return (f"{self.d_model}, eps={self.eps}, norm_before_gate={self.norm_before_gate}, "
                f"group_size={self.group_size}")


__all__ = ["GatedRMSNorm", "RMSNorm", "rms_norm"]
