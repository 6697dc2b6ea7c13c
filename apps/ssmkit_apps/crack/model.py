"""SCSegamba: a light structure-aware vision Mamba for pixel-level crack segmentation.

Data flow for an RGB image [B, 3, H, W] in [0, 1] (H, W padded to a multiple of 8 inside
``forward`` and the output cropped back):

    normalise -> PatchEmbed (3 strided convs)              [B, C, H/8, W/8]
    n_layers x SAVSSLayer:                                 [B, C, H/8, W/8]
        GBC -> GBC                    (core gated bottleneck conv: crack morphology)
        LayerNorm -> SS2D(sass)       (core selective scan along SCSegamba's 4 paths)
        PAF(x, mixed)                 (a sigmoid-gated blend of the conv and scan features)
        GroupNorm, then a residual channel mix
    four taps (evenly spaced layers) -> MFS decoder:
        tap k: 1x1 bottleneck to C / 2^(k+1) channels, bilinear x2^k, 1x1 to E channels,
               learned dynamic upsampling x2^(3-k) to full resolution
        concat 4E -> GBC -> 1x1 bottleneck to E -> 1x1 to one logit   [B, 1, H, W]

The model has no positional embedding: crack appearance does not depend on where a crack
lies in the frame, and without one the same weights run on any tile size (tiled inference).
Variants (timm-style, ``create_model``): ``scsegamba_tiny`` (tests, demo),
``scsegamba`` (C=256, four layers, 2.9M parameters; the paper reports 2.8M) and ``scsegamba_large``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.layers.gated_conv import GBC, BottleneckConv
from ssmkit.layers.ss2d import SS2D, drop_path
from ssmkit.registry import register_model

# The images the model sees are [0, 1] RGB; this fixed affine map centres them. Kept inside the
# model so training, evaluation and inference can never disagree on it.
PIXEL_MEAN, PIXEL_STD = 0.5, 0.25


def _groups(channels: int, per_group: int = 16) -> int:
    """A GroupNorm group count that divides ``channels`` (about ``per_group`` channels each)."""
    g = max(1, channels // per_group)
    while channels % g:
        g -= 1
    return g


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad [B, C, H, W] on the bottom/right to multiples of ``multiple``; returns (x, (H, W))."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        # Reflection needs the pad to be smaller than the side; tiny inputs fall back to replication.
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def _check_image(x: torch.Tensor, owner: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{owner} expects RGB images [B, 3, H, W] in [0, 1]; got {got}")


class PatchEmbed(nn.Module):
    """Three stride-2 3x3 convs: [B, 3, H, W] -> [B, C, H/8, W/8] (one token per 8x8 patch).

    ``features(x)`` also returns the two intermediate maps (strides 2 and 4), which the
    decoder's stem skips use.
    """

    def __init__(self, channels: int, in_channels: int = 3):
        super().__init__()
        c1, c2 = max(channels // 8, 8), max(channels // 4, 8)
        self.widths = (c1, c2)
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, c1, 3, 2, 1, bias=False), nn.BatchNorm2d(c1), nn.GELU())
        self.stage2 = nn.Sequential(nn.Conv2d(c1, c2, 3, 2, 1, bias=False), nn.BatchNorm2d(c2), nn.GELU())
        self.stage3 = nn.Conv2d(c2, channels, 3, 2, 1)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens [B, C, H/8, W/8], stride-4 map [B, c2, H/4, W/4], stride-2 map [B, c1, H/2, W/2])."""
        f2 = self.stage1(x)
        f4 = self.stage2(f2)
        return self.stage3(f4), f4, f2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]


class PAF(nn.Module):
    """Pixel-attention fusion of a base map and a guidance map, both [B, C, H, W].

    Both maps are squeezed to ``mid`` channels by one shared 1x1 bottleneck; their product,
    expanded back to C channels, gives a per-pixel, per-channel gate ``s`` in (0, 1), and the
    output is ``(1 - s) * base + s * guidance``: where the two agree the scan's long-range
    evidence wins, elsewhere the local conv features are kept.
    """

    def __init__(self, channels: int, mid: int | None = None, bottleneck: int = 16):
        super().__init__()
        mid = mid or max(channels // 2, 1)
        b = min(bottleneck, mid)
        self.squeeze = nn.Sequential(BottleneckConv(channels, mid, b, 1), nn.BatchNorm2d(mid))
        self.expand = nn.Sequential(BottleneckConv(mid, channels, b, 1), nn.BatchNorm2d(channels))

    def forward(self, base: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        if guidance.shape[-2:] != base.shape[-2:]:
            guidance = F.interpolate(guidance, size=base.shape[-2:], mode="bilinear", align_corners=False)
        gate = torch.sigmoid(self.expand(self.squeeze(base) * self.squeeze(guidance)))
        return (1 - gate) * base + gate * guidance


class SAVSSLayer(nn.Module):
    """Structure-aware visual state-space layer: [B, C, h, w] -> [B, C, h, w].

    GBC twice (local morphology), then the SS2D mixer scanning SCSegamba's four
    structure-aware paths (``sass``), fused with its input by :class:`PAF`, normalised, and
    finished by a residual 1x1 channel mix.
    """

    def __init__(self, channels: int, d_state: int = 16, expand: float = 2.0, drop_path: float = 0.0,
                 backend: str = "auto", gbc_norm: str = "batch"):
        super().__init__()
        self.gbc = nn.Sequential(GBC(channels, norm=gbc_norm), GBC(channels, norm=gbc_norm))
        self.norm = nn.LayerNorm(channels)
        # One x_proj/dt_proj shared by the four paths, as in the published SAVSS; each path keeps
        # its own A and D.
        self.mixer = SS2D(channels, d_state=d_state, expand=expand, strategy="sass", channels_last=True,
                          share_proj=True, bias=True, backend=backend)
        self.drop_path = float(drop_path)
        self.fuse = PAF(channels)
        self.norm_fused = nn.GroupNorm(_groups(channels), channels)
        self.norm_mix = nn.GroupNorm(_groups(channels), channels)
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gbc(x)
        mixed = self.mixer(self.norm(x.movedim(1, -1))).movedim(-1, 1)
        mixed = drop_path(mixed, self.drop_path, self.training)
        y = self.norm_fused(self.fuse(x, mixed))
        return y + self.mix(self.norm_mix(y))


class DynamicUpsample(nn.Module):
    """Content-aware upsampling by ``scale`` (DySample-style point sampling): [B, C, h, w] ->
    [B, C, h*scale, w*scale].

    A 1x1 conv predicts, for every output pixel, an offset (in input pixels) of the point it
    samples; ``grid_sample`` reads the input there bilinearly. The offset conv starts at zero,
    so a fresh layer is exactly bilinear upsampling (``align_corners=False``); training bends
    the sampling points toward the thin structures they should sharpen.
    """

    def __init__(self, channels: int, scale: int, offset_range: float = 0.25):
        super().__init__()
        if scale < 1:
            raise ValueError(f"DynamicUpsample scale must be >= 1; got {scale}")
        self.scale, self.offset_range = scale, offset_range
        self.offset = nn.Conv2d(channels, 2 * scale * scale, 1) if scale > 1 else None  # x1 is the identity
        if self.offset is not None:
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale
        if self.offset is None:
            return x
        b, _, h, w = x.shape
        # [B, 2, sH, sW] offsets in input-pixel units, bounded so neighbours cannot swap places.
        off = F.pixel_shuffle(torch.tanh(self.offset(x)) * self.offset_range, s)
        ys = (torch.arange(h * s, device=x.device, dtype=torch.float32) + 0.5) / s - 0.5
        xs = (torch.arange(w * s, device=x.device, dtype=torch.float32) + 0.5) / s - 0.5
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        px = gx[None] + off[:, 0].float()
        py = gy[None] + off[:, 1].float()
        # grid_sample's normalised coordinates with align_corners=False: -1 is the left edge.
        grid = torch.stack(((px + 0.5) * 2 / w - 1, (py + 0.5) * 2 / h - 1), dim=-1)
        return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


class MFS(nn.Module):
    """Multi-scale feature segmentation head: four [B, C, h, w] taps -> [B, 1, 8h, 8w] logits.

    Tap k (k = 0 for the earliest) is squeezed to C / 2^(k+1) channels, taken bilinearly to
    stride 8 / 2^k, projected to ``embed`` channels and upsampled to full resolution by a
    learned :class:`DynamicUpsample` (x8, x4, x2, x1): early taps keep coarse context, late
    taps fine detail. The four are fused by a GBC and a 1x1 bottleneck into one logit map.

    ``skip_channels`` (stem skips): taps 1, 2, 3 also add a 1x1 projection of a map of their own
    stride from before the patch embedding's last conv (stride 4, stride 2, and the image itself
    through one 3x3 conv). The published head reaches full resolution from stride-8 tokens
    alone; the skips hand it pixel-level evidence, which a model trained for minutes needs to
    place a one-pixel crack (``skip_channels=None`` is the published head).
    """

    def __init__(self, channels: int, embed: int = 8, dropout: float = 0.1, gbc_norm: str = "batch",
                 skip_channels: tuple[int, int, int] | None = None):
        super().__init__()
        self.squeeze = nn.ModuleList()
        self.project = nn.ModuleList()
        self.upsample = nn.ModuleList()
        self.skips = None
        if skip_channels is not None:
            self.skips = nn.ModuleList([nn.Conv2d(skip_channels[0], embed, 1), nn.Conv2d(skip_channels[1], embed, 1),
                                        nn.Conv2d(skip_channels[2], embed, 3, padding=1)])
        for k in range(4):
            c = max(channels // 2 ** (k + 1), 4)
            self.squeeze.append(nn.Sequential(BottleneckConv(channels, c, max(c // 4, 1), 1),
                                              nn.GroupNorm(_groups(c, 16 if c >= 32 else 8), c)))
            self.project.append(nn.Conv2d(c, embed, 1))
            self.upsample.append(DynamicUpsample(embed, 2 ** (3 - k)))
        self.fuse_gbc = GBC(4 * embed, norm=gbc_norm)
        self.fuse = BottleneckConv(4 * embed, embed, max(embed // 2, 1), 1)
        self.dropout = nn.Dropout(dropout)
        self.pred = nn.Conv2d(embed, 1, 1)

    def forward(self, taps: list[torch.Tensor], skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        """taps: four [B, C, h, w]; skips (with stem skips): maps at strides 4, 2, 1 -> [B, 1, 8h, 8w]."""
        outs = []
        for k, t in enumerate(taps):
            f = self.squeeze[k](t)
            if k:
                f = F.interpolate(f, scale_factor=2**k, mode="bilinear", align_corners=False)
            f = self.project[k](f)
            if self.skips is not None and k:
                if skips is None:
                    raise ValueError("this MFS head was built with stem skips; pass the stride 4, 2, 1 maps")
                f = f + self.skips[k - 1](skips[k - 1])
            outs.append(self.upsample[k](f))
        h = self.fuse(self.fuse_gbc(torch.cat(outs, dim=1)))
        return self.pred(self.dropout(h))


class SCSegamba(nn.Module):
    """Crack segmentation network: RGB [B, 3, H, W] in [0, 1] -> crack logits [B, 1, H, W].

    Args:
        channels: C, the token width of every SAVSS layer (256 in the published model).
        n_layers: SAVSS layers (>= 4; the decoder taps four evenly spaced ones).
        d_state: SSM state size N of the SS2D mixers. expand: their inner width Di = expand * C.
        embed: per-tap channels of the MFS decoder.
        drop_path: stochastic-depth rate, growing linearly to this value over the layers.
        backend: selective-scan backend of the mixers ("auto" | "reference" | "chunked" | "triton").
        stem_skips: feed the decoder the patch embedding's stride-4 and stride-2 maps and the
            image (see :class:`MFS`); False is the published decoder.
    """

    size_multiple = 8  # the patch size: inputs are padded to it inside forward

    def __init__(self, channels: int = 256, n_layers: int = 4, d_state: int = 16, expand: float = 2.0,
                 embed: int = 8, drop_path: float = 0.1, dropout: float = 0.1, backend: str = "auto",
                 stem_skips: bool = True):
        super().__init__()
        if not isinstance(n_layers, int) or n_layers < 4:
            raise ValueError(f"SCSegamba n_layers must be an int >= 4 (the decoder taps four layers); got {n_layers!r}")
        if not isinstance(channels, int) or channels < 8 or channels % 8:
            raise ValueError(f"SCSegamba channels must be a multiple of 8 (>= 8); got {channels!r}")
        self.channels, self.n_layers = channels, n_layers
        self.embed = PatchEmbed(channels)
        rates = [drop_path * i / max(n_layers - 1, 1) for i in range(n_layers)]
        self.layers = nn.ModuleList(SAVSSLayer(channels, d_state, expand, r, backend) for r in rates)
        self.taps = [round((k + 1) * n_layers / 4) - 1 for k in range(4)]
        c1, c2 = self.embed.widths
        self.stem_skips = bool(stem_skips)
        self.head = MFS(channels, embed, dropout, skip_channels=(c2, c1, 3) if self.stem_skips else None)
        # The mask threshold chosen on the validation split (the crack app sets it); saved with
        # the weights so inference uses the threshold of the checkpoint it loads.
        self.register_buffer("threshold", torch.tensor(0.5))

    def example_input(self, batch: int = 2, size: int = 32) -> torch.Tensor:
        return torch.rand(batch, 3, size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> logits [B, 1, H, W] (any H, W; padded to multiples of 8 inside)."""
        _check_image(x, "SCSegamba")
        x, (h, w) = pad_to_multiple((x - PIXEL_MEAN) / PIXEL_STD, self.size_multiple)
        t, f4, f2 = self.embed.features(x)
        taps = []
        for i, layer in enumerate(self.layers):
            t = layer(t)
            if i in self.taps:
                taps.append(t)
        return self.head(taps, [f4, f2, x] if self.stem_skips else None)[..., :h, :w]


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """The U-Net baseline: RGB [B, 3, H, W] in [0, 1] -> crack logits [B, 1, H, W].

    Four 2x poolings with double 3x3 conv blocks (widths ``base * [1, 2, 4, 8, 16]``, the
    bottleneck halved as in the bilinear U-Net), bilinear upsampling and skip concatenation.
    ``base=30`` gives the parameter count of the default SCSegamba (2.9M).
    """

    size_multiple = 16

    def __init__(self, base: int = 30, depth: int = 4):
        super().__init__()
        if not isinstance(base, int) or base < 2:
            raise ValueError(f"UNet base must be an int >= 2; got {base!r}")
        if not isinstance(depth, int) or not 1 <= depth <= 6:
            raise ValueError(f"UNet depth must be an int in 1..6; got {depth!r}")
        self.size_multiple = 2**depth
        widths = [base * 2**i for i in range(depth + 1)]
        widths[-1] //= 2  # bilinear upsampling keeps the channels, so the bottleneck matches its skip
        self.inc = _DoubleConv(3, widths[0])
        self.down = nn.ModuleList(_DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            below = widths[i + 1] if i == depth - 1 else widths[i + 1] // 2
            out = widths[i] // 2 if i else widths[0]
            self.up.append(_DoubleConv(below + widths[i], out))
        self.out = nn.Conv2d(widths[0], 1, 1)
        self.register_buffer("threshold", torch.tensor(0.5))  # chosen on validation, as in SCSegamba

    def example_input(self, batch: int = 2, size: int = 32) -> torch.Tensor:
        return torch.rand(batch, 3, size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> logits [B, 1, H, W] (any H, W; padded inside)."""
        _check_image(x, "UNet")
        x, (h, w) = pad_to_multiple((x - PIXEL_MEAN) / PIXEL_STD, self.size_multiple)
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for block in self.up:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([skip, y], dim=1))
        return self.out(y)[..., :h, :w]


# ------------------------------------------------------------------------------- variants


# Explicit signatures (no **kwargs), so create_model names the closest valid argument on a typo.


@register_model("scsegamba_tiny")
def scsegamba_tiny(*, channels: int = 32, n_layers: int = 4, d_state: int = 8, expand: float = 2.0, embed: int = 8,
                   drop_path: float = 0.1, dropout: float = 0.1, backend: str = "auto",
                   stem_skips: bool = True) -> SCSegamba:
    """C=32, 4 layers, N=8 (73k parameters): the CPU budget of the demo and configs/default.yaml."""
    return SCSegamba(channels, n_layers, d_state, expand, embed, drop_path, dropout, backend, stem_skips)


@register_model("scsegamba")
def scsegamba(*, channels: int = 256, n_layers: int = 4, d_state: int = 16, expand: float = 2.0, embed: int = 8,
              drop_path: float = 0.1, dropout: float = 0.1, backend: str = "auto",
              stem_skips: bool = True) -> SCSegamba:
    """The published size: C=256, 4 layers, N=16 (2.94M parameters here; the paper reports 2.8M)."""
    return SCSegamba(channels, n_layers, d_state, expand, embed, drop_path, dropout, backend, stem_skips)


@register_model("scsegamba_large")
def scsegamba_large(*, channels: int = 320, n_layers: int = 8, d_state: int = 16, expand: float = 2.0, embed: int = 8,
                    drop_path: float = 0.1, dropout: float = 0.1, backend: str = "auto",
                   stem_skips: bool = True) -> SCSegamba:
    """C=320, 8 layers, N=16 (8.7M parameters)."""
    return SCSegamba(channels, n_layers, d_state, expand, embed, drop_path, dropout, backend, stem_skips)


@register_model("crack_unet_tiny")
def crack_unet_tiny(*, base: int = 5, depth: int = 4) -> UNet:
    """The U-Net baseline at base width 5 (82k parameters; scsegamba_tiny has 73k)."""
    return UNet(base, depth)


@register_model("crack_unet")
def crack_unet(*, base: int = 30, depth: int = 4) -> UNet:
    """The U-Net baseline at base width 30 (2.94M parameters, as scsegamba)."""
    return UNet(base, depth)


@register_model("crack_unet_large")
def crack_unet_large(*, base: int = 52, depth: int = 4) -> UNet:
    """The U-Net baseline at base width 52 (8.8M parameters; scsegamba_large has 8.7M)."""
    return UNet(base, depth)


VARIANTS = {"scsegamba": {"tiny": "scsegamba_tiny", "default": "scsegamba", "large": "scsegamba_large"},
            "unet": {"tiny": "crack_unet_tiny", "default": "crack_unet", "large": "crack_unet_large"}}


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gflops(model: nn.Module, size: int = 512, batch: int = 1, device: torch.device | str = "cpu") -> float:
    """Forward GFLOPs of one [batch, 3, size, size] input, counted by ``torch.utils.flop_counter``
    (multiply-adds count as two FLOPs; matmuls and convolutions only, so the selective scan's own
    elementwise recurrence is not in it)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, 3, size, size, device=device)
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was)
    return counter.get_total_flops() / 1e9 / batch


__all__ = ["MFS", "PAF", "DynamicUpsample", "PatchEmbed", "SAVSSLayer", "SCSegamba", "UNet", "VARIANTS", "gflops",
           "pad_to_multiple", "param_count"]
