"""PromptHash and the DCMH-style baseline trained and evaluated side by side through the engine
commands, on the embedded scenes (or any data section given with ``--set data....``).

    ssmkit hashing compare [--out runs/hashing-compare] [--run-root DIR] [--set train.epochs=6]
                           [--protocols disjoint,standard]
    python -m ssmkit_apps.hashing.compare ...      # the same

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
from ssmkit.errors import DataError
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
                   run_root: str | Path | None = None, verbose: bool = True, config: str | Path | None = None) -> dict:
    """Train each of ``models`` (runs under ``run_root``, default ``out``), evaluate the test split
    under each protocol, write ``out``/report.md, results.json and pr_<protocol>.png."""
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
        run_dir, _ = commands.train(HashingApp, config, ov, verbose=verbose, overwrite=True)
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
             f"Overrides: `{' '.join(overrides) or '(none)'}`"
             + (f" over `{config}`" if config else "") + "; runs: "
             + ", ".join(f"{k} `{v}`" for k, v in results["runs"].items()) + ".", ""]
    for proto in protocols:
        res = results["test"][proto]
        first = next(iter(res.values()))
        lines += [f"## Test split, {proto} protocol ({int(first['n_queries'])} queries, "
                  f"{int(first['n_database'])} database items)", "",
                  "mAP@all (ties by database order):", "", *_table(res, bits, "map"), "",
                  "Tie-aware mAP@all:", "", *_table(res, bits, "map_tie"), "",
                  "P@10 (tie-aware):", "", *_table(res, bits, "p@10_tie"), "",
                  f"Random codes: mAP@all {first['map_random']:.4f}.", ""]
        ph = next((m for m in res if m.startswith("prompthash")), None)
        if ph is not None and "dcmh" in res:
            cells = [(d, b) for d in ("i2t", "t2i") for b in bits]
            lost = [f"{d} {b} bits" for d, b in cells if res[ph][f"{d}_map_{b}"] <= res["dcmh"][f"{d}_map_{b}"]]
            lines += [f"{ph} above dcmh in mAP@all at every code length in both directions: "
                      + ("yes." if not lost else f"no (not above at {', '.join(lost)})."), ""]
        png = plot_pr_curves(curves[proto], root / f"pr_{proto}.png", title=f"test split, {proto} protocol")
        lines += [f"![precision-recall]({png.name})", ""]
    lines += ["Training and evaluation time per model (s): "
              + ", ".join(f"{k} {v}" for k, v in results["seconds"].items()), ""]
    atomic_write_text(root / "report.md", "\n".join(lines))
    atomic_write_text(root / "results.json", json.dumps(results, indent=1) + "\n")
    if verbose:
        print("\n".join(lines))
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``ssmkit hashing compare`` (``--set``, ``--config`` and ``--quiet`` come from the CLI)."""
    p.add_argument("--out", default="runs/hashing-compare", help="report folder (default runs/hashing-compare)")
    p.add_argument("--run-root", dest="run_root", metavar="DIR",
                   help="where the two training runs go (default: the --out folder)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated (default prompthash,dcmh)")
    p.add_argument("--protocols", default="disjoint", help="comma-separated: disjoint, standard")


def from_args(args: argparse.Namespace) -> int:
    protocols = tuple(x.strip() for x in args.protocols.split(",") if x.strip())
    for x in protocols:
        if x not in ("disjoint", "standard"):
            raise DataError(f"--protocols: unknown protocol {x!r}; expected disjoint or standard")
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if not models or not protocols:
        raise DataError("--models and --protocols each need at least one name")
    run_comparison(args.out, list(args.set or []), models, protocols, run_root=args.run_root,
                   verbose=not args.quiet, config=getattr(args, "config", None))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssmkit_apps.hashing.compare", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--config", metavar="FILE", help="a YAML file merged over configs/default.yaml")
    p.add_argument("--quiet", action="store_true")
    return from_args(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
