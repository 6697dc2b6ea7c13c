"""The region-specific Tversky term on hand-computed cases, and the combined deep-supervised loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss

from ssmkit_apps.medseg.losses import (
    SegLoss,
    deep_supervision_weights,
    region_counts,
    region_sums,
    region_tversky_loss,
)


def _pair(p1: list[float], g1: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class probs and one-hot [1, 2, 1, 1, Z] from the foreground probabilities and labels."""
    p = torch.tensor(p1).view(1, 1, 1, 1, -1)
    g = torch.tensor(g1, dtype=torch.float32).view(1, 1, 1, 1, -1)
    return torch.cat([1 - p, p], 1), torch.cat([1 - g, g], 1)


def test_one_region_hard_counts():
    # TP = 1, FP = 1, FN = 2: alpha = 0.3 + 0.4 * 1/3, beta = 0.3 + 0.4 * 2/3
    probs, onehot = _pair([1, 1, 0, 0], [1, 0, 1, 1])
    alpha, beta = 0.3 + 0.4 / 3, 0.3 + 0.8 / 3
    bare = region_tversky_loss(probs, onehot, regions=(1, 1, 1), smooth=0.0)
    assert bare.item() == pytest.approx(1 - 1 / (1 + alpha * 1 + beta * 2), abs=1e-6)
    assert bare.item() == pytest.approx(0.61039, abs=1e-5)
    # the default smoothing of one voxel: (TP + 1) / (TP + alpha FP + beta FN + 1)
    smooth = region_tversky_loss(probs, onehot, regions=(1, 1, 1))
    assert smooth.item() == pytest.approx(1 - 2 / (2 + alpha * 1 + beta * 2), abs=1e-6)
    assert smooth.item() == pytest.approx(0.43925, abs=1e-5)


def test_one_region_soft_counts():
    # TP = 0.8 + 0.2 = 1.0, FP = 0.6, FN = 0.2 + 0.8 = 1.0: alpha = 0.45, beta = 0.55
    probs, onehot = _pair([0.8, 0.6, 0.2, 0.0], [1, 0, 1, 0])
    tp, fp, fn = region_counts(probs, onehot, (1, 1, 1))
    assert [tp[0, 1].item(), fp[0, 1].item(), fn[0, 1].item()] == pytest.approx([1.0, 0.6, 1.0])
    got = region_tversky_loss(probs, onehot, regions=(1, 1, 1))
    assert got.item() == pytest.approx(1 - 2 / (2 + 0.45 * 0.6 + 0.55 * 1.0), abs=1e-6)  # 0.29078


def test_two_regions_weigh_their_own_errors():
    # Region A (voxels 0, 1): TP 1, FP 1, FN 0 -> alpha 0.7, beta 0.3.
    # Region B (voxels 2, 3): TP 0, FP 0, FN 2 -> alpha 0.3, beta 0.7.
    probs, onehot = _pair([1, 1, 0, 0], [1, 0, 1, 1])
    bare = region_tversky_loss(probs, onehot, regions=(1, 1, 2), smooth=0.0)
    assert bare.item() == pytest.approx(((1 - 1 / 1.7) + 1.0) / 2, abs=1e-6)  # 0.70588
    # pooling everything into one region hides region B's complete miss
    assert bare.item() > region_tversky_loss(probs, onehot, regions=(1, 1, 1), smooth=0.0).item() + 0.05
    smooth = region_tversky_loss(probs, onehot, regions=(1, 1, 2))
    assert smooth.item() == pytest.approx(((1 - 2 / 2.7) + (1 - 1 / 2.4)) / 2, abs=1e-6)  # 0.42130


def test_true_negative_regions_cost_nothing_and_false_positive_regions_still_push():
    # neither reference nor argmax holds class 1: a true-negative region, loss 0 and no gradient
    probs, onehot = _pair([0.1, 0.1, 0.1, 0.1], [0, 0, 0, 0])
    probs.requires_grad_(True)
    loss = region_tversky_loss(probs, onehot, regions=(1, 1, 1))
    assert loss.item() == 0.0
    (g,) = torch.autograd.grad(loss, probs, allow_unused=True)
    assert g is None or not g.any()
    # the argmax predicts class 1 where it is absent: TP 0, FP 2.4, FN 0 -> alpha 0.7; with one voxel
    # of smoothing the loss is 0.7 FP / (0.7 FP + 1) and its slope 0.7 / (0.7 FP + 1)^2, not flat
    probs, onehot = _pair([0.6, 0.6, 0.6, 0.6], [0, 0, 0, 0])
    probs.requires_grad_(True)
    loss = region_tversky_loss(probs, onehot, regions=(1, 1, 1))
    assert loss.item() == pytest.approx(0.7 * 2.4 / (0.7 * 2.4 + 1), abs=1e-6)
    (g,) = torch.autograd.grad(loss, probs)
    assert g[0, 1].flatten().tolist() == pytest.approx([0.7 / (0.7 * 2.4 + 1) ** 2] * 4, abs=1e-6)
    # region by region: only the region holding (or predicting) the class counts; the mean runs over all
    probs, onehot = _pair([0.1, 0.1, 1.0, 0.0], [0, 0, 1, 1])
    got = region_tversky_loss(probs, onehot, regions=(1, 1, 2))
    assert got.item() == pytest.approx((0.0 + (1 - 2 / (1 + 0.7 * 1 + 1))) / 2, abs=1e-6)


def test_uneven_grid_pads_without_counting_padding():
    # Z = 5 in 2 regions: sizes 3 and 2 (+1 padded voxel). Region B = voxels 3, 4.
    probs, onehot = _pair([1, 0, 0, 1, 0], [1, 0, 0, 0, 1])
    tp, fp, fn = region_counts(probs, onehot, (1, 1, 2))
    assert tp[0, 1].flatten().tolist() == [1.0, 0.0]
    assert fp[0, 1].flatten().tolist() == [0.0, 1.0]
    assert fn[0, 1].flatten().tolist() == [0.0, 1.0]
    # background class: region A has 2 true-negative voxels -> TP 2, region B has none, padding adds nothing
    assert tp[0, 0].flatten().tolist() == [2.0, 0.0]


def test_background_is_left_out_unless_asked():
    probs, onehot = _pair([1, 1, 0, 0], [1, 0, 1, 1])
    fg = region_tversky_loss(probs, onehot, regions=(1, 1, 1), smooth=0.0)
    both = region_tversky_loss(probs, onehot, regions=(1, 1, 1), include_background=True, smooth=0.0)
    # background: p_bg = [0, 0, 1, 1], g_bg = [0, 1, 0, 0] -> TP 0, FP 2, FN 1 -> Tversky 0
    assert both.item() == pytest.approx((fg.item() + 1.0) / 2, abs=1e-6)


def test_alpha_beta_carry_no_gradient():
    torch.manual_seed(0)
    logits = (torch.randn(1, 3, 4, 4, 4) + torch.tensor([2.5, 0, 0]).view(1, 3, 1, 1, 1)).requires_grad_(True)
    label = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    label[0, :2, :2, :2] = 1
    label[0, 2:, 2:, :2] = 2
    onehot = F.one_hot(label, 3).movedim(-1, 1).float()
    probs = torch.softmax(logits, 1)
    (g,) = torch.autograd.grad(region_tversky_loss(probs, onehot, (2, 2, 2)), logits)
    # the same loss with alpha/beta (and the true-negative mask) frozen as constants: same gradient
    probs = torch.softmax(logits, 1)
    tp, fp, fn = (t[:, 1:] for t in region_counts(probs, onehot, (2, 2, 2)))
    err = (fp + fn).detach()
    a, b = 0.3 + 0.4 * fp.detach() / err, 0.3 + 0.4 * fn.detach() / err
    hard = F.one_hot(probs.argmax(1), 3).movedim(-1, 1).float()
    active = ((region_sums(onehot, (2, 2, 2)) + region_sums(hard, (2, 2, 2)))[:, 1:] > 0).float()
    assert 0 < active.mean() < 1  # the case has true-negative regions
    manual = ((1 - (tp + 1) / (tp + a * fp + b * fn + 1)) * active).mean()
    (g2,) = torch.autograd.grad(manual, logits)
    assert torch.allclose(g, g2, atol=1e-7) and g.abs().sum() > 0


def test_combined_loss_weights_and_deep_supervision():
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    torch.manual_seed(1)
    full = torch.randn(2, 3, 8, 8, 4)
    half = torch.randn(2, 3, 4, 4, 2)
    label = torch.randint(0, 3, (2, 1, 8, 8, 4))
    loss, parts = SegLoss(0.8, (2, 2, 2))([full, half], label)
    dc = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)

    def one(logits, lab):
        oh = F.one_hot(lab[:, 0], 3).movedim(-1, 1).float()
        return dc(logits, lab) + 0.8 * region_tversky_loss(torch.softmax(logits, 1), oh, (2, 2, 2))

    small = F.interpolate(label.float(), size=(4, 4, 2), mode="nearest").long()
    expected = 2 / 3 * one(full, label) + 1 / 3 * one(half, small)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(parts) == {"ce_dice", "tversky"}
    # a single tensor is one output; weight 0 drops the Tversky term
    alone, p0 = SegLoss(0.0)(full, label)
    assert alone.item() == pytest.approx(dc(full, label).item(), rel=1e-6) and p0["tversky"].item() == 0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\[B, K, X, Y, Z\]"):
        region_counts(torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 4), (1, 1, 1))
    with pytest.raises(ValueError, match="3 positive counts"):
        region_counts(torch.rand(1, 2, 4, 4, 4), torch.rand(1, 2, 4, 4, 4), (1, 0, 1))
