"""Figures and sample videos of the talking-head app: frame strips, lip-sync traces, sample mp4s."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def frame_strip(path: str | Path, rows: dict[str, np.ndarray], ref: np.ndarray | None = None, every: int = 2,
                max_frames: int = 12, scale: int = 2) -> Path:
    """A PNG with one labelled row per entry of ``rows`` (uint8 [T, H, W, 3] each): every
    ``every``-th frame, at most ``max_frames``; the reference frame first when given."""
    from ssmkit.engine.report import pyplot, save_figure

    plt = pyplot()
    names = list(rows)
    picks = list(range(0, min(len(f) for f in rows.values()), every))[:max_frames]
    cols = len(picks) + (1 if ref is not None else 0)
    h, w = next(iter(rows.values())).shape[1:3]
    size = (cols * w * scale / 100 + 0.2, len(names) * h * scale / 100 + 0.4)
    fig, axes = plt.subplots(len(names), cols, figsize=size, dpi=100, squeeze=False)
    for r, name in enumerate(names):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if ref is not None and c == 0:
                ax.imshow(ref if r == 0 else np.full_like(ref, 255))
                if r == 0:
                    ax.set_title("reference", fontsize=7)
                continue
            k = picks[c - (1 if ref is not None else 0)]
            ax.imshow(rows[name][k])
            if r == 0:
                ax.set_title(f"frame {k}", fontsize=7)
            if c == (1 if ref is not None else 0):
                ax.set_ylabel(name, fontsize=7)
    fig.subplots_adjust(left=0.04, right=0.99, top=0.9, bottom=0.02, wspace=0.04, hspace=0.08)
    return save_figure(fig, path, tight=False)


def lipsync_trace(path: str | Path, traces: dict[str, list], ground_truth: bool = True) -> Path:
    """The driving mouth signal against the opening measured on generated frames, per mode (first clip)."""
    from ssmkit.engine.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    first = next(iter(traces.values()))[0]
    drive, _, real_open = first[0], first[1], first[2]

    def z(v):
        v = np.asarray(v, np.float64)
        return (v - v.mean()) / (v.std() + 1e-9)

    ax.plot(z(drive), "k-", lw=2, label="driving mouth signal")
    if ground_truth:
        ax.plot(z(real_open), "k:", label="measured: ground truth")
    for mode, items in traces.items():
        ax.plot(z(items[0][1]), label=f"measured: generated ({mode})")
    ax.set_xlabel("frame (25 fps)")
    ax.set_ylabel("z-score")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def write_eval_figures(run_dir: Path, ds, traces: dict[str, list], n_samples: int) -> int:
    """plots/frame_strip.png, plots/lipsync_trace.png and samples/<clip>_<mode>.mp4 (with the clip's
    speech) for the first ``n_samples`` sampled clips. Returns the number of mp4s written."""
    from ssmkit_apps.talkinghead.videoio import write_mp4

    if not traces:
        return 0
    plots = Path(run_dir) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    modes = list(traces)
    first = traces[modes[0]][0]
    clip = ds.clips[first[5]]
    rows = {"ground truth": first[4]}
    rows.update({f"generated ({m})": traces[m][0][3] for m in modes})
    frame_strip(plots / "frame_strip.png", rows, ref=clip.ref)
    lipsync_trace(plots / "lipsync_trace.png", traces)
    written = 0
    if n_samples:
        out = Path(run_dir) / "samples"
        out.mkdir(exist_ok=True)
        for m in modes:
            for item in traces[m][:n_samples]:
                c = ds.clips[item[5]]
                write_mp4(out / f"{c.name}_{m}.mp4", item[3], c.audio)
                written += 1
    return written


__all__ = ["frame_strip", "lipsync_trace", "write_eval_figures"]
