"""Tiled inference: it equals whole-image inference where both apply, and covers every pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ssmkit.registry import create_model
from ssmkit_apps.crack.infer import output_stem, overlay, predict_probs, tile_starts


class _Pointwise(nn.Module):
    """A model whose output at a pixel depends on that pixel only: tiles agree exactly."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return self.mix(x * 4 - 2)


def test_tile_starts_cover_the_image_flush_with_the_border():
    assert tile_starts(100, 32, 24) == [0, 24, 48, 68]
    assert tile_starts(32, 32, 24) == [0] and tile_starts(20, 32, 24) == [0]
    for length, tile, stride in ((97, 16, 12), (64, 16, 16), (17, 16, 1)):
        s = tile_starts(length, tile, stride)
        covered = np.zeros(length, bool)
        for a in s:
            covered[a:a + tile] = True
        assert covered.all() and s[-1] + tile == length


def test_tiled_equals_whole_image_for_a_local_model():
    torch.manual_seed(0)
    model = _Pointwise().eval()
    img = torch.rand(3, 70, 53)
    whole = torch.sigmoid(model(img[None]))[0, 0]
    for tile, overlap in ((16, 0.25), (24, 0.5), (32, 0.0)):
        tiled = predict_probs(model, img, tile=tile, overlap=overlap, batch=3)
        torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=1e-6)


def test_scsegamba_tiled_equals_whole_where_the_image_fits_one_tile():
    model = create_model("scsegamba_tiny").eval()
    img = torch.rand(3, 24, 40)
    with torch.no_grad():
        whole = torch.sigmoid(model(img[None]))[0, 0]
    tiled = predict_probs(model, img, tile=40, overlap=0.25)
    torch.testing.assert_close(tiled, whole)
    # a larger image is cut into tiles and still gets a probability at every pixel
    big = predict_probs(model, torch.rand(3, 40, 72), tile=32, overlap=0.25)
    assert big.shape == (40, 72) and torch.isfinite(big).all() and 0 <= float(big.min()) <= float(big.max()) <= 1


def test_predict_probs_checks_its_arguments():
    model = _Pointwise()
    with pytest.raises(ValueError, match=r"one RGB image \[3, H, W\]"):
        predict_probs(model, torch.rand(1, 3, 8, 8), tile=16)
    with pytest.raises(ValueError, match="overlap must be in"):
        predict_probs(model, torch.rand(3, 8, 8), tile=16, overlap=1.0)


def test_overlay_and_output_names():
    img = np.full((4, 5, 3), 100, np.uint8)
    mask = np.zeros((4, 5), bool)
    mask[1, 2] = True
    out = overlay(img, mask)
    assert out[1, 2, 0] > out[1, 2, 1] and out[0, 0, 0] == out[0, 0, 1]
    from pathlib import Path

    used: set[str] = set()
    assert [output_stem(Path(n), used) for n in ("a.jpg", "a.png", "b.png", "a.PNG")] == ["a", "a_png", "b", "a_png_2"]
