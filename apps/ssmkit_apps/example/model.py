"""Waveform classifier: a stack of Mamba blocks over the signal, mean-pooled, then a linear head.

[B, L, 1] signal -> Linear embed [B, L, d_model] -> n_layers x MambaBlock -> RMSNorm ->
mean over L -> Linear -> [B, n_classes] logits.
"""

from __future__ import annotations

import torch
from torch import nn

from ssmkit.layers.mamba import MambaBlock
from ssmkit.layers.norm import RMSNorm
from ssmkit.registry import register_model


@register_model("example_mamba_classifier")
class MambaClassifier(nn.Module):
    """Mamba sequence classifier: [B, L, in_channels] -> [B, n_classes] logits."""

    def __init__(self, in_channels: int = 1, n_classes: int = 4, d_model: int = 32, n_layers: int = 2,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, backend: str = "auto"):
        super().__init__()
        if in_channels < 1 or n_classes < 2 or n_layers < 1:
            raise ValueError(f"MambaClassifier needs in_channels >= 1, n_classes >= 2, n_layers >= 1; got "
                             f"{in_channels}, {n_classes}, {n_layers}")
        self.in_channels = in_channels
        self.embed = nn.Linear(in_channels, d_model)
        self.blocks = nn.ModuleList(
            MambaBlock(d_model, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)
            for _ in range(n_layers)
        )
        self.norm = RMSNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def example_input(self, batch: int = 2, length: int = 32) -> torch.Tensor:
        return torch.randn(batch, length, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected x [B, L, {self.in_channels}]; got {tuple(x.shape)}")
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(dim=1))
