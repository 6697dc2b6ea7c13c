"""ssmkit.layers: the blocks, as plain ``nn.Module``s to reuse in any model.

    >>> import torch
    >>> from ssmkit.layers import Mamba, SS2D
    >>> Mamba(d_model=16)(torch.randn(2, 10, 16)).shape        # sequences [B, L, C]
    torch.Size([2, 10, 16])
    >>> SS2D(d_model=16)(torch.randn(2, 16, 6, 7)).shape       # maps [B, C, H, W]
    torch.Size([2, 16, 6, 7])

Importing this package registers the blocks (``ssmkit.registry.list_blocks()``,
``create_block(name, **kw)``) and does nothing else. Every registered block takes ``device=``
and ``dtype=`` and has ``no_weight_decay()`` (see :mod:`ssmkit.layers.weight_decay`).
"""

from ssmkit.layers.bigs import BiGS
from ssmkit.layers.gamba import GambaBlock, GambaCell, RegisterAttention2d
from ssmkit.layers.gated_attention import GatedAttention, merge_attention_masks
from ssmkit.layers.gated_conv import GBC, BottleneckConv, ChannelLayerNorm, GnConv, HGConv
from ssmkit.layers.gated_fusion import GatedFusion
from ssmkit.layers.gla import GLA
from ssmkit.layers.lru import LRU, lru_recurrence, lru_scan
from ssmkit.layers.mamba import BiMamba, Mamba, MambaBlock, MambaCache
from ssmkit.layers.mega import MegaLayer, T5RelativeBias
from ssmkit.layers.norm import GatedRMSNorm, RMSNorm, rms_norm
from ssmkit.layers.s4d import S4D, S4DKernel, fft_causal_conv, s4d_kernel
from ssmkit.layers.ss2d import SS2D, SS3D, VSSBlock, drop_path
from ssmkit.layers.weight_decay import NoWeightDecay, no_weight_decay_names

__all__ = [
    "GBC", "GLA", "LRU", "S4D", "SS2D", "SS3D",
    "BiGS", "BiMamba", "BottleneckConv", "ChannelLayerNorm", "GambaBlock", "GambaCell", "GatedAttention",
    "GatedFusion", "GatedRMSNorm", "GnConv", "HGConv", "Mamba", "MambaBlock", "MambaCache", "MegaLayer",
    "NoWeightDecay", "RMSNorm", "RegisterAttention2d", "S4DKernel", "T5RelativeBias", "VSSBlock",
    "drop_path", "fft_causal_conv", "lru_recurrence", "lru_scan", "merge_attention_masks", "no_weight_decay_names",
    "rms_norm", "s4d_kernel",
]
