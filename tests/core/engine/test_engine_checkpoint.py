"""Checkpoints: round trip, atomic writes, damage detection with fallback, no pickle ever."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

import ssmkit.engine.checkpoint as ck
from ssmkit.engine.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    load_weights,
    save_checkpoint,
    verify_checkpoint,
)


def _setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 7), nn.ReLU(), nn.Linear(7, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (k + 1))
    return model, opt, sched


def _train(model, opt, sched, steps=3):
    for _ in range(steps):
        loss = model(torch.randn(4, 3)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()


def _save(tmp_path, model, opt, sched, step, keep=3):
    return save_checkpoint(tmp_path / "ckpt", model, {"main": opt}, {"main": sched},
                           {"step": step, "epoch": 0}, {"seed": 0}, keep=keep)


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched = _setup()
    _train(model, opt, sched)
    random.seed(5)
    np.random.seed(5)
    path = _save(tmp_path, model, opt, sched, 3)
    saved_rng = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    _train(model, opt, sched)  # continue: the reference trajectory (draws from the RNG)
    ref = [p.detach().clone() for p in model.parameters()]

    model2, opt2, sched2 = _setup(seed=1)  # different init: everything must come from the file
    pos = load_checkpoint(path, model2, {"main": opt2}, {"main": sched2})
    assert pos == {"step": 3, "epoch": 0}
    assert random.getstate() == saved_rng[0]
    assert np.array_equal(np.random.get_state()[1], saved_rng[1])
    assert torch.equal(torch.get_rng_state(), saved_rng[2])
    assert sched2.last_epoch == 3 and opt2.param_groups[0]["lr"] == pytest.approx(1e-2 / 4)
    _train(model2, opt2, sched2)
    for a, b in zip(ref, model2.parameters()):
        assert torch.equal(a, b)


def test_rotation_keeps_newest(tmp_path):
    model, opt, sched = _setup()
    for s in range(1, 6):
        _save(tmp_path, model, opt, sched, s, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path / "ckpt")] == ["step_00000004", "step_00000005"]


def test_crash_during_save_leaves_previous_intact(tmp_path, monkeypatch):
    model, opt, sched = _setup()
    good = _save(tmp_path, model, opt, sched, 1)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, model, opt, sched, 2)
    # Only the temp folder of the failed save exists beside the good checkpoint; it is never listed.
    assert list_checkpoints(tmp_path / "ckpt") == [good]
    assert latest_checkpoint(tmp_path / "ckpt") == good


@pytest.mark.parametrize("damage", ["truncate_model", "flip_state", "garbage_json", "delete_json"])
def test_damaged_checkpoint_is_detected_and_skipped(tmp_path, damage):
    model, opt, sched = _setup()
    first = _save(tmp_path, model, opt, sched, 1)
    _train(model, opt, sched, 1)
    second = _save(tmp_path, model, opt, sched, 2)
    if damage == "truncate_model":
        f = second / "model.safetensors"
        f.write_bytes(f.read_bytes()[:-10])
    elif damage == "flip_state":
        f = second / "state.safetensors"
        b = bytearray(f.read_bytes())
        b[-5] ^= 0xFF
        f.write_bytes(bytes(b))
    elif damage == "garbage_json":
        (second / "state.json").write_text('{"files": ')
    else:
        (second / "state.json").unlink()
    with pytest.raises(CheckpointError, match="step_00000002"):
        verify_checkpoint(second)
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        assert latest_checkpoint(tmp_path / "ckpt") == first
    assert second.exists()  # the damaged one is reported, not deleted
    with pytest.raises(CheckpointError):
        load_model_weights(model, second)


def test_truncated_safetensors_file(tmp_path):
    model, _, _ = _setup()
    ck.save_weights(model, tmp_path / "w.safetensors")
    raw = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_weights(tmp_path / "w.safetensors")
    # without its checksum file (a foreign file), safetensors itself still refuses it
    (tmp_path / "w.safetensors.json").unlink()
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_weights(tmp_path / "w.safetensors")


def test_flipped_byte_in_weights_is_caught(tmp_path):
    # Same size, one byte changed inside a tensor: safetensors loads it happily, the sidecar does not.
    model, _, _ = _setup()
    ck.save_weights(model, tmp_path / "best.safetensors")
    raw = bytearray((tmp_path / "best.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "best.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_weights(tmp_path / "best.safetensors")


def test_weights_must_fit_the_model(tmp_path):
    model, _, _ = _setup()
    ck.save_weights(model, tmp_path / "w.safetensors")
    other = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model_weights(other, tmp_path / "w.safetensors")


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned-by-pickle",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "evil.pt"
    with open(f, "wb") as fh:
        pickle.dump({"weight": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_weights(f)
    assert not (tmp_path / "pwned-by-pickle").exists()
    # Same through torch.save's zip format.
    g = tmp_path / "evil2.pth"
    torch.save({"w": _Evil()}, g)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_weights(g)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_plain_foreign_state_dict_loads(tmp_path):
    model, _, _ = _setup()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "foreign.pt")
    fresh, _, _ = _setup(seed=3)
    load_model_weights(fresh, tmp_path / "foreign.pt")
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_unknown_format(tmp_path):
    (tmp_path / "w.ckpt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_weights(tmp_path / "w.ckpt")
