"""Noisy waveform classification: the example app's embedded generator and its on-disk format.

Each sample is a 1-D signal [L] holding one of four periodic shapes (sine, square, sawtooth,
triangle) with random frequency, phase, amplitude, offset and a random onset: before the onset
there is only noise, so the model must find where the signal starts and integrate over time.
Gaussian noise, occasional impulse spikes and a slow drift are added on top. Sine and triangle
differ only in their harmonics, which makes the task non-trivial under noise.

Your own data: a folder with one ``.npz`` per split (read with ``allow_pickle=False``)::

    <root>/
      train.npz    x: float [N, L] signals, y: int [N] labels in 0..n_classes-1
      val.npz
      test.npz
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ssmkit.engine.app import DataError, check_data_dir
from ssmkit.engine.inputs import finite_values
from ssmkit.registry import register_dataset

CLASSES = ("sine", "square", "sawtooth", "triangle")
LAYOUT = """<root>/
  train.npz    x: float [N, L] signals, y: int [N] labels in 0..n_classes-1
  val.npz
  test.npz"""
# Each split draws from its own seed stream, so train/val/test never share a sample.
SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_029}


def _wave(kind: int, phase: torch.Tensor) -> torch.Tensor:
    """Unit-amplitude periodic shape ``kind`` at ``phase`` (in cycles)."""
    frac = phase - torch.floor(phase)
    if kind == 0:
        return torch.sin(2 * math.pi * phase)
    if kind == 1:
        return torch.where(frac < 0.5, 1.0, -1.0)
    if kind == 2:
        return 2 * frac - 1
    return 1 - 4 * (frac - 0.5).abs()


def generate_waveforms(n: int, length: int = 64, noise: float = 0.5,
                       seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [n, length] float32, y [n] int64), a pure function of the arguments."""
    if n < 0 or length < 8:
        raise ValueError(f"generate_waveforms needs n >= 0 and length >= 8; got n={n}, length={length}")
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, len(CLASSES), (n,), generator=g)
    t = torch.arange(length, dtype=torch.float32)
    cycles = torch.empty(n).uniform_(2.0, 6.0, generator=g)  # periods across the visible part
    freq = cycles / length
    phase0 = torch.rand(n, generator=g)
    amp = torch.empty(n).uniform_(0.6, 1.4, generator=g)
    offset = torch.randn(n, generator=g) * 0.3
    onset = (torch.rand(n, generator=g) * 0.4 * length).long()
    x = torch.empty(n, length)
    for k in range(len(CLASSES)):
        idx = (y == k).nonzero().flatten()
        if idx.numel():
            x[idx] = _wave(k, phase0[idx, None] + freq[idx, None] * t[None])
    x = amp[:, None] * x * (t[None] >= onset[:, None]).float()
    drift = torch.randn(n, 1, generator=g) * 0.2 * (t[None] / length)
    spikes = (torch.rand(n, length, generator=g) < 0.02).float() * torch.randn(n, length, generator=g) * 3
    x = x + offset[:, None] + drift + spikes + noise * torch.randn(n, length, generator=g)
    return x.float(), y.long()


class WaveformDataset(Dataset):
    """Signals [L] with labels; items are (x [L, 1] float32, y int64)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"expected x [N, L] and y [N]; got x {tuple(x.shape)}, y {tuple(y.shape)}")
        self.x, self.y = x.float(), y.long()

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i, :, None], self.y[i]


@register_dataset("example/waveforms")
def waveforms(split: str = "train", n: int = 2000, length: int = 64, noise: float = 0.5,
              seed: int = 0) -> WaveformDataset:
    """Embedded noisy-waveform classification (4 classes), generated on the fly."""
    if split not in SPLIT_OFFSET:
        raise ValueError(f"split must be one of {list(SPLIT_OFFSET)}; got {split!r}")
    return WaveformDataset(*generate_waveforms(n, length, noise, seed + SPLIT_OFFSET[split]))


def load_npz_split(root: str | Path, split: str, n_classes: int) -> WaveformDataset:
    """Read ``<root>/<split>.npz`` (x [N, L], y [N]) without unpickling anything."""
    base = check_data_dir(root, LAYOUT, "*.npz")
    f = base / f"{split}.npz"
    if not f.is_file():
        raise DataError(f"dataset path {str(base)!r} has no {split}.npz. Expected layout:\n{LAYOUT}")
    try:
        with np.load(f, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except (KeyError, ValueError, OSError, EOFError) as err:
        raise DataError(f"{str(f)!r} is not a valid split file ({err}). Expected layout:\n{LAYOUT}") from None
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise DataError(f"{str(f)!r}: expected non-empty x [N, L] and y [N]; got x {x.shape}, y {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise DataError(f"{str(f)!r}: labels must be integers in 0..{n_classes - 1}; got range "
                        f"{y.min()}..{y.max()} ({y.dtype})")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{str(f)!r}: x must be numeric; got {x.dtype}")
    x = finite_values(x, f"{f} (x)", "reject", row_name="sample")  # a NaN here would only surface as a NaN loss
    return WaveformDataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))


def save_npz_split(root: str | Path, split: str, x: torch.Tensor, y: torch.Tensor) -> Path:
    """Write a split in the on-disk layout above (used by tests and to export the generator)."""
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    np.savez(p / f"{split}.npz", x=x.numpy().astype(np.float32), y=y.numpy().astype(np.int64))
    return p / f"{split}.npz"
