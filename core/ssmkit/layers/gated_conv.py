"""Gated convolution blocks: SCSegamba's GBC and the hierarchical g^n convolution (HorNet/MambaClinix).

Both blocks model spatial interactions with *multiplicative* gates: a feature map is multiplied
elementwise by another, learned feature map, so the block computes products of (local) inputs
that a stack of linear convolutions and pointwise nonlinearities only approximates.

- :class:`GBC` (gated bottleneck convolution, SCSegamba): two depthwise-separable bottleneck
  branches, one of them the gate, multiplied together, projected back, plus a residual. 2D.
- :class:`GnConv`: the recursive g^n gated convolution of HorNet. ``order`` gating steps raise
  the interaction order of the output in the input to ``order + 1``. 2D and 3D (``spatial_dims``).
- :class:`HGConv`: the residual block MambaClinix builds around ``GnConv`` (norm -> g^n conv ->
  residual, norm -> MLP -> residual). MambaClinix's published code *adds* the gate where the
  HorNet paper multiplies; we multiply, as the paper does, and a test checks it.

Inputs are channels-first: [B, C, H, W] (2D) or [B, C, D, H, W] (3D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.registry import register_block

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}


def _check_spatial_dims(spatial_dims: int) -> int:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def _check_input(x: torch.Tensor, channels: int, spatial_dims: int, who: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
    layout = "[B, C, H, W]" if spatial_dims == 2 else "[B, C, D, H, W]"
    if x.dim() != spatial_dims + 2 or x.shape[1] != channels:
        raise ValueError(f"{who} expects input {layout} with C={channels}, got shape {tuple(x.shape)}")


# torch.fx.symbolic_trace records the check as one call instead of evaluating it on a Proxy
# (bool(proxy) raises), so GBC, GnConv and HGConv trace with their input checks kept.
torch.fx.wrap("_check_input")


def _check_kernel(kernel_size: int) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int (same padding), got {kernel_size!r}")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a channels-first map [B, C, *spatial].

    Normalising per position (not over the whole map as GroupNorm(1, C) would) keeps the block
    free of global statistics, so a local block stays local and batch size never matters.
    """

    def __init__(self, channels: int, eps: float = 1e-6, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.movedim(1, -1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)


class BottleneckConv(nn.Module):
    """Depthwise-separable bottleneck: 1x1 conv C_in -> C_mid, k x k depthwise, 1x1 C_mid -> C_out.

    Input [B, C_in, H, W], output [B, C_out, H, W]. Squeezing to C_mid before the spatial conv
    is what keeps GBC light (SCSegamba uses C_mid = C / 8).
    """

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int, kernel_size: int,
                 spatial_dims: int = 2, bias: bool = True, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        _check_kernel(kernel_size)
        conv = _CONV[_check_spatial_dims(spatial_dims)]
        kw = {"device": device, "dtype": dtype}
        self.reduce = conv(in_channels, mid_channels, 1, bias=bias, **kw)
        self.depthwise = conv(mid_channels, mid_channels, kernel_size, padding=kernel_size // 2,
                              groups=mid_channels, bias=False, **kw)
        self.expand = conv(mid_channels, out_channels, 1, bias=False, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.depthwise(self.reduce(x)))


@register_block("gbc")
class GBC(NoWeightDecay, nn.Module):
    """Gated bottleneck convolution (SCSegamba), 2D.

    ``y = x + act(norm(P(m(x) * g(x))))`` where the main branch ``m`` is two k x k bottleneck
    convs, the gate branch ``g`` a 1 x 1 bottleneck conv, and ``P`` a 1 x 1 bottleneck
    projection. The elementwise product lets the block express products of neighbouring
    pixels (e.g. "same colour?"), which additive blocks cannot do in one layer.

    Args:
        d_model: channels C.
        bottleneck_ratio: C_mid = max(C // bottleneck_ratio, min_mid_channels).
        min_mid_channels: floor on C_mid, so tiny models keep some width.
        kernel_size: spatial size of the main branch's depthwise convs (odd).
        norm: "batch" (default; on the "neighbouring pixels, same colour?" task of the tests it
            converged for every seed tried, where the per-position LayerNorm variant stalled at
            chance for some), "group" (GroupNorm, batch-size independent) or "layer"
            (per-position channel LayerNorm).

    Shapes: input [B, C, H, W] -> output [B, C, H, W].
    """

    input_kind = "image2d"

    def __init__(self, d_model: int = 16, bottleneck_ratio: int = 8, min_mid_channels: int = 4,
                 kernel_size: int = 3, norm: str = "batch", device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"d_model must be a positive int, got {d_model!r}")
        if bottleneck_ratio < 1:
            raise ValueError(f"bottleneck_ratio must be >= 1, got {bottleneck_ratio!r}")
        self.d_model = d_model
        mid = max(d_model // bottleneck_ratio, min_mid_channels)

        if norm not in ("batch", "group", "layer"):
            raise ValueError(f"norm must be 'batch', 'group' or 'layer', got {norm!r}")

        kw = {"device": device, "dtype": dtype}

        def make_norm() -> nn.Module:
            if norm == "batch":
                return nn.BatchNorm2d(d_model, **kw)
            if norm == "group":
                return nn.GroupNorm(math.gcd(d_model, 4), d_model, **kw)
            return ChannelLayerNorm(d_model, **kw)

        def stage(k: int) -> nn.Sequential:
            return nn.Sequential(BottleneckConv(d_model, d_model, mid, k, **kw), make_norm(), nn.ReLU())

        self.main = nn.Sequential(stage(kernel_size), stage(kernel_size))
        self.gate = stage(1)
        self.proj = stage(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> [B, C, H, W]."""
        _check_input(x, self.d_model, 2, "GBC")
        return x + self.proj(self.main(x) * self.gate(x))


class GnConv(nn.Module):
    """Recursive gated convolution g^n (HorNet), for 2D or 3D maps.

    A 1 x 1 conv splits the input into ``p_0`` (C / 2^(n-1) channels) and gate features
    ``q_0..q_{n-1}`` (C / 2^(n-1), ..., C / 2, C channels), which all pass through one k^d
    depthwise conv. Then ``p_{k+1} = W_k(p_k) * q_k`` for k = 0..n-1 and ``y = W_out(p_n)``.
    Every step multiplies (the paper's Eq. 3/4); MambaClinix's released code adds instead,
    which makes the block a plain convolution and loses the high-order interactions.

    Args:
        d_model: channels C, divisible by 2^(order-1).
        order: n, the number of gating steps (interaction order n + 1).
        kernel_size: depthwise kernel size (odd).
        spatial_dims: 2 ([B, C, H, W]) or 3 ([B, C, D, H, W]).
        scale: multiplies the depthwise output; HorNet uses 1/3 to keep the n-fold product tame.

    Shapes: input [B, C, *spatial] -> output [B, C, *spatial].
    """

    def __init__(self, d_model: int = 16, order: int = 3, kernel_size: int = 7, spatial_dims: int = 2,
                 scale: float = 1.0 / 3.0, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        _check_kernel(kernel_size)
        if not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be a positive int, got {order!r}")
        if not isinstance(d_model, int) or d_model < 1 or d_model % (2 ** (order - 1)) != 0:
            raise ValueError(f"d_model must be a positive multiple of 2**(order-1)={2 ** (order - 1)} "
                             f"for order={order}, got {d_model!r}")
        conv = _CONV[spatial_dims]
        self.d_model, self.order, self.spatial_dims, self.scale = d_model, order, spatial_dims, scale
        # Channel widths grow geometrically so the cheap early steps are narrow (HorNet §3.1).
        self.dims = [d_model // 2 ** i for i in range(order)][::-1]
        kw = {"device": device, "dtype": dtype}
        self.proj_in = conv(d_model, self.dims[0] + sum(self.dims), 1, **kw)
        self.dwconv = conv(sum(self.dims), sum(self.dims), kernel_size, padding=kernel_size // 2,
                           groups=sum(self.dims), **kw)
        self.pws = nn.ModuleList(conv(self.dims[i], self.dims[i + 1], 1, **kw) for i in range(order - 1))
        self.proj_out = conv(d_model, d_model, 1, **kw)

    def interaction(self, x: torch.Tensor) -> torch.Tensor:
        """The gated product p_n before the output projection, [B, C, *spatial]."""
        # Indexing instead of unpacking the splits keeps the method traceable by torch.fx.
        pq = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        gates = torch.split(self.dwconv(pq[1]) * self.scale, self.dims, dim=1)
        p = pq[0] * gates[0]
        for i, pw in enumerate(self.pws):
            p = pw(p) * gates[i + 1]
        return p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, *spatial] -> [B, C, *spatial]."""
        _check_input(x, self.d_model, self.spatial_dims, "GnConv")
        return self.proj_out(self.interaction(x))


@register_block("hgconv")
class HGConv(NoWeightDecay, nn.Module):
    """Hierarchical gated convolution block (HorNet block, as MambaClinix's HGCN stage uses it).

    ``x = x + gamma_1 * GnConv(norm(x))``; then, if ``mlp_ratio > 0``,
    ``x = x + gamma_2 * MLP(norm(x))`` with a 1 x 1-conv MLP. The gating inside
    :class:`GnConv` is multiplicative.

    Args:
        d_model: channels C (a multiple of 2^(order-1)).
        order, kernel_size, scale: see :class:`GnConv`.
        spatial_dims: 2 ([B, C, H, W]) or 3 ([B, C, D, H, W]).
        mlp_ratio: hidden width of the MLP as a multiple of C; 0 drops the MLP.
        layer_scale_init: initial value of the per-channel residual scales gamma.

    Shapes: input [B, C, *spatial] -> output [B, C, *spatial].
    """

    input_kind = "image2d"  # the default; an instance built with spatial_dims=3 says "volume3d"

    def __init__(self, d_model: int = 16, order: int = 3, kernel_size: int = 7, spatial_dims: int = 2,
                 mlp_ratio: float = 2.0, layer_scale_init: float = 1.0, scale: float = 1.0 / 3.0,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if mlp_ratio < 0:
            raise ValueError(f"mlp_ratio must be >= 0, got {mlp_ratio!r}")
        kw = {"device": device, "dtype": dtype}
        self.gnconv = GnConv(d_model, order, kernel_size, spatial_dims, scale, **kw)
        self.d_model, self.spatial_dims = d_model, spatial_dims
        self.input_kind = "image2d" if spatial_dims == 2 else "volume3d"
        self.norm1 = ChannelLayerNorm(d_model, **kw)
        self.gamma1 = nn.Parameter(torch.full((d_model,), float(layer_scale_init), **kw))
        self.mlp: nn.Module | None = None
        if mlp_ratio > 0:
            conv, hidden = _CONV[spatial_dims], max(1, int(round(d_model * mlp_ratio)))
            self.norm2 = ChannelLayerNorm(d_model, **kw)
            self.mlp = nn.Sequential(conv(d_model, hidden, 1, **kw), nn.GELU(), conv(hidden, d_model, 1, **kw))
            self.gamma2 = nn.Parameter(torch.full((d_model,), float(layer_scale_init), **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, *spatial] -> [B, C, *spatial]."""
        _check_input(x, self.d_model, self.spatial_dims, "HGConv")
        view = (1, -1) + (1,) * self.spatial_dims
        x = x + self.gamma1.view(view) * self.gnconv(self.norm1(x))
        if self.mlp is not None:
            x = x + self.gamma2.view(view) * self.mlp(self.norm2(x))
        return x


__all__ = ["BottleneckConv", "ChannelLayerNorm", "GBC", "GnConv", "HGConv"]
