"""Figures of the crack app: the image | truth | prediction grid and the precision-recall plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssmkit.engine.report import pyplot, save_figure


def panel_grid(rows: Sequence[Sequence[np.ndarray]], heads: Sequence[str], path: Path, title: str = "") -> Path:
    """A grid of panels, one row per image: RGB uint8 [H, W, 3] panels as photos, 2-D panels
    (masks, probabilities) in grey from 0 to 1. ``heads`` titles the columns."""
    plt = pyplot()
    n, cols = len(rows), len(heads)
    fig, axes = plt.subplots(n, cols, figsize=(2.1 * cols, 2.1 * n + 0.4), dpi=100, squeeze=False)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            ax = axes[i, j]
            if panel.ndim == 3:
                ax.imshow(panel)
            else:
                ax.imshow(panel.astype(np.float32), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(heads[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def figure_grid(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], probs: Sequence[np.ndarray],
                threshold: float, path: Path, title: str = "", baseline: Sequence[np.ndarray] | None = None,
                baseline_threshold: float | None = None) -> Path:
    """One row per image: photo | truth | predicted mask at ``threshold`` | probability map
    (| the darkness baseline's mask, when given). images uint8 [H, W, 3]; truths, probs [H, W]."""
    heads = ["image", "truth", f"prediction (> {threshold:.2f})", "probability"]
    if baseline is not None:
        heads.append(f"darkness > {baseline_threshold:.2f}")
    rows = []
    for i in range(len(images)):
        row = [images[i], truths[i], probs[i] > threshold, probs[i]]
        if baseline is not None:
            row.append(baseline[i] > baseline_threshold)
        rows.append(row)
    return panel_grid(rows, heads, path, title)


def pr_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], points: dict[str, tuple[float, float]],
            path: Path, title: str = "") -> Path:
    """Pooled precision-recall curves over the threshold sweep, one per method; ``points`` marks
    each method's (recall, precision) at its validation threshold."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=100)
    for name, (prec, rec) in curves.items():
        line, = ax.plot(rec, prec, label=name)
        if name in points:
            r, p = points[name]
            ax.plot([r], [p], "o", color=line.get_color())
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


__all__ = ["figure_grid", "panel_grid", "pr_plot"]
