"""``fit``: the engine's training loop for a model of your own, without writing an App.

    from ssmkit.engine.fit import fit
    from ssmkit.engine.config import TrainConfig

    run_dir, val = fit(model, loss_fn, train_ds, val_ds, TrainConfig(epochs=3, lr=1e-3),
                       run_root="runs", metrics_fn=accuracy)

Everything an app run gets comes with it: seeding, device and bf16 autocast, DDP under torchrun,
gradient clipping and accumulation, the LR schedule, weight averaging, early stopping, atomic
checksummed checkpoints with exact ``resume``, metrics.jsonl/CSV (TensorBoard when installed),
report.md and plots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ssmkit.engine.app import App, EvalContext
from ssmkit.engine.commands import new_run_dir
from ssmkit.engine.config import AppConfig, TrainConfig
from ssmkit.engine.runtime import dist_from_env, init_distributed, resolve_device, shutdown_distributed
from ssmkit.engine.trainer import Trainer

LossFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, dict[str, Any]]"]
MetricsFn = Callable[[nn.Module, Any], dict[str, float]]


@dataclass
class FitConfig(AppConfig):
    """What ``fit`` runs with: the engine's ``seed``, ``train`` and ``run`` sections only."""


class _FunctionApp(App):
    """An App assembled from a model, a loss function and datasets (what ``fit`` trains)."""

    name = "fit"
    config_class = FitConfig
    default_config = ""
    primary_metric = "loss"
    higher_is_better = False

    def __init__(self, cfg: FitConfig, model_fn: Callable[[], nn.Module], loss_fn: LossFn,
                 datasets: dict[str, Dataset], metrics_fn: MetricsFn | None, collate):
        super().__init__(cfg)
        self._model_fn, self._loss_fn, self._datasets, self._metrics_fn = model_fn, loss_fn, datasets, metrics_fn
        self.collate = collate

    def build_model(self) -> nn.Module:
        return self._model_fn()

    def build_dataset(self, split: str) -> Dataset:
        return self._datasets[split]

    def loss(self, model: nn.Module, batch: Any):
        out = self._loss_fn(model, batch)
        return out if isinstance(out, tuple) else (out, {})

    def evaluate(self, model: nn.Module, loader, ctx: EvalContext) -> dict[str, float]:
        total, n = 0.0, 0
        sums: dict[str, float] = {}
        for batch in loader:
            batch = ctx.to_device(batch)
            with ctx.autocast():
                loss, _ = self.loss(model, batch)
                extra = self._metrics_fn(model, batch) if self._metrics_fn is not None else {}
            total, n = total + float(loss), n + 1
            for k, v in extra.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return {"loss": total / max(n, 1), **{k: v / max(n, 1) for k, v in sums.items()}}


def fit(model: nn.Module | Callable[[], nn.Module], loss_fn: LossFn, train_ds: Dataset, val_ds: Dataset,
        train: TrainConfig | None = None, *, seed: int = 0, run_root: str | Path = "runs", run_id: str = "",
        metrics_fn: MetricsFn | None = None, primary_metric: str = "loss", higher_is_better: bool = False,
        collate: Callable | None = None, resume: str | Path | None = None,
        verbose: bool = True) -> tuple[Path, dict[str, float]]:
    """Train ``model`` on ``train_ds``, validating on ``val_ds``; returns (run dir, val metrics).

    Args:
        model: a module, or a function building one (which makes seeded initialisation and
            ``resume`` exact; with a module, its current weights are the start).
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, {metric: value})``.
        train: the loop settings (``TrainConfig``: epochs, batch_size, lr, accumulate, ema, ...).
        metrics_fn: ``metrics_fn(model, batch) -> {name: value}``, averaged over validation batches.
        primary_metric / higher_is_better: what picks ``checkpoints/best.safetensors`` and drives
            early stopping ("loss", lower is better, by default).
        resume: a run directory of an earlier ``fit`` to continue from its newest checkpoint.

    Runs land in ``<run_root>/fit/<run_id or timestamp>/``.

    Example::

        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> x = torch.randn(64, 3); y = x.sum(1, keepdim=True)
        >>> ds = TensorDataset(x, y)
        >>> def mse(model, batch):
        ...     return torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        >>> import tempfile
        >>> run, val = fit(lambda: torch.nn.Linear(3, 1), mse, ds, ds,
        ...                TrainConfig(epochs=20, batch_size=16, lr=0.05, device="cpu"),
        ...                run_root=tempfile.mkdtemp(), verbose=False)
        >>> val["loss"] < 0.05
        True
    """
    cfg = FitConfig(seed=seed, train=train or TrainConfig())
    cfg.run.root, cfg.run.id = str(run_root), run_id
    model_fn = model if not isinstance(model, nn.Module) else (lambda: model)
    app = _FunctionApp(cfg, model_fn, loss_fn, {"train": train_ds, "val": val_ds}, metrics_fn, collate)
    app.primary_metric, app.higher_is_better = primary_metric, higher_is_better
    dist = dist_from_env()
    init_distributed(dist, resolve_device(cfg.train.device, dist.local_rank))
    try:
        run_dir = Path(resume) if resume is not None else new_run_dir(cfg, app.name, dist)
        metrics = Trainer(app, run_dir, dist, verbose=verbose).fit(resume=resume is not None)
    finally:
        shutdown_distributed()
    return run_dir, metrics


__all__ = ["FitConfig", "fit"]
