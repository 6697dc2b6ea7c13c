"""Tensor shapes and layouts: how error messages print a shape, and which layout a map has."""

from __future__ import annotations

import torch


def format_shape(t: object) -> str:
    """``[2, 3, 5]`` for a tensor, the type's name for anything else (for error messages).

    >>> format_shape(torch.zeros(2, 3, 5)), format_shape(None)
    ('[2, 3, 5]', 'NoneType')
    """
    if isinstance(t, torch.Tensor):
        return "[" + ", ".join(str(s) for s in t.shape) + "]"
    return type(t).__name__


def channels_last_map(u: torch.Tensor) -> bool:
    """Whether a [B, D, L] map is a transposed view of a contiguous [B, L, D] one: the layout of a
    channels_last feature map flattened over its spatial dims, which the Triton path scan reads
    in place.

    >>> channels_last_map(torch.zeros(2, 5, 3).transpose(1, 2)), channels_last_map(torch.zeros(2, 3, 5))
    (True, False)
    """
    _, D, L = u.shape
    return D > 1 and L > 1 and u.stride() == (L * D, 1, D)
