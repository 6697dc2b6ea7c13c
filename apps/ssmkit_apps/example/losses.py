"""Classification loss of the example app."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits [B, K] against integer targets [B], computed in float32."""
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [B, K] and target [B]; got {tuple(logits.shape)}, {tuple(target.shape)}")
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
