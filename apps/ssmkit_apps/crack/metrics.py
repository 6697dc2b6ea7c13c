"""Crack segmentation metrics over the 0.00-0.99 threshold sweep (the crack community's protocol).

A pixel is predicted crack when its probability is strictly above the threshold t, for the 100
thresholds t = 0.00, 0.01, ..., 0.99. Per image and threshold we keep the counts TP, FP, FN, TN
(one pass per image: each pixel's probability is binned by how many thresholds lie below it,
and reverse cumulative sums give every threshold's counts at once). From them:

- **ODS** (optimal dataset scale): the best, over t, of the mean per-image F1.
- **OIS** (optimal image scale): the mean over images of each image's best F1 over t.
- **mIoU**: the best, over t, of the mean per-image (IoU_crack + IoU_background) / 2.
- **AP**: the area under the precision-recall curve of the pixels pooled over the split,
  step-interpolated over the 100 thresholds (sklearn's convention on that grid).
- At one given threshold (the one chosen on validation): pooled **precision**, **recall** and
  **F1**, and the per-image means **image_f1** and **image_miou**.

ODS, OIS and mIoU pick their threshold on the split they score; reported on a test split they
are the community's numbers, optimistic by construction. ``image_f1`` and ``image_miou`` at the
validation threshold are the same measures without that freedom.

Degenerate cases (the published evaluation script gets them wrong, scoring a crack-free image
0 even when nothing is predicted): precision is 1 when nothing is predicted; an image with no
crack pixels has F1 = 1 and IoU_crack = 1 when nothing is predicted there, else 0.
"""

from __future__ import annotations

import numpy as np
import torch

THRESHOLDS = np.round(np.arange(100) / 100, 2)


def threshold_counts(prob: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Counts for every threshold of one image: int64 [4, 100] rows TP, FP, FN, TN.

    Args:
        prob: crack probabilities [H, W] in [0, 1] (any float dtype).
        truth: crack mask [H, W] (bool or {0, 1}).
    """
    prob = np.asarray(prob, dtype=np.float64)
    truth = np.asarray(truth).astype(bool)
    if prob.shape != truth.shape:
        raise ValueError(f"prob {prob.shape} and truth {truth.shape} must have the same shape")
    # k = how many thresholds lie strictly below p; the pixel is positive for thresholds 0..k-1.
    k = np.searchsorted(THRESHOLDS, prob.ravel(), side="left")
    t = truth.ravel()
    pos_hist = np.bincount(k[t], minlength=101)
    neg_hist = np.bincount(k[~t], minlength=101)
    # Positives at threshold j: pixels with k > j, i.e. the reverse cumulative sum from j + 1.
    tp = np.cumsum(pos_hist[::-1])[::-1][1:]
    fp = np.cumsum(neg_hist[::-1])[::-1][1:]
    fn = int(t.sum()) - tp
    tn = int((~t).sum()) - fp
    return np.stack([tp, fp, fn, tn]).astype(np.int64)


def _div(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, float(empty))
    np.divide(num, den, out=out, where=den > 0)
    return out


def f1_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-entry F1 with the conventions above (same shape as the inputs)."""
    p = _div(tp, tp + fp, 1.0)
    r = _div(tp, tp + fn, 1.0)  # no crack pixels: recall is vacuous, F1 then follows precision
    f1 = _div(2 * p * r, p + r, 0.0)
    # No truth: F1 = 1 only when nothing is predicted either.
    no_truth = (tp + fn) == 0
    return np.where(no_truth, ((tp + fp) == 0).astype(np.float64), f1)


def miou_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> np.ndarray:
    """Per-entry (IoU_crack + IoU_background) / 2; an empty union counts as IoU 1."""
    return 0.5 * (_div(tp, tp + fp + fn, 1.0) + _div(tn, tn + fp + fn, 1.0))


def threshold_index(threshold: float) -> int:
    """Index of ``threshold`` on the sweep grid (it must be one of 0.00, ..., 0.99)."""
    i = int(round(float(threshold) * 100))
    if not 0 <= i < 100 or abs(THRESHOLDS[i] - threshold) > 1e-6:
        raise ValueError(f"threshold must be one of 0.00, 0.01, ..., 0.99; got {threshold!r}")
    return i


def sweep_metrics(counts: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """All metrics from per-image counts [N, 4, 100] (stacked :func:`threshold_counts`)."""
    counts = np.asarray(counts)
    if counts.ndim != 3 or counts.shape[1:] != (4, 100) or counts.shape[0] == 0:
        raise ValueError(f"counts must be [N >= 1, 4, 100]; got {counts.shape}")
    tp, fp, fn, tn = (counts[:, i].astype(np.float64) for i in range(4))
    f1 = f1_scores(tp, fp, fn)  # [N, 100]
    miou = miou_scores(tp, fp, fn, tn)
    mean_f1 = f1.mean(0)
    best = int(np.argmax(mean_f1))  # ties: the lowest threshold
    out = {"ods": float(mean_f1[best]), "ods_threshold": float(THRESHOLDS[best]),
           "ois": float(f1.max(1).mean()), "miou": float(miou.mean(0).max())}
    TP, FP, FN = tp.sum(0), fp.sum(0), fn.sum(0)
    prec = _div(TP, TP + FP, 1.0)
    rec = _div(TP, TP + FN, 0.0)
    rec_next = np.append(rec[1:], 0.0)  # recall falls as the threshold rises
    out["ap"] = float(np.sum((rec - rec_next) * prec))
    if threshold is not None:
        j = threshold_index(threshold)
        p, r = float(prec[j]), float(rec[j])
        out.update({"threshold": float(THRESHOLDS[j]), "precision": p, "recall": r,
                    "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0,
                    "image_f1": float(f1[:, j].mean()), "image_miou": float(miou[:, j].mean())})
    return out


def pr_curve(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled (precision [100], recall [100]) over the threshold sweep."""
    tp, fp, fn = (np.asarray(counts)[:, i].sum(0).astype(np.float64) for i in range(3))
    return _div(tp, tp + fp, 1.0), _div(tp, tp + fn, 0.0)


class SweepMeter:
    """Accumulates per-image threshold counts batch by batch: ``update(probs, masks)`` then
    ``compute(threshold)``. ``probs`` and ``masks`` are [B, 1, H, W] or [B, H, W] tensors or arrays."""

    def __init__(self) -> None:
        self.counts: list[np.ndarray] = []

    def update(self, probs, masks) -> None:
        p = probs.detach().float().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
        m = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
        if p.ndim == 4:
            p, m = p[:, 0], m[:, 0]
        if p.ndim != 3 or p.shape != m.shape:
            raise ValueError(f"expected probs and masks [B, H, W] or [B, 1, H, W] of one shape; got {p.shape}, "
                             f"{m.shape}")
        self.counts.extend(threshold_counts(pi, mi) for pi, mi in zip(p, m))

    def __len__(self) -> int:
        return len(self.counts)

    def stacked(self) -> np.ndarray:
        return np.stack(self.counts)

    def compute(self, threshold: float | None = None) -> dict[str, float]:
        return sweep_metrics(self.stacked(), threshold)


__all__ = ["THRESHOLDS", "SweepMeter", "f1_scores", "miou_scores", "pr_curve", "sweep_metrics", "threshold_counts",
           "threshold_index"]
