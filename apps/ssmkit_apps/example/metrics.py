"""Classification metrics: a confusion matrix accumulated over batches, then accuracy and macro-F1."""

from __future__ import annotations

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[K, K] counts, rows = true class, columns = predicted class."""
    idx = target.long() * n_classes + pred.long()
    return torch.bincount(idx.flatten().cpu(), minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores(cm: torch.Tensor) -> dict[str, float]:
    """Accuracy, macro-F1 and balanced accuracy from a confusion matrix [K, K]."""
    cm = cm.double()
    tp = cm.diag()
    support, predicted = cm.sum(1), cm.sum(0)
    recall = tp / support.clamp_min(1)
    precision = tp / predicted.clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / cm.sum().clamp_min(1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
    }


class ConfusionMeter:
    """Stateful accumulator: ``update(logits, target)`` per batch, ``compute()`` at the end."""

    def __init__(self, n_classes: int):
        self.n_classes = n_classes
        self.cm = torch.zeros(n_classes, n_classes, dtype=torch.long)
        self.loss_sum, self.count = 0.0, 0

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        self.cm += confusion_matrix(logits.argmax(-1), target, self.n_classes)
        if loss is not None:
            self.loss_sum += float(loss) * target.numel()
        self.count += target.numel()

    def compute(self) -> dict[str, float]:
        out = scores(self.cm)
        if self.count:
            out["loss"] = self.loss_sum / self.count
        return out
