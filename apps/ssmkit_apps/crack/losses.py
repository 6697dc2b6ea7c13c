"""The crack segmentation loss: weighted BCE plus soft Dice (SCSegamba uses 0.83 and 0.17).

BCE scores every pixel on its own and is dominated by the background (cracks cover a few
percent of a frame); Dice is computed per image over the whole mask, so it rewards getting the
thin structure right whatever its share of pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over images and channels; probs, target [B, C, H, W] in [0, 1].

    ``smooth`` keeps an empty mask with an empty prediction at a loss of 0, not 0/0.
    """
    if probs.shape != target.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target.shape)} must have the same shape")
    dims = (-2, -1)
    tp = (probs * target).sum(dims)
    fp = (probs * (1 - target)).sum(dims)
    fn = ((1 - probs) * target).sum(dims)
    dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    return 1 - dice.mean()


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 0.83,
                  dice_weight: float = 0.17, smooth: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``bce_weight * BCE(logits, target) + dice_weight * (1 - Dice)``, in float32.

    Args:
        logits: [B, 1, H, W] raw scores. target: [B, 1, H, W] in {0, 1}.
    Returns:
        (loss, {"bce": ..., "dice": ...}) with the two terms detached for logging.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    dice = soft_dice_loss(torch.sigmoid(logits), target, smooth)
    return bce_weight * bce + dice_weight * dice, {"bce": bce.detach(), "dice": dice.detach()}


__all__ = ["bce_dice_loss", "soft_dice_loss"]
