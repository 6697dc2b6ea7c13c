"""The dtype an op computes in: float32 for 16- and 32-bit inputs, float64 for float64 ones."""

from __future__ import annotations

import torch


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 when every given tensor is float64 (None entries are skipped), else float32.

    16-bit inputs are upcast so that recurrences over thousands of steps do not drift; float64
    inputs keep float64 so that gradcheck and float64 oracles can call the public functions.

    >>> compute_dtype(torch.zeros(1, dtype=torch.float64), None)
    torch.float64
    >>> compute_dtype(torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.bfloat16))
    torch.float32
    """
    present = [t for t in tensors if t is not None]
    return torch.float64 if present and all(t.dtype == torch.float64 for t in present) else torch.float32
