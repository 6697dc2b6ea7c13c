"""SCSegamba against the U-Net baseline and the darkness baseline, trained and tested alike.

    python -m ssmkit_apps.crack.compare --out docs/results/crack [--set train.epochs=4 ...]

Trains both models with the app's default config plus the same ``--set`` overrides (each in its
own run under ``--runs``), evaluates each on the test split at its validation threshold, and
writes into ``--out``: ``compare.md`` (the table), ``compare.json``, ``pr_test.png`` (the three
pooled PR curves) and ``grid_test.png`` (image | truth | SCSegamba | U-Net | darkness).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ssmkit.engine import commands
from ssmkit.engine.files import atomic_write_text, check_output
from ssmkit_apps.crack.app import CrackApp, darkness_baseline
from ssmkit_apps.crack.metrics import SweepMeter, pr_curve

KEYS = ("ods", "ois", "miou", "ap", "precision", "recall", "f1", "image_f1", "image_miou", "threshold")


def _probs(model: torch.nn.Module, ds, device: torch.device, batch: int = 16) -> np.ndarray:
    """Test-split probabilities [N, H, W] of ``model`` (for the PR curve and the grid)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(ds), batch):
            x = torch.stack([ds[j][0] for j in range(i, min(i + batch, len(ds)))]).to(device)
            out.append(torch.sigmoid(model(x).float())[:, 0].cpu().numpy())
    return np.concatenate(out)


def run_comparison(out: Path, overrides: list[str], runs: Path, verbose: bool = True) -> dict:
    results, curves, points, probs, seconds = {}, {}, {}, {}, {}
    test_ds = val_ds = None
    for name in ("scsegamba", "unet"):
        t0 = time.monotonic()
        run, _ = commands.train(CrackApp, None, [*overrides, f"model.name={name}", f"run.root={runs}"], verbose=verbose)
        seconds[name] = time.monotonic() - t0
        results[name] = commands.evaluate(CrackApp, run=run, split="test", verbose=False,
                                          overrides=["eval.baseline=false"])
        app, model, ctx = commands.load_app_model(CrackApp, run, None, None, None)
        test_ds = app.build_dataset("test")
        val_ds = app.build_dataset("val")
        probs[name] = _probs(model, test_ds, ctx.device)
        meter = SweepMeter()
        meter.update(probs[name], np.stack([test_ds.mask(i) for i in range(len(test_ds))]))
        curves[name] = pr_curve(meter.stacked())
        points[name] = (results[name]["recall"], results[name]["precision"])
        results[name]["run"] = str(run)
        results[name]["train_seconds"] = seconds[name]
    base, counts, base_thr = darkness_baseline(val_ds, test_ds)
    results["darkness"] = base
    curves["darkness"] = pr_curve(counts)
    points["darkness"] = (base["recall"], base["precision"])

    from ssmkit_apps.crack.model import param_count
    from ssmkit_apps.crack.report import panel_grid, pr_plot
    from ssmkit_apps.crack.synth import darkness_scores

    pr_plot(curves, points, out / "pr_test.png", title="test split (dots: validation thresholds)")
    thr = {n: results[n]["threshold"] for n in ("scsegamba", "unet")}
    heads = ["image", "truth", f"SCSegamba > {thr['scsegamba']:.2f}", f"U-Net > {thr['unet']:.2f}",
             f"darkness > {base_thr:.2f}"]
    rows = [[test_ds.image(i), test_ds.mask(i), *[probs[n][i] > thr[n] for n in ("scsegamba", "unet")],
             darkness_scores(test_ds.image(i)) > base_thr] for i in range(min(4, len(test_ds)))]
    panel_grid(rows, heads, out / "grid_test.png")
    params = {}
    for name in ("scsegamba", "unet"):
        _, model, _ = commands.load_app_model(CrackApp, results[name]["run"], None, None, None)
        params[name] = param_count(model)
    lines = ["| method | params | ODS | OIS | mIoU | AP | P | R | F1 | image F1 | image mIoU | threshold | "
             "train time |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, label in (("scsegamba", "SCSegamba"), ("unet", "U-Net"), ("darkness", "darkness baseline")):
        r = results[name]
        p = f"{params[name] / 1e3:.0f}k" if name in params else "0"
        t = f"{seconds[name]:.0f} s" if name in seconds else "-"
        lines.append(f"| {label} | {p} | " + " | ".join(f"{r[k]:.3f}" for k in KEYS[:-1])
                     + f" | {r['threshold']:.2f} | {t} |")
    head = (f"Overrides: `{' '.join(overrides) or '(none)'}`; machine: {platform.machine()}, "
            f"{torch.get_num_threads()} torch threads; date {time.strftime('%Y-%m-%d')}.\n\n")
    atomic_write_text(out / "compare.md", head + "\n".join(lines) + "\n")
    atomic_write_text(out / "compare.json", json.dumps({"overrides": overrides, "results": results, "params": params},
                                                       indent=1, default=float) + "\n")
    if verbose:
        print(head + "\n".join(lines), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssmkit_apps.crack.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for compare.md/json and the PNGs")
    p.add_argument("--runs", default="runs/crack-compare", help="run.root of the two training runs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for both runs")
    p.add_argument("--overwrite", action="store_true", help="replace files in a non-empty --out")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    out = check_output(args.out, overwrite=args.overwrite, is_dir=True)
    run_comparison(out, args.set, Path(args.runs), verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
