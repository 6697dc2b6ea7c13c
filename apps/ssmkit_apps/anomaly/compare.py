"""Side-by-side evaluation: MAAT, Anomaly Transformer and IsolationForest trained and scored
through the same engine commands on the embedded data, plus InternalBleeding16 (UCR protocol).

    python -m ssmkit_apps.anomaly.compare [--out runs/anomaly-compare] [--set train.epochs=2]

Writes ``<out>/report.md`` (the metrics table, the UCR result, one PNG per evaluated series)
and ``<out>/results.json``. ``ssmkit anomaly demo`` runs the same comparison with the demo
settings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from ssmkit.engine import commands
from ssmkit.engine.files import atomic_write_text
from ssmkit_apps.anomaly.app import AnomalyApp
from ssmkit_apps.anomaly.report import fmt, metrics_table

MODELS = ("maat", "anomaly_transformer", "isolation_forest")
# `ssmkit anomaly demo` trains 5 epochs (under 5 minutes on a CPU); the official comparison
# trains configs/default.yaml's 15 (the longer training was chosen on the dev seeds).
DEMO_OVERRIDES: list[str] = ["train.epochs=5"]
UCR_OVERRIDES = ["train.epochs=4", "score.hop=8"]


def _config(name: str) -> Path | None:
    p = AnomalyApp.package_dir() / "configs" / f"{name}.yaml"
    return p if p.is_file() else None


def _train_eval(run_root: Path, run_id: str, config: Path | None, overrides: list[str], verbose: bool) -> tuple[Path, dict, float]:
    t0 = time.monotonic()
    ov = [f"run.root={run_root}", f"run.id={run_id}", *overrides]
    run_dir, _ = commands.train(AnomalyApp, config, ov, verbose=verbose)
    test = commands.evaluate(AnomalyApp, run=run_dir, split="test", verbose=False)
    return run_dir, test, time.monotonic() - t0


def run_comparison(out: str | Path = "runs/anomaly-compare", overrides: list[str] | None = None,
                   models: tuple[str, ...] = MODELS, ucr: bool = True, verbose: bool = True,
                   run_root: str | Path | None = None, demo: bool = False) -> dict:
    """Train and evaluate ``models`` on the embedded data (and MAAT/IsolationForest on
    InternalBleeding16); return {"synthetic": {model: metrics}, "internal_bleeding16": {...}}.

    The report goes to ``out``; each run to ``<run_root>/anomaly/<id>/`` (``run_root`` defaults
    to ``out``). ``demo`` shortens the embedded-data trainings (DEMO_OVERRIDES); the
    InternalBleeding16 runs keep their own settings either way."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    run_root = Path(run_root) if run_root is not None else root
    overrides = list(overrides or [])
    results: dict[str, dict] = {"synthetic": {}, "internal_bleeding16": {}, "seconds": {}, "plots": []}
    synthetic_overrides = [*(DEMO_OVERRIDES if demo else []), *overrides]
    for name in models:
        run_dir, test, sec = _train_eval(run_root, f"synthetic-{name}", _config(name), synthetic_overrides, verbose)
        results["synthetic"][name] = test
        results["seconds"][f"synthetic-{name}"] = round(sec, 1)
        results["plots"] += [os.path.relpath(p, root) for p in sorted((run_dir / "plots").glob("*_test.png"))]
    if ucr:
        ib = _config("internal_bleeding16")
        for name in ("maat", "isolation_forest"):
            if name not in models:
                continue
            extra = ["data.source=internal_bleeding16", *UCR_OVERRIDES]
            if name == "isolation_forest":
                # The forest config sets its own window/hop and a single fitting step.
                extra = ["data.source=internal_bleeding16", "data.train_stride=1"]
            cfg = _config(name) if name == "isolation_forest" else ib
            run_dir, test, sec = _train_eval(run_root, f"ib16-{name}", cfg, [*extra, *overrides], verbose)
            results["internal_bleeding16"][name] = test
            results["seconds"][f"ib16-{name}"] = round(sec, 1)
            results["plots"] += [os.path.relpath(p, root) for p in sorted((run_dir / "plots").glob("*_test.png"))]
    atomic_write_text(root / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(root / "report.md", render(results))
    return results


def render(results: dict) -> str:
    lines = ["# Anomaly detection: side-by-side evaluation", "",
             "Thresholds are fitted on validation scores only (99th percentile); checkpoints are chosen by",
             "validation loss (reconstruction, plus forecast for MAAT's forecasting head). PA = point-adjusted",
             "(the papers' number); the unadjusted",
             "P/R/F1, AUC-PR, VUS-PR and affiliation are the honest ones.", "",
             "## Embedded generator (test split)", "", metrics_table(results["synthetic"]), ""]
    if results["internal_bleeding16"]:
        lines += ["## UCR InternalBleeding16", "", "| model | UCR hit (top score within +-100) | argmax | AUC-ROC | AUC-PR | VUS-PR |",
                  "|---|---|---|---|---|---|"]
        for name, m in results["internal_bleeding16"].items():
            hit = "yes" if m.get("ucr_hit") == 1.0 else "no"
            lines.append(f"| {name} | {hit} | {int(m.get('ucr_argmax', -1))} (anomaly 4187-4198) | {fmt(m.get('auc_roc'))} | "
                         f"{fmt(m.get('auc_pr'))} | {fmt(m.get('vus_pr'))} |")
        lines.append("")
    lines += ["## Wall time", "", *[f"- {k}: {v} s" for k, v in results["seconds"].items()], "", "## Plots", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in results["plots"]]
    return "\n".join(lines) + "\n"


def publish_plots(results: dict, root: Path, dest: Path) -> list[Path]:
    """Copy the per-series PNGs into ``dest`` (docs/results/anomaly)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for rel in results["plots"]:
        src = root / rel
        target = dest / f"{src.parent.parent.name}_{src.name}"
        shutil.copyfile(src, target)
        out.append(target)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssmkit_apps.anomaly.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/anomaly-compare")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--no-ucr", action="store_true", help="skip InternalBleeding16")
    p.add_argument("--demo", action="store_true", help="the quick demo settings")
    p.add_argument("--publish", metavar="DIR", help="copy the PNGs here (e.g. docs/results/anomaly)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    res = run_comparison(a.out, a.set, tuple(m for m in a.models.split(",") if m), not a.no_ucr, not a.quiet,
                         demo=a.demo)
    print(render(res).split("## Wall time")[0])
    if a.publish:
        for f in publish_plots(res, Path(a.out), Path(a.publish)):
            print(f"plot: {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
