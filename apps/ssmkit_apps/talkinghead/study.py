"""``ssmkit talkinghead study --out DIR``: the ablations, trained and evaluated side by side.

Variants (same data, seed, budget and evaluation; ``--set`` overrides apply to all):

- ``full``: both branches, mask-drop on (the default model);
- ``no_mask_drop``: both branches, each sees and writes every token;
- ``audio_branch``: the audio branch alone;
- ``motion_branch``: the expression branch alone.

Each is evaluated on the test split (held-out speech, new faces) with the audio branch on
(mode ``both``) and gated off (mode ``motion``), so one table holds the main target (lip sync
with audio control on vs off) and the ablations. The runs go to ``<run.root>/talkinghead/study-*``;
DIR gets ``study.json``, ``study.md`` (the table), ``lipsync.png`` and the full model's
``frame_strip.png`` and ``lipsync_trace.png``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

VARIANTS: dict[str, list[str]] = {
    "full": [],
    "no_mask_drop": ["model.mask_drop=false"],
    "audio_branch": ["model.branches=[audio]"],
    "motion_branch": ["model.branches=[motion]"],
}
COLUMNS = (("lipsync_both", "lip sync, audio on"), ("lipsync_motion", "lip sync, audio gated off"),
           ("psnr_both", "PSNR (dB)"), ("ssim_both", "SSIM"), ("flicker_both", "flicker"),
           ("loss", "test denoising loss"))


def run_study(out: str | Path, overrides: list[str] | None = None, variants: list[str] | None = None,
              overwrite: bool = False, verbose: bool = True) -> dict[str, dict[str, float]]:
    from ssmkit.engine import commands
    from ssmkit.engine.files import atomic_write_text, check_output
    from ssmkit.errors import DataError
    from ssmkit_apps.talkinghead.app import TalkingHeadApp

    names = list(variants or VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise DataError(f"unknown study variant(s) {unknown}; expected some of {list(VARIANTS)}")
    root = check_output(out, overwrite=overwrite, is_dir=True)
    results: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    run_dirs: dict[str, Path] = {}
    for name in names:
        t0 = time.monotonic()
        ov = [*(overrides or []), *VARIANTS[name], f"run.id=study-{name}"]
        run_dir, _ = commands.train(TalkingHeadApp, None, ov, verbose=verbose, overwrite=True)
        results[name] = commands.evaluate(TalkingHeadApp, run=run_dir, split="test", verbose=verbose)
        seconds[name] = time.monotonic() - t0
        run_dirs[name] = run_dir
        atomic_write_text(root / "study.json", json.dumps({"overrides": overrides or [], "results": results,
                                                           "seconds": seconds}, indent=1) + "\n")
    table = study_table(results, seconds)
    atomic_write_text(root / "study.md", table + "\n")
    plot_lipsync(root / "lipsync.png", results)
    first = run_dirs.get("full") or run_dirs[names[0]]
    for fig in ("frame_strip.png", "lipsync_trace.png"):
        if (first / "plots" / fig).is_file():
            shutil.copyfile(first / "plots" / fig, root / fig)
    if verbose:
        print(table)
    return results


def study_table(results: dict[str, dict[str, float]], seconds: dict[str, float]) -> str:
    head = "| variant | " + " | ".join(label for _, label in COLUMNS) + " | train + eval time |"
    rows = [head, "|---" * (len(COLUMNS) + 2) + "|"]
    for name, m in results.items():
        cells = []
        for key, _ in COLUMNS:
            v = m.get(key, float("nan"))
            cells.append("n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}")
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {seconds.get(name, 0) / 60:.0f} min |")
    return "\n".join(rows)


def plot_lipsync(path: Path, results: dict[str, dict[str, float]]) -> None:
    from ssmkit.engine.report import pyplot, save_figure

    plt = pyplot()
    names = list(results)
    on = [results[n].get("lipsync_both", float("nan")) for n in names]
    off = [results[n].get("lipsync_motion", float("nan")) for n in names]
    gt = [results[n].get("lipsync_ground_truth", float("nan")) for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], on, 0.4, label="audio on (mode both)")
    ax.bar([i + 0.2 for i in x], off, 0.4, label="audio gated off (mode motion)")
    if gt and not math.isnan(gt[0]):
        ax.axhline(gt[0], color="k", ls=":", label="ground-truth frames")
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_ylabel("lip-sync correlation (test)")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=7)
    save_figure(fig, path)


__all__ = ["VARIANTS", "plot_lipsync", "run_study", "study_table"]
