"""Gradient accumulation, weight averaging, early stopping, and ``fit`` without an App."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_app import TinyApp, TinyConfig
from torch import nn
from torch.utils.data import TensorDataset

from ssmkit.engine.config import ConfigError, TrainConfig, load_config
from ssmkit.engine.ema import WeightEMA
from ssmkit.engine.fit import fit
from ssmkit.engine.trainer import Trainer, split_batch


class ExactApp(TinyApp):
    """TinyApp without dropout or input noise: a step's gradient is a pure function of its batch."""

    def build_model(self) -> nn.Module:
        d = self.cfg.data.dim
        return nn.Sequential(nn.Linear(d, self.cfg.hidden), nn.Tanh(), nn.Linear(self.cfg.hidden, 1))

    def loss(self, model, batch):
        x, y = batch
        return torch.mean((model(x) - y) ** 2), {"first": x[0, 0]}


def _app(cls, *overrides):
    base = ["train.batch_size=16", "train.epochs=2", "train.lr=0.05", "train.optimizer=sgd", "train.device=cpu"]
    return cls(load_config(TinyConfig, None, [*base, *overrides]))


def _weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def _records(run_dir, split):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


@pytest.mark.parametrize("parts", [2, 4])
def test_accumulation_equals_one_big_batch(tmp_path, parts):
    Trainer(_app(ExactApp), tmp_path / "one", verbose=False).fit()
    Trainer(_app(ExactApp, f"train.accumulate={parts}"), tmp_path / "acc", verbose=False).fit()
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "acc")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # same number of optimizer steps, metrics averaged over the micro-batches
    assert [r["step"] for r in _records(tmp_path / "one", "train")] == \
        [r["step"] for r in _records(tmp_path / "acc", "train")]


def test_accumulation_must_divide_the_batch(tmp_path):
    with pytest.raises(ValueError, match="must divide"):
        Trainer(_app(ExactApp, "train.accumulate=3"), tmp_path / "x", verbose=False).fit()
    with pytest.raises(ConfigError, match="train.accumulate"):
        _app(ExactApp, "train.accumulate=0")


def test_split_batch_keeps_structure():
    batch = {"x": torch.arange(8).reshape(4, 2), "names": ["a", "b", "c", "d"], "k": torch.tensor(3.0)}
    parts = split_batch(batch, 2)
    assert torch.equal(parts[1]["x"], torch.tensor([[4, 5], [6, 7]]))
    assert parts[0]["names"] == ["a", "b"] and parts[1]["k"] == 3.0
    assert [tuple(p[0].shape) for p in split_batch((torch.zeros(6, 3), torch.zeros(6)), 3)] == [(2, 3)] * 3


def test_weight_ema_formula():
    m = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = WeightEMA(m, 0.5)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)  # warm-up decay min(0.5, 1/10) = 0.1: 0.1 * 0 + 0.9 * 1
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.9))
    with ema.swapped_in(m):
        assert torch.allclose(m.weight, torch.full((1, 2), 0.9))
    assert torch.equal(m.weight, torch.ones(1, 2))  # live weights are back


def test_ema_weights_are_saved_and_resume_exactly(tmp_path):
    Trainer(_app(ExactApp, "train.ema=0.9", "train.epochs=3"), tmp_path / "full", verbose=False).fit()
    Trainer(_app(ExactApp, "train.epochs=3"), tmp_path / "plain", verbose=False).fit()
    full, plain = _weights(tmp_path / "full"), _weights(tmp_path / "plain")
    assert not all(torch.equal(full[k], plain[k]) for k in full)  # the averaged weights were saved
    # crash in the second epoch (checkpoint after the first), resume: the average resumes too

    class Crashing(ExactApp):
        def train_step(self, ctx, batch):
            if ctx.global_step == 8:
                raise RuntimeError("simulated crash")
            return super().train_step(ctx, batch)

    part = tmp_path / "part"
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(_app(Crashing, "train.ema=0.9", "train.epochs=3"), part, verbose=False).fit()
    Trainer(_app(ExactApp, "train.ema=0.9", "train.epochs=3"), part, verbose=False).fit(resume=True)
    resumed = _weights(part)
    assert all(torch.allclose(full[k], resumed[k], atol=1e-7) for k in full)


def test_early_stopping_stops_and_stays_stopped(tmp_path):
    # lr 0: validation never improves after the first evaluation
    run = tmp_path / "es"
    Trainer(_app(ExactApp, "train.lr=0", "train.epochs=6", "train.early_stop=2"), run, verbose=False).fit()
    vals = _records(run, "val")
    assert len(vals) == 3  # the first sets the best, two more without improvement stop the run
    last = _records(run, "train")[-1]["step"]
    Trainer(_app(ExactApp, "train.lr=0", "train.epochs=6", "train.early_stop=2"), run, verbose=False).fit(resume=True)
    assert _records(run, "train")[-1]["step"] == last


def test_fit_without_an_app(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    y = (x[:, :1] > 0).float()
    ds = TensorDataset(x, y)

    def loss_fn(model, batch):
        return nn.functional.binary_cross_entropy_with_logits(model(batch[0]), batch[1])

    def accuracy(model, batch):
        return {"accuracy": float(((model(batch[0]) > 0).float() == batch[1]).float().mean())}

    run, val = fit(lambda: nn.Linear(4, 1), loss_fn, ds, ds, TrainConfig(epochs=10, batch_size=32, lr=0.1,
                   device="cpu"), run_root=tmp_path, metrics_fn=accuracy, primary_metric="accuracy",
                   higher_is_better=True, verbose=False)
    assert val["accuracy"] > 0.9
    assert run.parent == tmp_path / "fit"
    for f in ("model.safetensors", "model.safetensors.json", "checkpoints/best.safetensors", "report.md"):
        assert (run / f).is_file(), f
