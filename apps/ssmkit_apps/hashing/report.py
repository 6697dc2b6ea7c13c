"""Tables and plots of retrieval results: mAP tables in markdown and precision-recall PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssmkit.engine.report import pyplot, save_figure


def map_table(metrics: dict[str, float], bits: list[int] | tuple[int, ...]) -> str:
    """| direction | mAP@all at each code length (tie-aware in brackets) |."""
    head = "| direction | " + " | ".join(f"{b} bits" for b in bits) + " |"
    rows = [head, "|---" + "|---:" * len(bits) + "|"]
    for direction, label in (("i2t", "image -> text"), ("t2i", "text -> image")):
        cells = []
        for b in bits:
            m, t = metrics.get(f"{direction}_map_{b}"), metrics.get(f"{direction}_map_tie_{b}")
            cells.append("n/a" if m is None else f"{m:.4f} ({t:.4f})" if t is not None else f"{m:.4f}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    if "map_random" in metrics:
        rows.append(f"\nRandom codes: mAP@all {metrics['map_random']:.4f} (the chance level of this query set).")
    return "\n".join(rows)


def plot_pr_curves(curves: dict[str, dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]], path: str | Path,
                   title: str = "") -> Path:
    """One figure, two panels (image->text, text->image): precision against recall of Hamming-radius
    lookup, one line per model and code length. ``curves[model][(direction, bits)] = (prec, rec)``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), dpi=110, sharey=True)
    styles = ["-", "--", ":", "-."]
    for ax, direction, label in zip(axes, ("i2t", "t2i"), ("image -> text", "text -> image")):
        for mi, (model, by_key) in enumerate(curves.items()):
            for (d, bits), (prec, rec) in sorted(by_key.items(), key=lambda kv: kv[0][1]):
                if d != direction:
                    continue
                ok = np.isfinite(prec)
                ax.plot(rec[ok], prec[ok], styles[mi % len(styles)], marker=".", ms=3, label=f"{model} {bits} bits")
        ax.set_title(label)
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision")
    axes[1].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


__all__ = ["map_table", "plot_pr_curves"]
