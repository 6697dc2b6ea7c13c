"""The example app: a Mamba classifier learns noisy waveform shapes (the whole engine path, small).

    ssmkit example demo
    ssmkit example train --set train.epochs=3
    ssmkit example evaluate --run runs/example/<id>
    ssmkit example infer signals.npy --run runs/example/<id> --out predictions.csv
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ssmkit.engine.app import App, DataError, EvalContext
from ssmkit.engine.config import AppConfig, bounded
from ssmkit.engine.files import atomic_path, check_output
from ssmkit.engine.inputs import NanPolicy, finite_values, require_finite
from ssmkit.registry import register_app
from ssmkit_apps.example.data import CLASSES, load_npz_split, waveforms
from ssmkit_apps.example.losses import classification_loss
from ssmkit_apps.example.metrics import ConfusionMeter
from ssmkit_apps.example.model import MambaClassifier


@dataclass
class ExampleData:
    root: str = ""  # "" = the embedded generator; else a folder with train/val/test.npz
    n_train: int = bounded(2048, ge=1)
    n_val: int = bounded(512, ge=1)
    n_test: int = bounded(1024, ge=1)
    length: int = bounded(64, ge=8)
    noise: float = bounded(0.4, ge=0)
    nan_policy: NanPolicy = "reject"  # infer: non-finite input values are an error, or interpolated


@dataclass
class ExampleModel:
    d_model: int = bounded(32, ge=1)
    n_layers: int = bounded(2, ge=1)
    d_state: int = bounded(16, ge=1)
    d_conv: int = bounded(4, ge=1)
    expand: int = bounded(2, ge=1)
    backend: Literal["auto", "reference", "chunked", "triton"] = "auto"


@dataclass
class ExampleConfig(AppConfig):
    data: ExampleData = field(default_factory=ExampleData)
    model: ExampleModel = field(default_factory=ExampleModel)
    label_smoothing: float = bounded(0.0, ge=0, lt=1)


@register_app("example")
class ExampleApp(App):
    """Noisy waveform classification (sine/square/sawtooth/triangle) with a Mamba classifier."""

    config_class = ExampleConfig
    primary_metric = "accuracy"
    chance = 1.0 / len(CLASSES)
    demo_overrides = ["train.epochs=4", "data.n_train=1536", "data.n_test=512"]

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return MambaClassifier(1, len(CLASSES), m.d_model, m.n_layers, m.d_state, m.d_conv, m.expand, m.backend)

    def build_dataset(self, split: str):
        d = self.cfg.data
        if d.root:
            return load_npz_split(d.root, split, len(CLASSES))
        n = {"train": d.n_train, "val": d.n_val, "test": d.n_test}.get(split)
        if n is None:
            raise DataError(f"app 'example' has splits train, val, test; got {split!r}")
        return waveforms(split, n, d.length, d.noise, self.cfg.seed)

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        x, y = batch
        logits = model(x)
        acc = (logits.argmax(-1) == y).float().mean()
        return classification_loss(logits, y, self.cfg.label_smoothing), {"accuracy": acc}

    def evaluate(self, model: nn.Module, loader, ctx: EvalContext) -> dict[str, float]:
        meter = ConfusionMeter(len(CLASSES))
        for x, y in loader:
            x, y = ctx.to_device((x, y))
            with ctx.autocast():
                logits = model(x)
            meter.update(logits.float(), y, classification_loss(logits, y))
        self._last_cm = meter.cm
        return meter.compute()

    def report(self, metrics: dict[str, float], ctx: EvalContext) -> str:
        cm = getattr(self, "_last_cm", None)
        if cm is None:
            return ""
        head = "| true \\ predicted | " + " | ".join(CLASSES) + " |"
        rows = [head, "|---" * (len(CLASSES) + 1) + "|"]
        rows += [f"| {c} | " + " | ".join(str(int(v)) for v in cm[i]) + " |" for i, c in enumerate(CLASSES)]
        if ctx.plots_dir is not None:
            from ssmkit.engine.report import pyplot, save_figure

            plt = pyplot()
            fig, ax = plt.subplots(figsize=(4, 3.5), dpi=100)
            ax.imshow(cm.numpy(), cmap="Blues")
            ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=30)
            ax.set_yticks(range(len(CLASSES)), CLASSES)
            for i in range(len(CLASSES)):
                for j in range(len(CLASSES)):
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            save_figure(fig, ctx.plots_dir / "confusion.png")
        return "Confusion matrix on the validation split:\n\n" + "\n".join(rows)

    @classmethod
    def add_arguments(cls, command: str, parser: argparse.ArgumentParser) -> None:
        if command == "infer":
            parser.add_argument("input", metavar="FILE",
                                help="signals: .npy [N, L] or [L], or .csv (one signal per row)")
            parser.add_argument("--out", metavar="CSV", help="write predictions here (default: print them)")

    def infer(self, model: nn.Module, args: argparse.Namespace, ctx: EvalContext) -> int:
        out = check_output(args.out, inputs=[args.input], overwrite=args.overwrite) if args.out else None
        x = read_signals(args.input, self.cfg.data.nan_policy)
        probs = []
        with torch.no_grad():
            for chunk in torch.split(x, 256):
                with ctx.autocast():
                    probs.append(torch.softmax(model(ctx.to_device(chunk[..., None])).float(), -1).cpu())
        p = torch.cat(probs)
        require_finite(p, "class probabilities", args.input, "the weights may be damaged")
        rows = [[i, CLASSES[int(k)], *[f"{v:.4f}" for v in p[i].tolist()]] for i, k in enumerate(p.argmax(-1))]
        header = ["index", "class", *[f"p_{c}" for c in CLASSES]]
        if out is not None:
            with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(header)
                w.writerows(rows)
            print(f"wrote {len(rows)} predictions to {out}")
        else:
            print(",".join(header))
            for r in rows:
                print(",".join(str(v) for v in r))
        return 0


def read_signals(path: str | Path, nan_policy: str = "reject") -> torch.Tensor:
    """Signals [N, L] float32 from .npy (no pickle) or .csv; a single [L] signal becomes [1, L].

    Non-finite values (NaN, inf, or numbers beyond float32) are rejected, or interpolated along
    the signal with a warning under ``nan_policy="interpolate"``.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file {str(p)!r} does not exist; expected .npy [N, L] or .csv with one signal per row")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix == ".csv":
            arr = np.loadtxt(p, delimiter=",", ndmin=2)
        else:
            raise DataError(f"input {str(p)!r}: expected a .npy or .csv file, got {p.suffix!r}")
    except (ValueError, EOFError, OSError) as err:
        raise DataError(f"input {str(p)!r} could not be read as numbers ({err})") from None
    arr = np.atleast_2d(arr)
    if arr.ndim != 2 or arr.shape[1] < 8 or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"input {str(p)!r}: expected numeric signals [N, L] with L >= 8; got shape {arr.shape}")
    # The signals are rows, so interpolation runs along each row: transpose to [L, N] and back.
    vals = finite_values(arr.T, str(p), nan_policy, row_name="sample", columns=[f"signal {i}" for i in range(len(arr))])
    return torch.from_numpy(np.ascontiguousarray(vals.T))
