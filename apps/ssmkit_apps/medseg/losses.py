"""CE + Dice (MONAI's DiceCELoss) + 0.8 x region-specific Tversky, with deep supervision.

Region-specific Tversky: the patch is cut into a grid of regions (``regions`` per axis); in each
region r and for each foreground class c the soft counts are pooled,

    TP = sum p * g,   FP = sum p * (1 - g),   FN = sum (1 - p) * g     (p: softmax, g: one-hot)

and the region's own weights are set from its errors,

    alpha = 0.3 + 0.4 * FP / (FP + FN),   beta = 0.3 + 0.4 * FN / (FP + FN),

so a region that over-segments penalises false positives more and one that under-segments
penalises false negatives more. The term is the mean over batch, classes and regions of
1 - (TP + s) / (TP + alpha * FP + beta * FN + s). The weights are computed without gradient:
they say how to weigh the errors, and gradients flowing through them would reward moving
errors from one kind to the other instead of removing them.

A (region, class) pair where neither the reference nor the prediction (its argmax) holds the
class is a true-negative region: it counts as a perfect score (loss 0, no gradient), as Dice
scores an empty class predicted empty. Without that rule every such pair would either sit at
loss 1 with no gradient (a vanishing smoothing constant) or, with some smoothing, pull every
rare class's probability down in all the regions that lack it, which stalls the small
structures. The other pairs use a smoothing of one voxel (s = 1), so a region the model fills
with a class that is not there still gets a usable gradient (with s = 1e-5 its term would be
1 - s / (alpha * FP + s), flat at 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn


def region_sums(x: torch.Tensor, regions: Sequence[int]) -> torch.Tensor:
    """Sums of x [B, K, X, Y, Z] over a grid of ``regions`` (per axis) -> [B, K, *regions].

    The volume is zero-padded to a multiple of the grid, so padding adds nothing.
    """
    if x.ndim != 5:
        raise ValueError(f"expected [B, K, X, Y, Z]; got {tuple(x.shape)}")
    if len(regions) != 3 or min(regions) < 1:
        raise ValueError(f"regions must be 3 positive counts (one per axis); got {list(regions)}")
    size = [max(1, -(-s // n)) for s, n in zip(x.shape[2:], regions)]  # ceil(S / n)
    grid = [-(-s // z) for s, z in zip(x.shape[2:], size)]
    pad = []
    for s, z, g in zip(reversed(x.shape[2:]), reversed(size), reversed(grid)):
        pad += [0, z * g - s]
    t = F.pad(x, pad)
    b, k = t.shape[:2]
    return t.reshape(b, k, grid[0], size[0], grid[1], size[1], grid[2], size[2]).sum(dim=(3, 5, 7))


def region_counts(probs: torch.Tensor, onehot: torch.Tensor,
                  regions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(TP, FP, FN), each [B, K, *regions], pooled over a grid of regions. probs, onehot: [B, K, X, Y, Z]."""
    if probs.shape != onehot.shape or probs.ndim != 5:
        raise ValueError(f"expected probs and one-hot [B, K, X, Y, Z] of one shape; got {tuple(probs.shape)}, "
                         f"{tuple(onehot.shape)}")
    return (region_sums(probs * onehot, regions), region_sums(probs * (1 - onehot), regions),
            region_sums((1 - probs) * onehot, regions))


def region_tversky_loss(probs: torch.Tensor, onehot: torch.Tensor, regions: Sequence[int] = (4, 4, 4),
                        a: float = 0.3, b: float = 0.4, include_background: bool = False,
                        smooth: float = 1.0) -> torch.Tensor:
    """The region-specific Tversky term (see the module docstring). probs, onehot: [B, K, X, Y, Z]."""
    probs, onehot = probs.float(), onehot.float()
    tp, fp, fn = region_counts(probs, onehot, regions)
    with torch.no_grad():
        hard = F.one_hot(probs.argmax(1), probs.shape[1]).movedim(-1, 1).float()
        active = (region_sums(onehot, regions) > 0) | (region_sums(hard, regions) > 0)
    if not include_background:
        tp, fp, fn, active = tp[:, 1:], fp[:, 1:], fn[:, 1:], active[:, 1:]
    with torch.no_grad():
        err = (fp + fn).clamp_min(1e-12)
        alpha, beta = a + b * fp / err, a + b * fn / err
    tversky = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return ((1.0 - tversky) * active).mean()


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's weights for n outputs (full resolution first): 1, 1/2, 1/4, ..., normalised to sum 1."""
    w = [0.5**i for i in range(n)]
    return [v / sum(w) for v in w]


class SegLoss(nn.Module):
    """CE + Dice + ``tversky_weight`` x region Tversky, summed over deep-supervision outputs.

    ``forward(logits, label)``: logits [B, K, *S] or a list of them (full resolution first, the
    others smaller); label [B, 1, *S] integer classes. Returns (loss, {"ce_dice", "tversky"}).
    """

    def __init__(self, tversky_weight: float = 0.8, regions: Sequence[int] = (4, 4, 4)):
        super().__init__()
        # Batch Dice without the background (nnU-Net's choice): rare classes get a stable signal.
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
        self.tversky_weight = float(tversky_weight)
        self.regions = tuple(int(r) for r in regions)

    def one(self, logits: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits.float()
        if label.shape[2:] != logits.shape[2:]:
            label = F.interpolate(label.float(), size=logits.shape[2:], mode="nearest").long()
        dice_ce = self.dice_ce(logits, label)
        if self.tversky_weight == 0:
            return dice_ce, torch.zeros((), device=logits.device)
        onehot = F.one_hot(label[:, 0].long(), logits.shape[1]).movedim(-1, 1).float()
        return dice_ce, region_tversky_loss(torch.softmax(logits, 1), onehot, self.regions)

    def forward(self, logits: torch.Tensor | list[torch.Tensor],
                label: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outs = logits if isinstance(logits, (list, tuple)) else [logits]
        total = torch.zeros((), device=label.device)
        parts = {"ce_dice": torch.zeros((), device=label.device), "tversky": torch.zeros((), device=label.device)}
        for w, out in zip(deep_supervision_weights(len(outs)), outs):
            dc, tv = self.one(out, label)
            total = total + w * (dc + self.tversky_weight * tv)
            parts["ce_dice"] = parts["ce_dice"] + w * dc.detach()
            parts["tversky"] = parts["tversky"] + w * tv.detach()
        return total, parts


__all__ = ["SegLoss", "deep_supervision_weights", "region_counts", "region_tversky_loss"]
