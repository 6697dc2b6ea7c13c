"""A tiny regression app for engine tests: fast, deterministic, uses dropout and RNG in the step."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ssmkit.engine.app import App, StepContext
from ssmkit.engine.config import AppConfig


@dataclass
class TinyData:
    n: int = 96
    dim: int = 5


@dataclass
class TinyConfig(AppConfig):
    data: TinyData = field(default_factory=TinyData)
    hidden: int = 16


class TinyApp(App):
    """Noisy linear regression with an MLP (dropout, so the global RNG matters)."""

    name = "tiny"
    config_class = TinyConfig
    primary_metric = "mse"
    higher_is_better = False
    default_config = ""

    def build_model(self) -> nn.Module:
        d = self.cfg.data.dim
        return nn.Sequential(nn.Linear(d, self.cfg.hidden), nn.Tanh(), nn.Dropout(0.1), nn.Linear(self.cfg.hidden, 1))

    def build_dataset(self, split: str):
        g = torch.Generator().manual_seed({"train": 1, "val": 2, "test": 3}[split])
        n = self.cfg.data.n if split == "train" else 32
        x = torch.randn(n, self.cfg.data.dim, generator=g)
        w = torch.arange(1, self.cfg.data.dim + 1, dtype=torch.float32) / self.cfg.data.dim
        return TensorDataset(x, (x @ w)[:, None] + 0.1 * torch.randn(n, 1, generator=g))

    def loss(self, model, batch):
        x, y = batch
        # Input noise from the global RNG: a resume that lost the RNG state would diverge here.
        pred = model(x + 0.01 * torch.randn_like(x))
        return torch.mean((pred - y) ** 2), {}

    def evaluate(self, model, loader, ctx):
        se, n = 0.0, 0
        for x, y in loader:
            se += float(((model(x) - y) ** 2).sum())
            n += len(y)
        return {"mse": se / n}


class MinimaxApp(TinyApp):
    """Overrides train_step with two optimizers and two backward passes (a minimax-style step)."""

    name = "tiny_minimax"

    def configure_optimizers(self, model):
        first, second = model[0], model[3]
        return {"main": torch.optim.SGD(first.parameters(), lr=0.05),
                "head": torch.optim.Adam(second.parameters(), lr=0.01)}

    def train_step(self, ctx: StepContext, batch):
        x, y = batch
        loss1 = torch.mean((ctx.model(x) - y) ** 2)
        ctx.backward(loss1)
        ctx.step("main")
        loss2 = torch.mean((ctx.model(x) - y) ** 2)
        ctx.backward(loss2)
        ctx.step("head")
        return {"loss": loss2.detach(), "loss_first": loss1.detach()}
