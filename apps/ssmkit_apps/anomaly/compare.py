"""Side-by-side evaluation: MAAT, the deep baselines and the simple detectors, trained and scored
through the same engine commands on three series:

- ``synthetic``: the embedded 16-channel generator (seed 0, the official series);
- ``internal_bleeding16``: UCR InternalBleeding16 from the aeon wheel (UCR protocol too);
- ``seasonal_trend``: a generated univariate seasonal series with a trend that leaves the
  training range, and single-point outliers.

    python -m ssmkit_apps.anomaly.compare [--out runs/anomaly-compare] [--series synthetic,seasonal_trend]
                                          [--models maat,rolling_median] [--set train.epochs=2]

Each model runs with its packaged ``configs/<model>.yaml`` (the deep models with
configs/default.yaml) plus the series' overrides below. Writes ``<out>/report.md`` (one table
per series, unadjusted numbers first, and which detector wins where), ``<out>/results.json`` and
one PNG per evaluated series. ``ssmkit anomaly demo`` runs a shorter comparison.
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
from ssmkit_apps.anomaly.app import DEEP_MODELS, SIMPLE_MODELS, AnomalyApp
from ssmkit_apps.anomaly.report import metrics_table

MODELS = ("maat", "anomaly_transformer", "mamba_recon", "isolation_forest", *SIMPLE_MODELS)
SERIES = ("synthetic", "internal_bleeding16", "seasonal_trend")
# Per series: overrides for every model, and extra ones for the deep models.
SERIES_OVERRIDES: dict[str, list[str]] = {
    "synthetic": [],
    "internal_bleeding16": ["data.source=internal_bleeding16", "data.train_stride=1"],
    "seasonal_trend": [
        "data.source=seasonal_trend",
        "data.n_train=2000",
        "data.n_val=500",
        "data.n_test=2000",
        "data.train_stride=1",
    ],
}
DEEP_OVERRIDES: dict[str, list[str]] = {
    "synthetic": [],
    # configs/internal_bleeding16.yaml's settings, with hop 8 for speed.
    "internal_bleeding16": ["model.window=64", "score.hop=8", "train.epochs=4"],
    "seasonal_trend": ["data.train_stride=2", "model.window=64", "score.hop=8", "score.lag=28", "train.epochs=8"],
}
# `ssmkit anomaly demo`: fewer models and epochs, to stay within 3 minutes on a 2-core CPU.
DEMO_MODELS = {"synthetic": ("maat", "rolling_median", "zscore"), "internal_bleeding16": ("maat", "rolling_median")}
DEMO_OVERRIDES: list[str] = ["train.epochs=4"]
NAMES = {
    "synthetic": "Embedded generator, seed 0 (test split)",
    "internal_bleeding16": "UCR InternalBleeding16",
    "seasonal_trend": "Seasonal series with trend and point outliers (seed 0)",
}


def config_for(name: str) -> Path | None:
    p = AnomalyApp.package_dir() / "configs" / f"{name}.yaml"
    return p if p.is_file() else None


def _train_eval(
    run_root: Path, run_id: str, config: Path | None, overrides: list[str], verbose: bool, reuse: bool = False
) -> tuple[Path, dict, float]:
    """Train and evaluate one run; ``reuse`` takes a finished run's ``eval_test.json`` instead
    (a comparison split over several processes, then gathered into one report)."""
    done = run_root / AnomalyApp.name / run_id
    if reuse and (done / "eval_test.json").is_file():
        return done, json.loads((done / "eval_test.json").read_text()), float("nan")
    t0 = time.monotonic()
    ov = [f"run.root={run_root}", f"run.id={run_id}", *overrides]
    run_dir, _ = commands.train(AnomalyApp, config, ov, verbose=verbose, overwrite=True)
    test = commands.evaluate(AnomalyApp, run=run_dir, split="test", verbose=False)
    return run_dir, test, time.monotonic() - t0


def run_comparison(
    out: str | Path = "runs/anomaly-compare",
    overrides: list[str] | None = None,
    models: tuple[str, ...] = MODELS,
    series: tuple[str, ...] = SERIES,
    verbose: bool = True,
    run_root: str | Path | None = None,
    demo: bool = False,
    reuse: bool = False,
    gather: bool = False,
) -> dict:
    """Train and evaluate ``models`` on ``series``; return {series: {model: test metrics}} plus
    "seconds" and "plots". The report goes to ``out``; each run to ``<run_root>/anomaly/<id>/``
    (``run_root`` defaults to ``out``). ``demo`` runs DEMO_MODELS with DEMO_OVERRIDES."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    run_root = Path(run_root) if run_root is not None else root
    overrides = list(overrides or [])
    results: dict[str, dict] = {"seconds": {}, "plots": []}
    plan = {s: DEMO_MODELS[s] for s in DEMO_MODELS} if demo else {s: models for s in series}
    for s, names in plan.items():
        results[s] = {}
        for name in names:
            deep = name in DEEP_MODELS
            ov = [
                *SERIES_OVERRIDES[s],
                *(DEEP_OVERRIDES[s] if deep else []),
                *(DEMO_OVERRIDES if demo and deep and s == "synthetic" else []),
                *overrides,
            ]
            if gather and not (run_root / AnomalyApp.name / f"{s}-{name}" / "eval_test.json").is_file():
                continue  # gathering only: a run that was not made is left out of the report
            run_dir, test, sec = _train_eval(run_root, f"{s}-{name}", config_for(name), ov, verbose, reuse or gather)
            results[s][name] = test
            if sec == sec:  # a reused run's time is in its own process's report
                results["seconds"][f"{s}-{name}"] = round(sec, 1)
            results["plots"] += [os.path.relpath(p, root) for p in sorted((run_dir / "plots").glob("*_test.png"))]
    atomic_write_text(root / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(root / "report.md", render(results))
    return results


def winners(rows: dict[str, dict]) -> list[str]:
    """Plain sentences: who is best on each leading metric, and MAAT against the best simple detector."""
    lines = []
    for key, label in (("f1", "F1"), ("auc_pr", "AUC-PR"), ("vus_pr", "VUS-PR")):
        have = {m: v[key] for m, v in rows.items() if v.get(key) == v.get(key) and key in v}
        if not have:
            continue
        best = max(have, key=have.get)
        lines.append(f"- best {label}: {best} ({have[best]:.3f})")
    simple = {m: v for m, v in rows.items() if m in SIMPLE_MODELS}
    for deep in (m for m in rows if m in DEEP_MODELS):
        for key, label in (("f1", "F1"), ("auc_pr", "AUC-PR"), ("vus_pr", "VUS-PR")):
            if not simple:
                break
            top = max(simple, key=lambda m: simple[m][key])
            d, t = rows[deep][key], simple[top][key]
            verdict = "at least" if d >= t else "**below**"
            lines.append(f"- {deep} {label} {d:.3f} is {verdict} the best simple detector's ({top}, {t:.3f})")
    return lines


def render(results: dict) -> str:
    lines = [
        "# Anomaly detection: side-by-side evaluation",
        "",
        "Thresholds are fitted on validation scores only (99th percentile); deep checkpoints are chosen by",
        "validation loss. F1, AUC-PR and VUS-PR are unadjusted and lead; PA-F1 (point-adjusted, the papers'",
        "number) stands beside them: random flags score high on it on long events. VUS follows TSB-AD 1.5",
        "(buffers 0..100). Out-of-range: share of test rows beyond the training range +-10 % of its span.",
        "",
    ]
    for s in SERIES:
        rows = results.get(s)
        if not rows:
            continue
        lines += [f"## {NAMES[s]}", "", metrics_table(rows), "", *winners(rows), ""]
        if s == "internal_bleeding16":
            lines += ["| model | UCR hit (top score within +-100) | argmax (file timestamp) |", "|---|---|---|"]
            for name, m in rows.items():
                hit = "yes" if m.get("ucr_hit") == 1.0 else "no"
                at = int(m["ucr_argmax"]) if "ucr_argmax" in m else "n/a"
                lines.append(f"| {name} | {hit} | {at} (anomaly 4187-4198) |")
            lines.append("")
    lines += ["## Wall time", "", *[f"- {k}: {v} s" for k, v in results["seconds"].items()], "", "## Plots", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in results["plots"]]
    return "\n".join(lines) + "\n"


PUBLISHED = ("maat", "anomaly_transformer", "mamba_recon", "rolling_median", "matrix_profile")


def publish_plots(results: dict, root: Path, dest: Path, models: tuple[str, ...] = PUBLISHED) -> list[Path]:
    """Copy the per-series PNGs of ``models`` into ``dest`` (docs/results/anomaly)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for rel in results["plots"]:
        src = root / rel
        if not any(src.parent.parent.name.endswith(f"-{m}") for m in models):
            continue
        target = dest / f"{src.parent.parent.name}.png"
        shutil.copyfile(src, target)
        out.append(target)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssmkit_apps.anomaly.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/anomaly-compare")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated (default: {','.join(MODELS)})")
    p.add_argument("--series", default=",".join(SERIES), help=f"comma-separated (default: {','.join(SERIES)})")
    p.add_argument("--demo", action="store_true", help="the quick demo settings (ssmkit anomaly demo)")
    p.add_argument("--publish", metavar="DIR", help="copy the PNGs here (e.g. docs/results/anomaly)")
    p.add_argument("--reuse", action="store_true", help="take finished runs' results (eval_test.json) as they are")
    p.add_argument("--gather", action="store_true", help="report finished runs only; train nothing")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    models = tuple(m for m in a.models.split(",") if m)
    series = tuple(s for s in a.series.split(",") if s)
    for s in series:
        if s not in SERIES:
            p.error(f"unknown series {s!r}; expected some of {','.join(SERIES)}")
    res = run_comparison(a.out, a.set, models, series, not a.quiet, demo=a.demo, reuse=a.reuse, gather=a.gather)
    print(render(res).split("## Wall time")[0])
    if a.publish:
        for f in publish_plots(res, Path(a.out), Path(a.publish)):
            print(f"plot: {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
