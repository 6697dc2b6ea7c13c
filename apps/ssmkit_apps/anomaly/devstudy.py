"""Development study: choose the scoring and training settings on development series only.

The embedded generator is seeded (``data.data_seed``). The official comparison uses seed 0;
this study trains the same models on other seeds (default 101, 102, 103), each with its own
labelled test part, and compares score definitions by the mean over those seeds. Seed 0's
test labels are never read here, so no threshold, checkpoint or design choice sees them.

    python -m ssmkit_apps.anomaly.devstudy [--quick] [--seeds 101,102,103] [--out runs/anomaly-dev]

Each training run goes through the same engine command as ``ssmkit anomaly train``; the
trained network's raw outputs (reconstruction and association discrepancy per window) are
then rescored offline with every candidate of :data:`VARIANTS` through
:func:`ssmkit_apps.anomaly.model.combine_scores`, the function that ``MAAT.score`` calls, so
a dev number and a pipeline number for the same settings are the same computation.
Thresholds follow the app's protocol: the 99th percentile of the dev seed's validation scores.
``--quick`` trains tiny models for a smoke test of the whole study (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ssmkit.engine import commands
from ssmkit.engine.files import atomic_write_text
from ssmkit_apps.anomaly import metrics as M
from ssmkit_apps.anomaly.app import AnomalyApp
from ssmkit_apps.anomaly.model import combine_scores
from ssmkit_apps.anomaly.scoring import window_plan

DEV_SEEDS = (101, 102, 103)
MODELS = ("maat", "anomaly_transformer")

# Training settings compared on the dev seeds: (overrides, models they apply to). Each pins what
# it varies, so the study reproduces whatever configs/default.yaml says now.
TRAININGS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "e5": (["train.epochs=5", "model.forecast=false", "score.forecast_weight=0"], MODELS),
    "e15": (["train.epochs=15", "model.forecast=false", "score.forecast_weight=0"], MODELS),
    # MAAT's Mamba path with a causal input and a one-step forecasting head (model.forecast).
    "e5f": (["train.epochs=5", "model.forecast=true"], ("maat",)),
    "e15f": (["train.epochs=15", "model.forecast=true"], ("maat",)),
}
QUICK = [
    "data.n_train=600",
    "data.n_val=200",
    "data.n_test=600",
    "data.channels=4",
    "model.d_model=16",
    "model.d_ff=16",
    "model.d_state=4",
    "train.max_steps=6",
    "train.log_every=3",
]

# Score definitions compared on the dev seeds: keyword arguments of combine_scores.
VARIANTS: dict[str, dict] = {
    "assoc*mse (old default)": dict(assoc=True, channels="mean", normalize=False, smooth=1),
    "mse": dict(assoc=False, channels="mean", normalize=False, smooth=1),
    "assoc*norm-mean": dict(assoc=True, channels="mean", normalize=True, smooth=1),
    "norm-mean": dict(assoc=False, channels="mean", normalize=True, smooth=1),
    "assoc*norm-max": dict(assoc=True, channels="max", normalize=True, smooth=1),
    "norm-max": dict(assoc=False, channels="max", normalize=True, smooth=1),
    "assoc*norm-top4": dict(assoc=True, channels="top4", normalize=True, smooth=1),
    "norm-top4": dict(assoc=False, channels="top4", normalize=True, smooth=1),
    "assoc*mse smooth9": dict(assoc=True, channels="mean", normalize=False, smooth=9),
    "assoc*norm-max smooth9": dict(assoc=True, channels="max", normalize=True, smooth=9),
    "norm-max smooth9": dict(assoc=False, channels="max", normalize=True, smooth=9),
    "assoc*norm-top4 smooth9": dict(assoc=True, channels="top4", normalize=True, smooth=9),
    "norm-top4 smooth9": dict(assoc=False, channels="top4", normalize=True, smooth=9),
    "assoc*norm-top4 smooth25": dict(assoc=True, channels="top4", normalize=True, smooth=25),
    "norm-top4 smooth25": dict(assoc=False, channels="top4", normalize=True, smooth=25),
    "assoc*norm-max smooth25": dict(assoc=True, channels="max", normalize=True, smooth=25),
    "norm-max smooth5": dict(assoc=False, channels="max", normalize=True, smooth=5),
    "norm-top4 smooth5": dict(assoc=False, channels="top4", normalize=True, smooth=5),
}
# Only for runs with a forecasting head: each score above with the forecast error added beside
# the reconstruction error (weight 1), and the forecast error almost alone.
VARIANTS.update({f"+fc {k}": {**v, "forecast_weight": 1.0} for k, v in list(VARIANTS.items())})
VARIANTS["fc only norm-max smooth9"] = dict(assoc=False, channels="max", normalize=True, smooth=9, forecast_weight=1e3)


def train_run(root: Path, seed: int, model: str, training: str, extra: list[str], verbose: bool) -> Path:
    """Train ``model`` on dev seed ``seed`` (reusing a finished run of the same id)."""
    run_id = f"s{seed}-{model}-{training}"
    run_dir = root / AnomalyApp.name / run_id
    if (run_dir / "model.safetensors").is_file():
        return run_dir
    cfg = AnomalyApp.package_dir() / "configs" / f"{model}.yaml"
    ov = [
        f"run.root={root}",
        f"run.id={run_id}",
        f"data.data_seed={seed}",
        "score.plots=false",
        *TRAININGS[training][0],
        *extra,
    ]
    run_dir, _ = commands.train(AnomalyApp, cfg if cfg.is_file() else None, ov, verbose=verbose)
    return run_dir


@torch.no_grad()
def raw_outputs(run_dir: Path, split: str) -> dict[str, np.ndarray]:
    """Per-window raw outputs of a trained run on one split, following the app's window plan:
    x and recon [N, L, C], discrepancy [N, L] (zeros without associations), the plan [N, 3],
    and the split's labels [T] (all zeros for train/val). Cached in the run as raw_<split>.npz."""
    cache = run_dir / f"raw_{split}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
        if "forecast" not in raw:  # cached before forecasting heads existed: the model has none
            raw["forecast"], raw["has_forecast"] = np.zeros_like(raw["recon"]), np.bool_(False)
        return raw
    app, model, ctx = commands.load_app_model(AnomalyApp, run_dir, None, None, None)
    ds = app.build_dataset(split)
    x = torch.from_numpy(ds.normalized)
    plan = window_plan(len(x), model.window, app.hop, app.cfg.score.lag)
    wins = torch.stack([x[s : s + model.window] for s, _, _ in plan])
    recs, diss, fcs = [], [], []
    for i in range(0, len(wins), 64):
        out = model(wins[i : i + 64])
        recs.append(out["recon"].float())
        fcs.append(out["forecast"].float() if "forecast" in out else torch.zeros_like(out["recon"]))
        diss.append(
            model.discrepancy(out["series"], out["prior"]) if out["series"] else torch.zeros(out["recon"].shape[:2])
        )
    labels = ds.labels if ds.labels is not None else np.zeros(len(x), dtype=np.int8)
    raw = {
        "x": wins.numpy(),
        "recon": torch.cat(recs).numpy(),
        "dis": torch.cat(diss).numpy(),
        "plan": np.array(plan, dtype=np.int64),
        "labels": labels,
        "temperature": np.float32(model.temperature),
        "forecast": torch.cat(fcs).numpy(),
        "has_forecast": np.bool_(getattr(model, "forecast_head", None) is not None),
    }
    np.savez(cache, **raw)
    return raw


def assemble(window_scores: np.ndarray, plan: np.ndarray, T: int) -> np.ndarray:
    """Window scores [N, L] -> per-step scores [T] by the plan (as scoring.score_series)."""
    out = np.empty(T, dtype=np.float32)
    for (s, a, b), row in zip(plan, window_scores):
        out[s + a : s + b] = row[a:b]
    return out


def channel_scale(val: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean squared reconstruction and forecast errors over the emitted validation
    steps [C] each (what the app stores as the model's ``err_scale`` and ``fc_scale``)."""
    err = (val["recon"] - val["x"]) ** 2
    rec = np.concatenate([e[a:b] for (s, a, b), e in zip(val["plan"], err)])
    fe = (val["forecast"][:, :-1] - val["x"][:, 1:]) ** 2  # fe[:, t - 1] is step t's error
    fc = np.concatenate([e[max(a, 1) - 1 : b - 1] for (s, a, b), e in zip(val["plan"], fe)])
    return np.maximum(rec.mean(0), 1e-8), np.maximum(fc.mean(0), 1e-8)


def variant_scores(raw: dict[str, np.ndarray], scales: tuple[np.ndarray, np.ndarray], kw: dict) -> np.ndarray:
    s = combine_scores(
        torch.from_numpy(raw["x"]),
        torch.from_numpy(raw["recon"]),
        torch.from_numpy(raw["dis"]),
        torch.from_numpy(scales[0]),
        temperature=float(raw["temperature"]),
        forecast=torch.from_numpy(raw["forecast"]),
        fc_scale=torch.from_numpy(scales[1]),
        **kw,
    )
    return assemble(s.numpy(), raw["plan"], len(raw["labels"]))


def evaluate_variant(val: dict, test: dict, kw: dict, percentile: float = 99.0) -> dict[str, float]:
    scale = channel_scale(val)
    v = variant_scores(val, scale, kw)
    t = variant_scores(test, scale, kw)
    thr = M.fit_threshold(v, percentile=percentile)
    p, r, f = M.precision_recall_f1((t > thr).astype(np.int8), test["labels"])
    return {
        "f1": f,
        "precision": p,
        "recall": r,
        "auc_pr": M.auc_pr(t, test["labels"]),
        "auc_roc": M.auc_roc(t, test["labels"]),
    }


def forest_run(root: Path, seed: int, extra: list[str], verbose: bool) -> dict[str, float]:
    """IsolationForest on a dev seed through the app (its own window and hop)."""
    run_id = f"s{seed}-isolation_forest"
    run_dir = root / AnomalyApp.name / run_id
    if not (run_dir / "eval_test.json").is_file():
        cfg = AnomalyApp.package_dir() / "configs" / "isolation_forest.yaml"
        ov = [f"run.root={root}", f"run.id={run_id}", f"data.data_seed={seed}", "score.plots=false", *extra]
        run_dir, _ = commands.train(AnomalyApp, cfg, ov, verbose=verbose)
        commands.evaluate(AnomalyApp, run=run_dir, split="test", verbose=False)
    return json.loads((run_dir / "eval_test.json").read_text())


def study(
    out: Path, seeds: tuple[int, ...], trainings: tuple[str, ...], quick: bool, verbose: bool, name: str = "devstudy"
) -> dict:
    extra = QUICK if quick else []
    rows: dict[str, dict[str, list[dict]]] = {}
    seconds: dict[str, float] = {}
    for training in trainings:
        for seed in seeds:
            for model in TRAININGS[training][1]:
                t0 = time.monotonic()
                cached = (out / AnomalyApp.name / f"s{seed}-{model}-{training}" / "model.safetensors").is_file()
                run_dir = train_run(out, seed, model, training, extra, verbose)
                if not cached:  # wall time of the training runs this invocation did
                    seconds[run_dir.name] = round(time.monotonic() - t0, 1)
                val, test = raw_outputs(run_dir, "val"), raw_outputs(run_dir, "test")
                for variant, kw in VARIANTS.items():
                    if kw.get("forecast_weight", 0.0) > 0 and not bool(val["has_forecast"]):
                        continue
                    rows.setdefault(f"{model} {training}", {}).setdefault(variant, []).append(
                        {"seed": seed, **evaluate_variant(val, test, kw)}
                    )
    for seed in seeds:
        f = forest_run(out, seed, extra, verbose)
        rows.setdefault("isolation_forest", {}).setdefault("window 16, hop 1", []).append(
            {"seed": seed, **{k: f[k] for k in ("f1", "precision", "recall", "auc_pr", "auc_roc")}}
        )
    result = {"seeds": list(seeds), "trainings": list(trainings), "quick": quick, "rows": rows, "seconds": seconds}
    try:
        result["choice"] = select(result)
    except ValueError as err:  # a partial study (one training only) has nothing to choose between models
        result["choice"] = {"error": str(err)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / f"{name}.md", render(result))
    return result


def _mean(items: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in items]))


def criterion(items: list[dict]) -> float:
    """What the study maximises: the mean over dev seeds of (unadjusted F1 + AUC-PR) / 2."""
    return float(np.mean([(r["f1"] + r["auc_pr"]) / 2 for r in items]))


def select(result: dict) -> dict:
    """The frozen choice, by a rule fixed before the study ran:

    1. shared settings (score definition and training length, the same for MAAT and the
       Anomaly Transformer): the (training, score) pair with the best criterion averaged over
       both models;
    2. MAAT-only settings (the forecasting head of its Mamba path and its score weight): with
       the shared choice fixed, the best MAAT criterion among no head, the head trained but
       not scored, and the head scored (``+fc <score>``).
    """
    rows = result["rows"]
    shared: dict[tuple[str, str], float] = {}
    for training in result["trainings"]:
        if not all(f"{m} {training}" in rows for m in MODELS):
            continue
        for variant, kw in VARIANTS.items():
            if kw.get("forecast_weight", 0.0) > 0:
                continue
            shared[(training, variant)] = float(np.mean([criterion(rows[f"{m} {training}"][variant]) for m in MODELS]))
    if not shared:
        raise ValueError("no training ran for every model; run the study with a shared training (e5, e15)")
    training, variant = max(shared, key=shared.get)
    maat: dict[tuple[str, str], float] = {(training, variant): criterion(rows[f"maat {training}"][variant])}
    head = f"maat {training}f"
    if head in rows:
        for v in (variant, f"+fc {variant}"):
            if v in rows[head]:
                maat[(training + "f", v)] = criterion(rows[head][v])
    best = max(maat, key=maat.get)
    return {
        "shared": {"training": training, "score": variant, "criterion": shared[(training, variant)]},
        "maat": {"training": best[0], "score": best[1], "criterion": maat[best]},
        "maat_candidates": {f"{t} | {v}": c for (t, v), c in maat.items()},
        "shared_top5": {f"{t} | {v}": c for (t, v), c in sorted(shared.items(), key=lambda kv: -kv[1])[:5]},
    }


def render(result: dict) -> str:
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines = [
        f"Dev seeds {seeds} (mean over seeds; threshold = 99th percentile of each seed's validation scores)",
        "",
        "| run | score | F1 | P | R | AUC-PR | AUC-ROC | F1 per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run, variants in result["rows"].items():
        for name, items in variants.items():
            per = " / ".join(f"{r['f1']:.3f}" for r in items)
            lines.append(
                f"| {run} | {name} | {_mean(items, 'f1'):.3f} | {_mean(items, 'precision'):.3f} | "
                f"{_mean(items, 'recall'):.3f} | {_mean(items, 'auc_pr'):.3f} | {_mean(items, 'auc_roc'):.3f} | {per} |"
            )
    choice = result.get("choice", {})
    if "shared" in choice:
        lines += [
            "",
            "Criterion: mean over dev seeds of (F1 + AUC-PR) / 2.",
            f"Shared choice (both models): training {choice['shared']['training']}, score "
            f"'{choice['shared']['score']}' (criterion {choice['shared']['criterion']:.3f}; top five: "
            + "; ".join(f"{k} {v:.3f}" for k, v in choice["shared_top5"].items())
            + ").",
            f"MAAT choice: training {choice['maat']['training']}, score '{choice['maat']['score']}' "
            f"(criterion {choice['maat']['criterion']:.3f}; candidates: "
            + "; ".join(f"{k} {v:.3f}" for k, v in choice["maat_candidates"].items())
            + ").",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssmkit_apps.anomaly.devstudy", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/anomaly-dev")
    p.add_argument("--seeds", default=",".join(str(s) for s in DEV_SEEDS))
    p.add_argument("--trainings", default=",".join(TRAININGS))
    p.add_argument("--quick", action="store_true", help="tiny models and series: a smoke test of the study")
    p.add_argument("--name", default="devstudy", help="stem of the table files written under --out")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    seeds = tuple(int(s) for s in a.seeds.split(",") if s)
    if 0 in seeds:
        raise SystemExit("seed 0 is the official test series; the dev study must not use it")
    trainings = tuple(t for t in a.trainings.split(",") if t)
    unknown = set(trainings) - set(TRAININGS)
    if unknown:
        raise SystemExit(f"unknown trainings {sorted(unknown)}; expected some of {list(TRAININGS)}")
    res = study(Path(a.out), seeds, trainings, a.quick, not a.quiet, a.name)
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
