"""MambaClinix: a U-shaped 3D segmentation network with HGConv in the shallow stages and
SS3D/Mamba in the deep ones, plus the MONAI baselines it is compared with.

Encoder stage i (channels C_i = min(features * 2^i, max_features), stride and kernel from the plan):

    stage 0:  conv(k_0) -> IN -> LeakyReLU -> residual block(k_0)
    stage i:  residual block(k_i, stride s_i)
    then      HGConv x depth   (shallow stages: local high-order gated interactions, g^n gating)
         or   VSSBlock(SS3D) x depth   (the ``mamba_stages`` deepest stages: long-range, linear in voxels)

Decoder (residual, with deep supervision): transposed conv up by s_{i+1}, concatenate the skip,
residual block(k_i), and a 1x1 head at every level. In training mode the network returns the
list of logits [full, 1/2, 1/4, ...] (the bottleneck level has no head); in eval mode only the
full-resolution logits [B, K, X, Y, Z].

The HGConv block (``ssmkit.layers.gated_conv``) multiplies its gates, as the HorNet and
MambaClinix papers write; MambaClinix's published code adds them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ssmkit.layers.gated_conv import HGConv
from ssmkit.layers.ss2d import VSSBlock
from ssmkit.registry import register_model


def _pad(kernel: Sequence[int]) -> tuple[int, ...]:
    return tuple(k // 2 for k in kernel)


class ConvNormAct(nn.Sequential):
    """Conv3d -> InstanceNorm3d (affine) -> LeakyReLU(0.01): [B, C_in, *S] -> [B, C_out, *S / stride]."""

    def __init__(self, c_in: int, c_out: int, kernel: Sequence[int], stride: Sequence[int] = (1, 1, 1),
                 act: bool = True):
        layers: list[nn.Module] = [nn.Conv3d(c_in, c_out, tuple(kernel), tuple(stride), _pad(kernel), bias=False),
                                   nn.InstanceNorm3d(c_out, affine=True)]
        if act:
            layers.append(nn.LeakyReLU(0.01, inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two convolutions with a (projected) identity path: [B, C_in, *S] -> [B, C_out, *S / stride]."""

    def __init__(self, c_in: int, c_out: int, kernel: Sequence[int], stride: Sequence[int] = (1, 1, 1)):
        super().__init__()
        self.conv1 = ConvNormAct(c_in, c_out, kernel, stride)
        self.conv2 = ConvNormAct(c_out, c_out, kernel, act=False)
        self.skip: nn.Module = nn.Identity()
        if c_in != c_out or any(s != 1 for s in stride):
            # Average-pool then 1x1 conv (nnU-Net's residual encoder): no information is skipped over.
            pool = nn.AvgPool3d(tuple(stride), tuple(stride)) if any(s != 1 for s in stride) else nn.Identity()
            self.skip = nn.Sequential(pool, nn.Conv3d(c_in, c_out, 1, bias=False),
                                      nn.InstanceNorm3d(c_out, affine=True))
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))


def _hg_order(channels: int, stage: int) -> int:
    """HorNet's schedule (order 2, 3, 4, 5 by stage), capped so C stays divisible by 2^(order-1)."""
    order = min(2 + stage, 5)
    while order > 1 and channels % (2 ** (order - 1)):
        order -= 1
    return order


@register_model("medseg_mambaclinix")
class MambaClinix(nn.Module):
    """HGConv + SS3D U-Net with a residual decoder and deep supervision; see the module docstring.

    Args:
        in_channels, n_classes: image channels and label classes (background included).
        strides, kernels: per stage, per axis (from :func:`ssmkit_apps.medseg.plan.plan_stages`).
        features, max_features: channels of stage 0 and the cap.
        mamba_stages: how many of the deepest stages use SS3D blocks; the others use HGConv.
        depth: gated blocks (HGConv or VSSBlock) per encoder stage.
        scan: the SS3D scan strategy (a 3D-capable name from ``ssmkit.list_scans()``).
        d_state, expand: SS3D state size and inner expansion.
        hg_kernel: HGConv's depthwise kernel size (odd). layer_scale: initial HGConv residual scale.
        deep_supervision: return the logits of every decoder level in training mode.
        backend: the selective-scan backend ("auto" picks Triton on CUDA).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2,
                 strides: Sequence[Sequence[int]] = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)),
                 kernels: Sequence[Sequence[int]] | None = None, features: int = 16, max_features: int = 256,
                 mamba_stages: int = 2, depth: int = 1, scan: str = "tri_orient", d_state: int = 16,
                 expand: float = 2.0, hg_kernel: int = 7, layer_scale: float = 0.1, deep_supervision: bool = True,
                 backend: str = "auto"):
        super().__init__()
        strides = [tuple(int(v) for v in s) for s in strides]
        kernels = [tuple(int(v) for v in k) for k in (kernels or [(3, 3, 3)] * len(strides))]
        if len(strides) < 2 or len(kernels) != len(strides) or any(len(s) != 3 for s in (*strides, *kernels)):
            raise ValueError(f"MambaClinix needs >= 2 stages with 3 strides and 3 kernel sizes each; got strides "
                             f"{strides}, kernels {kernels}")
        if not 0 <= mamba_stages <= len(strides):
            raise ValueError(f"mamba_stages must be in 0..{len(strides)} (the stage count); got {mamba_stages}")
        if features < 8 or features % 8:
            raise ValueError(f"features must be a positive multiple of 8 (HGConv splits channels); got {features}")
        self.in_channels, self.n_classes = in_channels, n_classes
        self.strides, self.kernels = strides, kernels
        self.deep_supervision = deep_supervision
        n = len(strides)
        ch = [min(features * 2**i, max_features) for i in range(n)]
        self.channels = ch
        self.stage_kinds = ["ss3d" if i >= n - mamba_stages else "hgconv" for i in range(n)]

        self.stem = ConvNormAct(in_channels, ch[0], kernels[0])
        self.down = nn.ModuleList(ResidualBlock(ch[0] if i == 0 else ch[i - 1], ch[i], kernels[i], strides[i])
                                  for i in range(n))
        blocks = []
        for i, kind in enumerate(self.stage_kinds):
            if kind == "hgconv":
                stage = [HGConv(ch[i], order=_hg_order(ch[i], i), kernel_size=hg_kernel, spatial_dims=3,
                                mlp_ratio=2.0, layer_scale_init=layer_scale) for _ in range(depth)]
            else:
                stage = [VSSBlock(ch[i], spatial_dims=3, strategy=scan, d_state=d_state, expand=expand, mlp_ratio=2.0,
                                  backend=backend) for _ in range(depth)]
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.ModuleList(blocks)
        self.up = nn.ModuleList(nn.ConvTranspose3d(ch[i + 1], ch[i], strides[i + 1], strides[i + 1], bias=False)
                                for i in range(n - 1))
        self.dec = nn.ModuleList(ResidualBlock(2 * ch[i], ch[i], kernels[i]) for i in range(n - 1))
        self.heads = nn.ModuleList(nn.Conv3d(ch[i], n_classes, 1) for i in range(n - 1))

    @property
    def divisor(self) -> list[int]:
        """Input sizes must be multiples of these (the product of the strides per axis)."""
        out = [1, 1, 1]
        for s in self.strides:
            out = [a * b for a, b in zip(out, s)]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """x [B, C_in, X, Y, Z] -> logits [B, K, X, Y, Z] (training: a list, full resolution first)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"MambaClinix expects [B, {self.in_channels}, X, Y, Z]; got {tuple(x.shape)}")
        div = self.divisor
        if any(s % d for s, d in zip(x.shape[2:], div)):
            raise ValueError(f"MambaClinix input size {tuple(x.shape[2:])} must be a multiple of {tuple(div)} "
                             "per axis (the stride product); pad it or change the patch size")
        h = self.stem(x)
        skips = []
        for down, block in zip(self.down, self.blocks):
            h = block(down(h))
            skips.append(h)
        outs = []
        for i in range(len(self.up) - 1, -1, -1):
            h = self.dec[i](torch.cat([self.up[i](h), skips[i]], 1))
            if self.training and self.deep_supervision or i == 0:
                outs.append(self.heads[i](h))
        if self.training and self.deep_supervision:
            return outs[::-1]
        return outs[-1]


@register_model("medseg_unet")
def monai_unet(in_channels: int = 1, n_classes: int = 2,
               strides: Sequence[Sequence[int]] = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)),
               kernels: Sequence[Sequence[int]] | None = None, features: int = 16, max_features: int = 256,
               res_units: int = 2) -> nn.Module:
    """MONAI's residual ``UNet`` on the same plan (stage strides and channels): [B, C, *S] -> [B, K, *S]."""
    from monai.networks.nets import UNet

    ch = [min(features * 2**i, max_features) for i in range(len(strides))]
    net = UNet(spatial_dims=3, in_channels=in_channels, out_channels=n_classes, channels=ch,
               strides=[tuple(s) for s in strides[1:]], num_res_units=res_units, norm="INSTANCE")
    net.divisor = [int(torch.tensor([s[i] for s in strides]).prod()) for i in range(3)]
    return net


@register_model("medseg_swinunetr")
def monai_swinunetr(in_channels: int = 1, n_classes: int = 2, swin_features: int = 24,
                    swin_depths: Sequence[int] = (2, 2, 2, 2)) -> nn.Module:
    """MONAI's ``SwinUNETR`` (input sizes multiples of 32): [B, C, *S] -> [B, K, *S]."""
    from monai.networks.nets import SwinUNETR

    if swin_features % 12:
        raise ValueError(f"SwinUNETR needs swin_features divisible by 12; got {swin_features}")
    net = SwinUNETR(in_channels=in_channels, out_channels=n_classes, feature_size=swin_features,
                    depths=tuple(swin_depths), spatial_dims=3)
    net.divisor = [32, 32, 32]
    return net


__all__ = ["ConvNormAct", "MambaClinix", "ResidualBlock", "monai_swinunetr", "monai_unet"]
