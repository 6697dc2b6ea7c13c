"""Packed variable-length batches: ``cu_seqlens`` [S+1] holds the boundaries of S sequences laid
end to end along the time axis of a batch of one, e.g. ``[0, 5, 12]`` for lengths 5 and 7."""

from __future__ import annotations

import itertools

import torch


def sequence_spans(length: int, cu_seqlens: torch.Tensor | None) -> list[tuple[int, int]]:
    """``(start, end)`` of every packed sequence; one span over the whole length without
    ``cu_seqlens``.

    >>> sequence_spans(12, torch.tensor([0, 5, 12])), sequence_spans(4, None)
    ([(0, 5), (5, 12)], [(0, 4)])
    """
    bounds = [0, length] if cu_seqlens is None else [int(v) for v in cu_seqlens.tolist()]
    return list(itertools.pairwise(bounds))


def check_cu_seqlens(cu_seqlens: object, length: int, batch: int, shape: str = "", axis: str = "L") -> int:
    """Check ``cu_seqlens`` against a packed batch of ``length`` steps; return the number of
    sequences S. ``shape`` names the packed input's shape in the batch-size message, ``axis`` the
    time axis (L for the scans, T for attention-style ops).

    >>> check_cu_seqlens(torch.tensor([0, 5, 12]), 12, 1)
    2
    """
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError("cu_seqlens must be a 1-D integer tensor [S+1] of sequence boundaries, e.g. [0, 5, 12]")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"cu_seqlens has dtype {cu_seqlens.dtype}; expected an integer dtype, int32 or int64")
    if batch != 1:
        raise ValueError(f"cu_seqlens packs sequences along {axis} and needs batch 1; got {shape or f'batch {batch}'}")
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != length or any(b > a for a, b in zip(bounds[1:], bounds[:-1])):
        raise ValueError(f"cu_seqlens must rise from 0 to {axis}={length} without decreasing; got {bounds}")
    return len(bounds) - 1
