"""Fixtures of the talking-head tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


class StandInI3D(torch.nn.Module):
    """The call signature of StyleGAN-V's TorchScript I3D (``i3d_torchscript.pt``); its features
    are the per-channel means and the frame count, so a test sees what the FVD metric fed it."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        assert x.dim() == 5 and x.shape[1] == 3 and rescale and resize and return_features
        return torch.cat([x.mean((2, 3, 4)), torch.full((x.shape[0], 1), float(x.shape[2]))], 1)


@pytest.fixture
def standin_i3d(tmp_path) -> Path:
    """A TorchScript file with :class:`StandInI3D`, where eval.fvd_weights would point."""
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(StandInI3D()).save(str(path))
    return path
