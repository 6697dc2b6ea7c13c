"""Crack metrics against cases computed by hand, and the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssmkit_apps.crack.losses import bce_dice_loss, soft_dice_loss
from ssmkit_apps.crack.metrics import THRESHOLDS, SweepMeter, sweep_metrics, threshold_counts

# Image A: two crack pixels (0.9, 0.6), background 0.2 and 0.0.
A_PROB = np.array([[0.9, 0.2], [0.6, 0.0]])
A_TRUTH = np.array([[1, 0], [1, 0]])
# Image B: one crack pixel at 0.15, background 0.15, 0.05, 0.05.
B_PROB = np.array([[0.15, 0.15], [0.05, 0.05]])
B_TRUTH = np.array([[0, 1], [0, 0]])


def _counts():
    return np.stack([threshold_counts(A_PROB, A_TRUTH), threshold_counts(B_PROB, B_TRUTH)])


def test_counts_follow_strictly_greater_than_threshold():
    c = threshold_counts(A_PROB, A_TRUTH)
    assert c.shape == (4, 100) and list(THRESHOLDS[[0, 20, 99]]) == [0.0, 0.2, 0.99]
    # t = 0.00: 0.9, 0.2, 0.6 are positive (0.0 is not above 0.00)
    assert c[:, 0].tolist() == [2, 1, 0, 1]
    # t = 0.20: 0.2 is no longer above the threshold
    assert c[:, 20].tolist() == [2, 0, 0, 2]
    assert c[:, 60].tolist() == [1, 0, 1, 2]  # 0.6 > 0.60 is false
    assert c[:, 99].tolist() == [0, 0, 2, 2]


def test_ods_ois_miou_ap_by_hand():
    m = sweep_metrics(_counts(), threshold=0.5)
    # mean per-image F1 peaks at t = 0.05..0.14: A has F1 0.8 (P 2/3, R 1), B 2/3 (P 1/2, R 1)
    assert m["ods"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["ods_threshold"] == pytest.approx(0.05)
    # each image's best F1: A 1.0 (t in 0.20..0.59), B 2/3
    assert m["ois"] == pytest.approx((1 + 2 / 3) / 2)
    # best mean (IoU_crack + IoU_bg)/2 at t = 0.20: A is perfect (1), B predicts nothing: (0 + 3/4)/2
    assert m["miou"] == pytest.approx((1 + 0.375) / 2)
    # pooled PR over the sweep: recall drops 1 -> 2/3 at P=0.6, 2/3 -> 1/3 at P=1, 1/3 -> 0 at P=1
    assert m["ap"] == pytest.approx(0.2 + 1 / 3 + 1 / 3)
    # at t = 0.5: pooled TP=2, FP=0, FN=1
    assert m["precision"] == pytest.approx(1.0) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(0.8)
    assert m["image_f1"] == pytest.approx(0.5)  # A: 1, B: 0
    assert m["image_miou"] == pytest.approx((1 + 0.375) / 2)


def test_ap_matches_sklearn_on_grid_aligned_scores():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    truth = rng.random((3, 20, 20)) < 0.2
    # Scores between grid points: "p > t" on the grid ranks pixels exactly as sklearn does.
    k = rng.integers(0, 100, truth.shape)
    prob = (np.where(truth, np.minimum(k + 20, 99), k) + 0.5) / 100
    meter = SweepMeter()
    meter.update(torch.from_numpy(prob)[:, None], torch.from_numpy(truth)[:, None])
    assert len(meter) == 3
    assert meter.compute()["ap"] == pytest.approx(average_precision_score(truth.ravel(), prob.ravel()), abs=1e-9)


def test_crack_free_image_conventions():
    empty = np.zeros((3, 3), bool)
    nothing = threshold_counts(np.zeros((3, 3)), empty)
    something = threshold_counts(np.full((3, 3), 0.7), empty)
    m = sweep_metrics(nothing[None], threshold=0.5)
    assert m["ods"] == 1.0 and m["image_f1"] == 1.0 and m["image_miou"] == 1.0 and m["precision"] == 1.0
    m = sweep_metrics(something[None], threshold=0.5)
    assert m["image_f1"] == 0.0 and m["ods"] == 1.0  # t >= 0.70 predicts nothing
    assert m["ois"] == 1.0 and m["recall"] == 0.0


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="same shape"):
        threshold_counts(np.zeros((2, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="one of 0.00"):
        sweep_metrics(_counts(), threshold=0.505)
    with pytest.raises(ValueError, match=r"\[N >= 1, 4, 100\]"):
        sweep_metrics(np.zeros((0, 4, 100)))


def test_loss_weights_and_dice():
    logits = torch.tensor([[[[4.0, -4.0], [-4.0, 4.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    loss, parts = bce_dice_loss(logits, target)
    assert loss.item() == pytest.approx(0.83 * parts["bce"].item() + 0.17 * parts["dice"].item())
    assert parts["bce"].item() == pytest.approx(float(torch.nn.functional.softplus(torch.tensor(-4.0))), rel=1e-5)
    # soft Dice by hand: p = sigmoid(4) on the crack, 1 - sigmoid(4) elsewhere
    p = torch.sigmoid(torch.tensor(4.0)).item()
    tp, fp, fn = 2 * p, 2 * (1 - p), 2 * (1 - p)
    assert soft_dice_loss(torch.sigmoid(logits), target).item() == pytest.approx(
        1 - (2 * tp + 1) / (2 * tp + fp + fn + 1), rel=1e-5)
    # a confident wrong answer costs more than a confident right one
    worse, _ = bce_dice_loss(-logits, target)
    assert worse.item() > loss.item() + 1.0
    with pytest.raises(ValueError, match="same shape"):
        bce_dice_loss(logits, target[..., :1])
