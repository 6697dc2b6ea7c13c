"""Figures and tables of the anomaly app: one PNG per evaluated series, markdown tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssmkit.engine.report import pyplot, save_figure
from ssmkit_apps.anomaly.metrics import segments

TABLE_KEYS = (
    ("f1", "F1"),
    ("auc_pr", "AUC-PR"),
    ("vus_pr", "VUS-PR"),
    ("precision", "P"),
    ("recall", "R"),
    ("auc_roc", "AUC-ROC"),
    ("vus_roc", "VUS-ROC"),
    ("pa_f1", "PA-F1"),
    ("aff_precision", "Aff-P"),
    ("aff_recall", "Aff-R"),
    ("flagged", "flagged"),
    ("out_of_range", "out-of-range"),
)


def plot_series(
    raw: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray | None,
    threshold: float,
    path: str | Path,
    *,
    title: str = "",
    max_channels: int = 4,
) -> Path:
    """Signal (up to ``max_channels`` channels) above the score with its threshold; true
    anomalies shaded on both panels. raw: [T, C]; scores, labels: [T]."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(len(scores))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 4.8), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for c in range(min(max_channels, raw.shape[1])):
        ax1.plot(t, raw[:, c], lw=0.6, label=f"ch {c}")
    ax2.plot(t, scores, lw=0.7, color="k", label="score")
    if np.isfinite(threshold):
        ax2.axhline(threshold, color="tab:red", ls="--", lw=0.9, label=f"threshold {threshold:.3g}")
    flagged = scores > threshold
    ax2.scatter(t[flagged], scores[flagged], s=4, color="tab:red", zorder=3)
    if labels is not None:
        for s, e in segments(labels):
            for ax in (ax1, ax2):
                ax.axvspan(s - 0.5, e - 0.5, color="tab:orange", alpha=0.3, lw=0)
    pos = scores[scores > 0]
    if len(pos) and scores.min() >= 0 and np.nanmax(scores) / max(np.percentile(pos, 50), 1e-30) > 1e3:
        ax2.set_yscale("symlog", linthresh=max(float(np.percentile(pos, 50)), 1e-12))  # heavy-tailed scores
    ax1.set_ylabel("signal")
    ax2.set_ylabel("anomaly score")
    ax2.set_xlabel("time step (orange: labelled anomaly)")
    ax1.legend(loc="upper right", fontsize=7, ncol=4)
    ax2.legend(loc="upper right", fontsize=7)
    if title:
        ax1.set_title(title)
    return save_figure(fig, path)


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.3f}"


def metrics_table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per model, the reported metrics side by side."""
    head = "| model | " + " | ".join(h for _, h in TABLE_KEYS) + " |"
    sep = "|---" * (len(TABLE_KEYS) + 1) + "|"
    lines = [head, sep]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(fmt(m.get(k)) for k, _ in TABLE_KEYS) + " |")
    return "\n".join(lines)
