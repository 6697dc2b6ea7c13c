"""VSSM: a VMamba-style image classifier built from :class:`ssmkit.layers.VSSBlock` stages.

Layout for an input [B, in_chans, H, W] (four stages by default):

    stem      patch_size x patch_size conv, stride patch_size, LayerNorm   -> [B, C0, H/4, W/4]
    stages.0  VSS blocks                                                   -> [B, C0, H/4, W/4]
    stages.i  LayerNorm + 2x2 conv stride 2 (downsample), VSS blocks       -> [B, Ci, H/2^(i+2), W/2^(i+2)]
    head      LayerNorm per position, global pool, dropout, Linear         -> [B, num_classes]

The model follows timm's conventions, so timm's tools work on it unchanged:
``forward_features`` returns the last stage's map [B, C, H', W'] (unpooled), ``forward_head``
pools and classifies (``pre_logits=True`` stops before the Linear), ``reset_classifier``,
``get_classifier``, ``feature_info`` (one entry per stage, for ``features_only=True``),
``no_weight_decay`` (for ``timm.optim.create_optimizer_v2``), ``group_matcher`` and
``set_grad_checkpointing``.

Stages take and return channels-first maps; inside a stage the blocks run channels-last, so each
stage permutes its map once each way instead of every block doing so.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ssmkit._checks import in_range, one_of, positive_int
from ssmkit.layers.gated_conv import ChannelLayerNorm
from ssmkit.layers.ss2d import VSSBlock
from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.registry import register_model

POOLS = ("avg", "max", "")


class Stem(nn.Module):
    """Non-overlapping patch embedding: [B, in_chans, H, W] -> [B, dim, H / p, W / p]."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, device=None, dtype=None):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size, device=device, dtype=dtype)
        self.norm = ChannelLayerNorm(dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class VSSStage(nn.Module):
    """Optional 2x downsample, then ``depth`` VSS blocks: [B, C_in, H, W] -> [B, C_out, H', W']."""

    def __init__(self, in_dim: int, dim: int, depth: int, downsample: bool, drop_path: Sequence[float],
                 block_kwargs: dict, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.downsample = nn.Sequential(ChannelLayerNorm(in_dim, **kw), nn.Conv2d(in_dim, dim, 2, stride=2, **kw)) \
            if downsample else nn.Identity()
        self.blocks = nn.ModuleList(
            VSSBlock(dim, spatial_dims=2, drop_path=drop_path[i], channels_last=True, **block_kwargs, **kw)
            for i in range(depth))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x).permute(0, 2, 3, 1)  # [B, H, W, C] for the blocks
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                # Reentrant: the chunked CPU scan reads ctx.saved_tensors more than once in its
                # backward, which the non-reentrant checkpoint refuses.
                x = checkpoint(block, x, use_reentrant=True)
            else:
                x = block(x)
        return x.permute(0, 3, 1, 2).contiguous()


class ClassifierHead(nn.Module):
    """Per-position LayerNorm, global pool, dropout, Linear: [B, C, H, W] -> [B, num_classes].

    ``global_pool=""`` keeps the map: the Linear then runs per position, [B, num_classes, H, W].
    """

    def __init__(self, dim: int, num_classes: int, global_pool: str = "avg", drop_rate: float = 0.0,
                 device=None, dtype=None):
        super().__init__()
        self.global_pool = one_of(global_pool, POOLS, "global_pool", "VSSM")
        self.norm = ChannelLayerNorm(dim, device=device, dtype=dtype)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(dim, num_classes, device=device, dtype=dtype) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x)
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        elif self.global_pool == "max":
            x = x.amax(dim=(2, 3))
        else:
            x = x.permute(0, 2, 3, 1)  # the Linear runs per position
        x = self.drop(x)
        if not pre_logits:
            x = self.fc(x)
        return x if self.global_pool else x.permute(0, 3, 1, 2)


class VSSM(NoWeightDecay, nn.Module):
    """VMamba-style classifier: [B, in_chans, H, W] -> [B, num_classes].

    Args:
        num_classes: classifier outputs; 0 makes ``forward`` return pooled features.
        in_chans: input channels.
        dims: channels per stage, or one int C0 (stages C0, 2 C0, 4 C0, 8 C0).
        depths: VSS blocks per stage.
        d_state, expand, dt_rank, d_conv, strategy, backend, impl: of each stage's SS2D mixer.
        mlp_ratio: hidden width of each block's MLP (0 drops it).
        patch_size: stride of the stem (the first stage's reduction).
        drop_rate: dropout before the classifier. drop_path_rate: stochastic depth, rising
            linearly over the blocks from 0 to this value.
        global_pool: "avg", "max" or "" (no pooling; the classifier runs per position).
        device, dtype: of every parameter.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dims: int | Sequence[int] = 96,
                 depths: Sequence[int] = (2, 2, 5, 2), d_state: int = 1, expand: float = 1.0,
                 dt_rank: int | str = "auto", d_conv: int = 3, strategy: str = "cross", mlp_ratio: float = 4.0,
                 patch_size: int = 4, drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "avg",
                 backend: str = "auto", impl: str = "fused", device: torch.device | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"VSSM num_classes must be an int >= 0; got {num_classes!r}")
        positive_int(in_chans, "in_chans", "VSSM")
        depths = tuple(positive_int(d, "depths[i]", "VSSM") for d in depths)
        if isinstance(dims, int):
            dims = tuple(positive_int(dims, "dims", "VSSM") * 2 ** i for i in range(len(depths)))
        dims = tuple(positive_int(d, "dims[i]", "VSSM") for d in dims)
        if len(dims) != len(depths) or not depths:
            raise ValueError(f"VSSM needs one width per stage: dims {list(dims)} and depths {list(depths)}")
        in_range(drop_rate, "drop_rate", "VSSM", 0.0, 1.0, hi_open=True)
        in_range(drop_path_rate, "drop_path_rate", "VSSM", 0.0, 1.0, hi_open=True)
        patch_size = positive_int(patch_size, "patch_size", "VSSM")
        kw = {"device": device, "dtype": dtype}
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.dims, self.depths = dims, depths
        self.num_features = self.head_hidden_size = dims[-1]

        block_kwargs = dict(d_state=d_state, expand=expand, dt_rank=dt_rank, d_conv=d_conv, strategy=strategy,
                            mlp_ratio=mlp_ratio, backend=backend, impl=impl)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stem = Stem(in_chans, dims[0], patch_size, **kw)
        stages, start, reduction = [], 0, patch_size
        self.feature_info = []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            stages.append(VSSStage(dims[max(i - 1, 0)], dim, depth, downsample=i > 0,
                                   drop_path=rates[start:start + depth], block_kwargs=block_kwargs, **kw))
            start += depth
            reduction *= 2 if i > 0 else 1
            self.feature_info.append({"num_chs": dim, "reduction": reduction, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(dims[-1], num_classes, global_pool, drop_rate, **kw)
        self.apply(_init_linear)

    # ----------------------------------------------------------------------- timm protocol
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups by stage (timm's layer-wise learning-rate decay reads this)."""
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.blocks\.(\d+)"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of keeping its activations."""
        for stage in self.stages:
            stage.grad_checkpointing = bool(enable)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier with ``num_classes`` outputs (0: none), keeping the device and dtype."""
        ref = self.head.norm.weight
        pool = self.head.global_pool if global_pool is None else global_pool
        self.num_classes = num_classes
        self.head = ClassifierHead(self.num_features, num_classes, pool, self.drop_rate,
                                   device=ref.device, dtype=ref.dtype)
        self.head.apply(_init_linear)

    # ---------------------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_chans:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"VSSM expects images [B, {self.in_chans}, H, W]; got {got}")
        smallest = self.feature_info[-1]["reduction"]
        if min(x.shape[2:]) < smallest:
            raise ValueError(f"VSSM needs H and W of at least {smallest} (its total stride); got {list(x.shape[2:])}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, H, W] -> the last stage's map [B, num_features, H', W']."""
        self._check_input(x)
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """[B, num_features, H', W'] -> logits [B, num_classes] (pooled features with ``pre_logits``)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_linear(m: nn.Module) -> None:
    # timm's init for Linear layers; SS2D's own projections and step sizes keep their Mamba init.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None and not getattr(m.bias, "_no_reinit", False):
            nn.init.zeros_(m.bias)


# Widths of the registered variants (VMamba's v2 tiny and small: d_state 1, expand 1, MLP 4x).
VARIANTS = {
    "ssmkit_vssm_tiny": {"dims": 96, "depths": (2, 2, 5, 2), "d_state": 1, "expand": 1.0, "drop_path_rate": 0.2},
    "ssmkit_vssm_small": {"dims": 96, "depths": (2, 2, 15, 2), "d_state": 1, "expand": 1.0, "drop_path_rate": 0.3},
}


def build_vssm(variant: str, **kwargs) -> VSSM:
    """The ``variant``'s widths (:data:`VARIANTS`), overridden by ``kwargs``."""
    return VSSM(**{**VARIANTS[variant], **kwargs})


@register_model("ssmkit_vssm_tiny")
def ssmkit_vssm_tiny(**kwargs) -> VSSM:
    """VSSM tiny (about 26 M parameters at 1000 classes); ``kwargs`` override any :class:`VSSM` argument."""
    return build_vssm("ssmkit_vssm_tiny", **kwargs)


@register_model("ssmkit_vssm_small")
def ssmkit_vssm_small(**kwargs) -> VSSM:
    """VSSM small (15 blocks in the third stage); ``kwargs`` override any :class:`VSSM` argument."""
    return build_vssm("ssmkit_vssm_small", **kwargs)


__all__ = ["VARIANTS", "VSSM", "ClassifierHead", "Stem", "VSSStage", "build_vssm", "ssmkit_vssm_small",
           "ssmkit_vssm_tiny"]
