"""PromptHash and the DCMH-style baseline trained and evaluated side by side through the engine
commands, on the embedded scenes (or any data section given with ``--set data....``).

    python -m ssmkit_apps.hashing.compare [--out runs/hashing-compare] [--set train.epochs=6]
                                          [--protocols disjoint,standard]

For each model it trains once (``configs/default.yaml`` plus the overrides), evaluates the test
split under each protocol requested, and writes ``<out>/report.md`` (mAP@all tables for both
directions and every code length, tie-aware mAP and P@k beside them, the random-code level),
``<out>/results.json`` and ``<out>/pr_<protocol>.png`` (precision-recall curves of both models).
The checkpoint of each run is the one with the best validation mAP; the test split is read
only here, after training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ssmkit.engine import commands
from ssmkit.engine.files import atomic_write_text
from ssmkit_apps.hashing.app import HashingApp

MODELS = ("prompthash", "dcmh")


def _table(results: dict[str, dict[str, float]], bits: list[int], key: str) -> list[str]:
    rows = ["| model | direction | " + " | ".join(f"{b} bits" for b in bits) + " |",
            "|---|---|" + "---:|" * len(bits)]
    for model, m in results.items():
        for d, label in (("i2t", "image -> text"), ("t2i", "text -> image")):
            rows.append(f"| {model} | {label} | " + " | ".join(f"{m[f'{d}_{key}_{b}']:.4f}" for b in bits) + " |")
    return rows


def _curves(app: HashingApp, run_dir: Path, overrides: list[str]):
    """Re-encode the test split of a trained run and return its PR curves {(direction, bits): ...}."""
    app2, model, ctx = commands.load_app_model(HashingApp, run_dir, None, None, overrides)
    from ssmkit.engine.trainer import run_evaluation

    ctx.split = "curves"  # not "test": no plot of its own, no result file
    run_evaluation(app2, model, app2.build_dataset("test"), ctx)
    return app2._last_curves


def run_comparison(out: str | Path = "runs/hashing-compare", overrides: list[str] | None = None,
                   models: tuple[str, ...] = MODELS, protocols: tuple[str, ...] = ("disjoint",),
                   run_root: str | Path | None = None, verbose: bool = True) -> dict:
    from ssmkit_apps.hashing.report import plot_pr_curves

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    run_root = Path(run_root) if run_root is not None else root
    overrides = list(overrides or [])
    results: dict = {"test": {p: {} for p in protocols}, "seconds": {}, "runs": {}}
    curves: dict[str, dict] = {p: {} for p in protocols}
    bits: list[int] = []
    for name in models:
        t0 = time.monotonic()
        ov = [f"run.root={run_root}", f"run.id={name}", f"model.name={name}", *overrides]
        run_dir, _ = commands.train(HashingApp, None, ov, verbose=verbose, overwrite=True)
        results["runs"][name] = str(run_dir)
        for proto in protocols:
            pov = [f"data.protocol={proto}"]
            results["test"][proto][name] = commands.evaluate(HashingApp, run=run_dir, split="test", overrides=pov,
                                                             verbose=False)
            curves[proto][name] = _curves(HashingApp, run_dir, pov)
        results["seconds"][name] = round(time.monotonic() - t0, 1)
        cfg = commands.app_config(HashingApp, run_dir=run_dir)
        bits = list(cfg.model.bits)
    lines = ["# PromptHash vs DCMH-style baseline", "",
             f"Overrides: `{' '.join(overrides) or '(none)'}`; runs under `{run_root}/hashing/`.", ""]
    for proto in protocols:
        res = results["test"][proto]
        first = next(iter(res.values()))
        lines += [f"## Test split, {proto} protocol ({int(first['n_queries'])} queries, "
                  f"{int(first['n_database'])} database items)", "",
                  "mAP@all (ties by database order):", "", *_table(res, bits, "map"), "",
                  "Tie-aware mAP@all:", "", *_table(res, bits, "map_tie"), "",
                  "P@10 (tie-aware):", "", *_table(res, bits, "p@10_tie"), "",
                  f"Random codes: mAP@all {first['map_random']:.4f}.", ""]
        wins = [all(res["prompthash"][f"{d}_map_{b}"] > res["dcmh"][f"{d}_map_{b}"] for d in ("i2t", "t2i")
                    for b in bits)] if {"prompthash", "dcmh"} <= set(res) else []
        if wins:
            lines += [f"PromptHash above DCMH in mAP@all at every code length in both directions: "
                      f"{'yes' if wins[0] else 'no'}.", ""]
        png = plot_pr_curves(curves[proto], root / f"pr_{proto}.png", title=f"test split, {proto} protocol")
        lines += [f"![precision-recall]({png.name})", ""]
    lines += ["Training and evaluation time per model (s): "
              + ", ".join(f"{k} {v}" for k, v in results["seconds"].items()), ""]
    atomic_write_text(root / "report.md", "\n".join(lines))
    atomic_write_text(root / "results.json", json.dumps(results, indent=1) + "\n")
    if verbose:
        print("\n".join(lines))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssmkit_apps.hashing.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/hashing-compare", help="report folder (default runs/hashing-compare)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated (default prompthash,dcmh)")
    p.add_argument("--protocols", default="disjoint", help="comma-separated: disjoint, standard")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    protocols = tuple(x for x in args.protocols.split(",") if x)
    for x in protocols:
        if x not in ("disjoint", "standard"):
            p.error(f"--protocols: unknown protocol {x!r}; expected disjoint or standard")
    run_comparison(args.out, args.set, tuple(m for m in args.models.split(",") if m), protocols,
                   verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
