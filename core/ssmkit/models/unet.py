"""VSSUNet: a U-Net whose levels are VSS blocks (SS2D for images, SS3D for volumes).

MONAI-style arguments (``spatial_dims``, ``in_channels``, ``out_channels``), so it drops into
MONAI's losses, inferers and metrics unchanged (docs/library.md shows a training step with
``DiceCELoss``, ``sliding_window_inference`` and ``DiceMetric``).

Layout for [B, in_channels, *S] with ``features = (f0, f1, ..., fn)``:

    stem     3^d conv in_channels -> f0, then blocks at f0              (full resolution)
    down i   2^d conv stride 2 f(i-1) -> fi, then blocks at fi          (S / 2^i)
    up i     2^d transposed conv f(i+1) -> fi, concat the skip, 1^d conv 2 fi -> fi, blocks
    head     1^d conv f0 -> out_channels                                (logits, full resolution)

Any spatial size works: the input is zero-padded up to a multiple of 2^n and the logits are
cropped back, so odd sliding-window patches and odd volumes need no care from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit._checks import positive_int
from ssmkit.layers.ss2d import VSSBlock
from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.registry import register_model

_CONV = {2: (nn.Conv2d, nn.ConvTranspose2d), 3: (nn.Conv3d, nn.ConvTranspose3d)}


class _Level(nn.Module):
    """``depth`` channels-first VSS blocks at one resolution: [B, C, *S] -> [B, C, *S]."""

    def __init__(self, dim: int, depth: int, spatial_dims: int, block_kwargs: dict):
        super().__init__()
        self.blocks = nn.Sequential(*(VSSBlock(dim, spatial_dims=spatial_dims, **block_kwargs) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


@register_model("ssmkit_vss_unet")
class VSSUNet(NoWeightDecay, nn.Module):
    """U-Net of VSS blocks: [B, in_channels, *S] -> logits [B, out_channels, *S], any S.

    Args:
        spatial_dims: 2 ([B, C, H, W], SS2D with the cross scan) or 3 ([B, C, D, H, W], SS3D with
            the tri-orientated scan).
        in_channels, out_channels: input channels and classes.
        features: channels per level, finest first; len(features) - 1 downsamplings.
        depth: VSS blocks per level (encoder and decoder each).
        d_state, expand, mlp_ratio, strategy, backend: of the VSS blocks (strategy None picks
            the default scan for ``spatial_dims``).
        device, dtype: of every parameter.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
                 features: Sequence[int] = (16, 32, 64), depth: int = 1, d_state: int = 8, expand: float = 1.0,
                 mlp_ratio: float = 2.0, strategy: str | None = None, backend: str = "auto",
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"VSSUNet spatial_dims must be 2 or 3; got {spatial_dims!r}")
        self.spatial_dims = spatial_dims
        self.in_channels = positive_int(in_channels, "in_channels", "VSSUNet")
        self.out_channels = positive_int(out_channels, "out_channels", "VSSUNet")
        features = tuple(positive_int(f, "features[i]", "VSSUNet") for f in features)
        if len(features) < 1:
            raise ValueError("VSSUNet needs at least one level in features; got ()")
        depth = positive_int(depth, "depth", "VSSUNet")
        self.features = features
        conv, up = _CONV[spatial_dims]
        kw = {"device": device, "dtype": dtype}
        block_kwargs = dict(d_state=d_state, expand=expand, mlp_ratio=mlp_ratio, strategy=strategy, backend=backend,
                            **kw)
        self.stem = conv(in_channels, features[0], 3, padding=1, **kw)
        self.encoders = nn.ModuleList(_Level(f, depth, spatial_dims, block_kwargs) for f in features)
        self.downs = nn.ModuleList(conv(features[i], features[i + 1], 2, stride=2, **kw)
                                   for i in range(len(features) - 1))
        self.ups = nn.ModuleList(up(features[i + 1], features[i], 2, stride=2, **kw) for i in range(len(features) - 1))
        self.fuses = nn.ModuleList(conv(2 * features[i], features[i], 1, **kw) for i in range(len(features) - 1))
        self.decoders = nn.ModuleList(_Level(features[i], depth, spatial_dims, block_kwargs)
                                      for i in range(len(features) - 1))
        self.head = conv(features[0], out_channels, 1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_channels, *S] -> [B, out_channels, *S]."""
        if not isinstance(x, torch.Tensor) or x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            axes = "H, W" if self.spatial_dims == 2 else "D, H, W"
            raise ValueError(f"VSSUNet expects [B, {self.in_channels}, {axes}]; got {got}")
        size = x.shape[2:]
        m = 2 ** (len(self.features) - 1)
        pad = []
        for s in reversed(size):  # F.pad lists the last axis first
            pad += [0, (-s) % m]
        h = self.stem(F.pad(x, pad) if any(pad) else x)
        skips = []
        for i, enc in enumerate(self.encoders):
            h = enc(h)
            if i < len(self.downs):
                skips.append(h)
                h = self.downs[i](h)
        for i in reversed(range(len(self.ups))):
            h = self.fuses[i](torch.cat((self.ups[i](h), skips[i]), dim=1))
            h = self.decoders[i](h)
        out = self.head(h)
        return out[(..., *(slice(0, s) for s in size))]


__all__ = ["VSSUNet"]
