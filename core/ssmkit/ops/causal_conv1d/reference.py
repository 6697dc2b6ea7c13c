"""Reference depthwise causal conv1d with an optional SiLU: the definition of correct.

Per channel d with K taps w[d, 0..K-1] and bias b[d], over x [B, D, L] zero-padded outside the
sequence:

    causal:  y[t] = act(b + sum_k w[k] * x[t - (K-1) + k])    (the newest input meets w[K-1])
    reverse: y[t] = act(b + sum_k w[k] * x[t + (K-1) - k])    (the mirror image, right to left)

This is ``nn.Conv1d(D, D, K, groups=D, padding=K-1)`` cut to the first L outputs, the short
convolution of a Mamba block. Math runs in float32 (float64 for float64 inputs); autograd
through the K shifted products gives the gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmkit.ops.utils import compute_dtype


def causal_conv1d_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                            activation: str | None = None, reverse: bool = False) -> torch.Tensor:
    """x [B, D, L], weight [D, K], bias [D] -> [B, D, L] in x's dtype (``activation``: None or "silu")."""
    compute = compute_dtype(x)
    xc, w = x.to(compute), weight.to(compute)
    K, L = w.shape[1], x.shape[-1]
    y = torch.zeros_like(xc)
    for k in range(K):
        shift = K - 1 - k  # how far back (forward when reverse) tap k reads
        if shift >= L:
            continue
        term = w[:, k, None] * (xc[..., shift:] if reverse else xc[..., : L - shift])
        y = y + (F.pad(term, (0, shift)) if reverse else F.pad(term, (shift, 0)))
    if bias is not None:
        y = y + bias.to(compute)[:, None]
    if activation == "silu":
        y = F.silu(y)
    return y.to(x.dtype)


__all__ = ["causal_conv1d_reference"]
