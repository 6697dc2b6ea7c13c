"""The example app: its data generator, on-disk loader, model, metrics, and that it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from ssmkit.engine.app import DataError, get_app
from ssmkit.engine.config import load_config
from ssmkit.engine.trainer import Trainer
from ssmkit_apps.example.data import CLASSES, generate_waveforms, load_npz_split, save_npz_split, waveforms
from ssmkit_apps.example.metrics import ConfusionMeter, confusion_matrix, scores
from ssmkit_apps.example.model import MambaClassifier


def test_generator_is_deterministic_and_splits_differ():
    a, ya = generate_waveforms(50, 32, seed=3)
    b, yb = generate_waveforms(50, 32, seed=3)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert a.shape == (50, 32) and a.dtype == torch.float32 and ya.dtype == torch.int64
    tr, te = waveforms("train", 40, 32), waveforms("test", 40, 32)
    assert not torch.equal(tr.x, te.x)
    assert set(ya.tolist()) <= set(range(len(CLASSES)))
    with pytest.raises(ValueError, match="split must be one of"):
        waveforms("dev")


def test_npz_round_trip_and_errors(tmp_path):
    x, y = generate_waveforms(12, 20, seed=0)
    save_npz_split(tmp_path, "train", x, y)
    ds = load_npz_split(tmp_path, "train", len(CLASSES))
    assert len(ds) == 12 and ds[0][0].shape == (20, 1) and torch.equal(ds.y, y)
    with pytest.raises(DataError, match="has no val.npz"):
        load_npz_split(tmp_path, "val", len(CLASSES))
    np.savez(tmp_path / "test.npz", x=x.numpy(), y=np.full(12, 9))
    with pytest.raises(DataError, match=r"labels must be integers in 0..3"):
        load_npz_split(tmp_path, "test", len(CLASSES))
    with pytest.raises(DataError, match="Expected layout"):
        load_npz_split(tmp_path / "nope", "train", len(CLASSES))


@pytest.mark.parametrize("length", [1, 17])
def test_model_shapes_and_gradients(length):
    m = MambaClassifier(d_model=8, n_layers=1, d_state=4)
    x = torch.randn(3, length, 1, requires_grad=True)
    out = m(x)
    assert out.shape == (3, len(CLASSES))
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in m.parameters())
    with pytest.raises(ValueError, match=r"expected x \[B, L, 1\]"):
        m(torch.randn(3, length))


def test_metrics_match_sklearn():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (200,), generator=g)
    logits = torch.randn(200, 4, generator=g) + 2 * torch.nn.functional.one_hot(y, 4)
    meter = ConfusionMeter(4)
    for chunk in range(0, 200, 64):
        meter.update(logits[chunk:chunk + 64], y[chunk:chunk + 64])
    got = meter.compute()
    pred = logits.argmax(-1).numpy()
    assert got["accuracy"] == pytest.approx(accuracy_score(y.numpy(), pred))
    assert got["macro_f1"] == pytest.approx(f1_score(y.numpy(), pred, average="macro"))
    assert confusion_matrix(y, y, 4).trace() == 200 and scores(confusion_matrix(y, y, 4))["accuracy"] == 1.0


def test_training_reduces_the_loss_quickly():
    # Fast check for the default run: a few steps on one small batch must cut the loss.
    torch.manual_seed(0)
    x, y = generate_waveforms(16, 16, noise=0.2, seed=1)
    m = MambaClassifier(d_model=8, n_layers=1, d_state=4)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(m(x[..., None]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.slow
def test_demo_config_learns_well_above_chance(tmp_path):
    app_cls = get_app("example")
    cfg = load_config(app_cls.config_class, app_cls.default_config_path(),
                      [*app_cls.demo_overrides, "train.device=cpu"])
    val = Trainer(app_cls(cfg), tmp_path / "run", verbose=False).fit()
    # Chance is 0.25 (4 balanced classes); the demo settings reach about 0.75.
    assert val["accuracy"] > 0.6, val
