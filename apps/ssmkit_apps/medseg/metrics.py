"""Per-class Dice and HD95 from MONAI's metrics, their summary table and a box plot.

Two readings of each, side by side:
- ``dice``: MONAI's ``DiceMetric`` (a class absent from the reference is skipped for that case,
  the community's convention); ``dice_strict`` counts it as 1 when the prediction is empty too and 0
  when the model predicts it anyway, so false positives on absent classes are not hidden.
- ``hd95``: MONAI's ``HausdorffDistanceMetric(percentile=95)`` in mm over the cases where both
  prediction and reference hold the class (the usual report); ``hd95_missed`` counts the cases
  where the prediction missed a present class, and ``hd95_strict`` charges each such case the
  volume's diagonal (the worst possible distance) instead of dropping it.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from ssmkit.engine.files import atomic_path


def case_metrics(pred: torch.Tensor, label: torch.Tensor, n_classes: int,
                 spacing: list[float]) -> dict[str, np.ndarray]:
    """Per-class metrics [K - 1] of one case. pred, label: integer maps [X, Y, Z] on one grid."""
    if pred.shape != label.shape or pred.ndim != 3:
        raise ValueError(f"expected pred and label [X, Y, Z] of one shape; got {tuple(pred.shape)}, "
                         f"{tuple(label.shape)}")
    p = F.one_hot(pred.long().cpu(), n_classes).movedim(-1, 0)[None].float()
    g = F.one_hot(label.long().cpu(), n_classes).movedim(-1, 0)[None].float()
    dice = DiceMetric(include_background=False, reduction="none")(p, g)[0].numpy()
    strict = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(p, g)[0].numpy()
    present, predicted = g[0, 1:].flatten(1).any(1).numpy(), p[0, 1:].flatten(1).any(1).numpy()
    hd = np.full(n_classes - 1, np.nan)
    both = present & predicted
    if both.any():
        # MONAI warns for every class that is empty in the prediction or the reference; those are
        # dropped here (hd95) or charged the diagonal (hd95_strict), so the warning is only noise.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"the (prediction|ground truth) of class \d+ is all 0")
            hd_all = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
                p, g, spacing=list(spacing))[0].numpy()
        hd[both] = hd_all[both]
    missed = present & ~predicted
    diag = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing))))
    hd_strict = np.where(missed, diag, hd)
    return {"dice": dice, "dice_strict": strict, "hd95": hd, "hd95_strict": hd_strict, "missed": missed.astype(float),
            "present": present.astype(float)}


def _nanmean(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def summarize(rows: list[dict[str, np.ndarray]], class_names: list[str]) -> dict[str, float]:
    """Means over cases, per foreground class and over classes: dice, dice_strict, hd95, hd95_strict, hd95_missed."""
    out: dict[str, float] = {}
    stack = {k: np.stack([r[k] for r in rows]) for k in rows[0]}  # [cases, K - 1]
    for j, name in enumerate(class_names[1:]):
        out[f"dice/{name}"] = _nanmean(stack["dice"][:, j])
        out[f"dice_strict/{name}"] = _nanmean(stack["dice_strict"][:, j])
        out[f"hd95/{name}"] = _nanmean(stack["hd95"][:, j])
        out[f"hd95_strict/{name}"] = _nanmean(stack["hd95_strict"][:, j])
    names = class_names[1:]
    out["dice"] = _nanmean(np.array([out[f"dice/{n}"] for n in names]))
    out["dice_strict"] = _nanmean(np.array([out[f"dice_strict/{n}"] for n in names]))
    out["hd95"] = _nanmean(np.array([out[f"hd95/{n}"] for n in names]))
    out["hd95_strict"] = _nanmean(np.array([out[f"hd95_strict/{n}"] for n in names]))
    out["hd95_missed"] = float(stack["missed"].sum())
    out["cases"] = float(len(rows))
    return out


def table(rows: list[dict[str, np.ndarray]], class_names: list[str]) -> str:
    """Markdown: per class, Dice and HD95 as mean +- sd (median), the strict readings, and misses."""
    stack = {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def ms(v: np.ndarray, digits: int) -> str:
        v = v[np.isfinite(v)]
        if not v.size:
            return "n/a"
        return f"{v.mean():.{digits}f} ± {v.std():.{digits}f} ({np.median(v):.{digits}f})"

    lines = ["| class | Dice mean ± sd (median) | strict Dice | HD95 mm mean ± sd (median) | strict HD95 mm | missed |",
             "|---|---:|---:|---:|---:|---:|"]
    for j, name in enumerate(class_names[1:]):
        lines.append(f"| {name} | {ms(stack['dice'][:, j], 3)} | {_nanmean(stack['dice_strict'][:, j]):.3f} | "
                     f"{ms(stack['hd95'][:, j], 2)} | {_nanmean(stack['hd95_strict'][:, j]):.2f} | "
                     f"{int(stack['missed'][:, j].sum())}/{int(stack['present'][:, j].sum())} |")
    s = summarize(rows, class_names)
    lines.append(f"| **mean** | **{s['dice']:.3f}** | {s['dice_strict']:.3f} | {s['hd95']:.2f} | "
                 f"{s['hd95_strict']:.2f} | {int(s['hd95_missed'])} |")
    return "\n".join(lines)


def write_case_csv(path: Path, cases: list[str], rows: list[dict[str, np.ndarray]], class_names: list[str]) -> None:
    """One line per case and class: case, class, dice, dice_strict, hd95, hd95_strict."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "class", "dice", "dice_strict", "hd95_mm", "hd95_strict_mm"])
        for case, r in zip(cases, rows):
            for j, name in enumerate(class_names[1:]):
                w.writerow([case, name, *(f"{r[k][j]:.5g}" if math.isfinite(r[k][j]) else "nan"
                                          for k in ("dice", "dice_strict", "hd95", "hd95_strict"))])


def read_case_csv(path: Path) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    """(class names, {metric: {class: values}}) from :func:`write_case_csv` output."""
    out: dict[str, dict[str, list[float]]] = {"dice": {}, "hd95_mm": {}}
    names: list[str] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["class"] not in names:
                names.append(row["class"])
            for k in out:
                out[k].setdefault(row["class"], []).append(float(row[k]))
    return names, out


def boxplot(series: dict[str, dict[str, dict[str, list[float]]]], path: Path, title: str = "") -> Path:
    """Per-class Dice and HD95 box plots, one box per (model, class); ``series``: {model: {metric: {class: values}}}."""
    from ssmkit.engine.report import pyplot, save_figure

    plt = pyplot()
    models = list(series)
    classes = list(next(iter(series.values()))["dice"])
    fig, axes = plt.subplots(1, 2, figsize=(min(16, max(8, 1.3 * len(classes) * len(models))), 4), dpi=110)
    width = 0.8 / len(models)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric, label in ((axes[0], "dice", "Dice"), (axes[1], "hd95_mm", "HD95 (mm)")):
        for m, model in enumerate(models):
            data = [[v for v in series[model][metric][c] if math.isfinite(v)] or [float("nan")] for c in classes]
            pos = [i + (m - (len(models) - 1) / 2) * width for i in range(len(classes))]
            bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=False,
                            medianprops={"color": "black"})
            for box in bp["boxes"]:
                box.set_facecolor(colors[m % len(colors)])
                box.set_alpha(0.6)
            # every case as a dot in the model's colour: with one or two cases a box alone is a bare line
            for x, vals in zip(pos, data):
                ax.scatter([x] * len(vals), vals, s=12, color=colors[m % len(colors)], edgecolors="black",
                           linewidths=0.4, zorder=3)
            ax.plot([], [], color=colors[m % len(colors)], lw=6, alpha=0.6, label=model)
        ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, 1)
    if len(models) > 1:
        axes[0].legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
    return path


__all__ = ["boxplot", "case_metrics", "read_case_csv", "summarize", "table", "write_case_csv"]
