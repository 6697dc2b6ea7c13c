"""Several models trained on one budget (same data, patch, batch, steps and seed), evaluated on
the test split, and tabulated side by side: ``ssmkit medseg compare --out DIR``.

Writes ``DIR/comparison.md`` (one row per model: parameters, training time, mean and per-class
Dice and HD95, strict readings), ``DIR/comparison.json`` and ``DIR/boxplot_test.png``. The
training runs themselves go to ``<run-root>/medseg/<id>/`` as usual.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ssmkit.engine import commands
from ssmkit.engine.files import atomic_write_text, check_output
from ssmkit_apps.medseg import metrics as M


def _fmt(v: float, digits: int) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def comparison_markdown(results: dict[str, dict[str, Any]], class_names: list[str]) -> str:
    head = ["| model | params (M) | train time (s) | mean Dice | strict Dice | HD95 mm | strict HD95 mm | missed |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m, r in results.items():
        t = r["test"]
        head.append(f"| {m} | {r['params'] / 1e6:.2f} | {r['train_seconds']:.0f} | **{_fmt(t['dice'], 3)}** | "
                    f"{_fmt(t['dice_strict'], 3)} | {_fmt(t['hd95'], 2)} | {_fmt(t['hd95_strict'], 2)} | "
                    f"{int(t['hd95_missed'])} |")
    per = ["| class | " + " | ".join(f"{m} Dice" for m in results) + " | " + " | ".join(f"{m} HD95" for m in results)
           + " |", "|---|" + "---:|" * (2 * len(results))]
    for c in class_names[1:]:
        dice = " | ".join(_fmt(r["test"].get(f"dice/{c}", float("nan")), 3) for r in results.values())
        hd = " | ".join(_fmt(r["test"].get(f"hd95/{c}", float("nan")), 2) for r in results.values())
        per.append(f"| {c} | {dice} | {hd} |")
    return "\n".join(head) + "\n\nPer class (test split, mean over cases; HD95 in mm):\n\n" + "\n".join(per) + "\n"


def run_comparison(models: list[str], overrides: list[str], out_dir: Path, run_root: str = "runs",
                   config: str | None = None, title: str = "", overwrite: bool = False,
                   verbose: bool = True) -> dict[str, dict[str, Any]]:
    """Train and test each model with the same overrides; write the comparison files to ``out_dir``."""
    from ssmkit_apps.medseg.app import MedsegApp

    out = check_output(out_dir, overwrite=overwrite, is_dir=True)
    results: dict[str, dict[str, Any]] = {}
    series: dict[str, dict[str, dict[str, list[float]]]] = {}
    class_names: list[str] = []
    for m in models:
        t0 = time.monotonic()
        run_dir, val = commands.train(MedsegApp, config, [*overrides, f"model.name={m}", f"run.root={run_root}"],
                                      verbose=verbose)
        seconds = time.monotonic() - t0
        test = commands.evaluate(MedsegApp, run=run_dir, split="test", verbose=False)
        app, model, _ = commands.load_app_model(MedsegApp, run_dir, None, None, None)
        class_names = app.plan.class_names
        n_params = sum(p.numel() for p in model.parameters())
        results[m] = {"run": str(run_dir), "train_seconds": seconds, "params": n_params,
                      "val": val, "test": test}
        names, per_case = M.read_case_csv(run_dir / "per_case_test.csv")
        series[m] = per_case
        if verbose:
            print(f"{m}: test mean Dice {test['dice']:.3f}, HD95 {test['hd95']:.2f} mm ({seconds:.0f} s)", flush=True)
    md = (f"# {title}\n\n" if title else "") + comparison_markdown(results, class_names)
    md += "\nRuns: " + ", ".join(f"{m}: `{r['run']}`" for m, r in results.items()) + "\n"
    atomic_write_text(out / "comparison.md", md)
    atomic_write_text(out / "comparison.json", json.dumps(results, indent=1, default=str) + "\n")
    M.boxplot(series, out / "boxplot_test.png", title=title or "test split")
    if verbose:
        print(md)
        print(f"wrote {out / 'comparison.md'}, {out / 'comparison.json'}, {out / 'boxplot_test.png'}")
    return results


__all__ = ["comparison_markdown", "run_comparison"]
