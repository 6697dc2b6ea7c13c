"""Run reports: plots/*.png from metrics.jsonl (matplotlib, headless) and report.md."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ssmkit.engine.files import atomic_path, atomic_write_text


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (never opens a window); import it through here."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # headless machines: never try to open a window
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, tight: bool = True) -> Path:
    """Lay out (``tight_layout`` unless ``tight`` is False), write ``fig`` to ``path`` atomically
    (a reader never sees half a PNG) and close it. Returns the path."""
    if tight:
        fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    pyplot().close(fig)
    return path


def plot_curves(records: list[dict[str, Any]], plots_dir: Path) -> list[Path]:
    """One PNG per metric, train and val curves over steps. Returns the files written."""
    plt = pyplot()
    plots_dir.mkdir(parents=True, exist_ok=True)
    series: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    skip = {"step", "epoch", "split", "time_s"}
    for r in records:
        split = r.get("split", "train")
        if split not in ("train", "val"):
            continue
        for k, v in r.items():
            if k in skip or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            xs, ys = series.setdefault(k, {}).setdefault(split, ([], []))
            xs.append(int(r["step"]))
            ys.append(float(v))
    written = []
    for metric, by_split in sorted(series.items()):
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        for split, (xs, ys) in sorted(by_split.items()):
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, ms=3, label=split)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        if metric == "loss" and all(y > 0 for _, ys in by_split.values() for y in ys):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(save_figure(fig, plots_dir / f"{metric.replace('/', '_')}.png"))
    return written


def metrics_table(metrics: dict[str, Any]) -> str:
    rows = ["| metric | value |", "|---|---|"]
    for k, v in metrics.items():
        rows.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return "\n".join(rows)


def write_report(
    run_dir: Path,
    title: str,
    sections: list[tuple[str, str]],
    plots: list[Path] | None = None,
) -> Path:
    """Write ``run_dir/report.md``: a title, markdown sections and the plots (relative links)."""
    lines = [f"# {title}", ""]
    for head, body in sections:
        if body.strip():
            lines += [f"## {head}", "", body.strip(), ""]
    if plots:
        lines += ["## Plots", ""]
        for p in plots:
            rel = os.path.relpath(p, run_dir)
            lines.append(f"![{p.stem}]({rel})")
        lines.append("")
    out = run_dir / "report.md"
    atomic_write_text(out, "\n".join(lines))
    return out


__all__ = ["metrics_table", "plot_curves", "pyplot", "write_report"]
