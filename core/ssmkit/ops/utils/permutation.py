"""Index permutations: inverting them, and summing the K tensors gathered back through them."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def inverse_permutation(index: torch.Tensor) -> torch.Tensor:
    """Inverse of each row of a [K, L] permutation: ``inv[k, index[k, t]] = t``.

    >>> inverse_permutation(torch.tensor([[2, 0, 1]]))
    tensor([[1, 2, 0]])
    """
    inv = torch.empty_like(index)
    steps = torch.arange(index.shape[-1], dtype=index.dtype, device=index.device)
    inv.scatter_(-1, index, steps.expand_as(index).contiguous())
    return inv


def pairwise_sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """Sum tensors as a balanced binary tree, keeping O(log K) partial sums live.

    Besides the smaller rounding error, equal terms then add up exactly: 2x and 4x are exact
    in floating point and each remaining combination rounds once, so K equal terms give
    exactly ``K * x`` for every K <= 6 (a left-to-right loop loses that from K = 6 on).

    >>> x = torch.tensor([0.1])
    >>> bool(pairwise_sum([x] * 6) == 6 * x)
    True
    """
    stack: list[tuple[int, torch.Tensor]] = []
    for term in terms:
        size, acc = 1, term
        while stack and stack[-1][0] == size:
            prev_size, prev = stack.pop()
            size, acc = size + prev_size, prev + acc
        stack.append((size, acc))
    if not stack:
        raise ValueError("pairwise_sum needs at least one term")
    acc = stack.pop()[1]
    while stack:
        acc = stack.pop()[1] + acc
    return acc
