"""vGamba's Gamba cell and Gamba bottleneck block: a 2D SSM half and an attention half, gated together.

:class:`GambaCell` splits the channels of a [B, C, H, W] map in two:

- the SSM half runs through :class:`ssmkit.layers.ss2d.SS2D` (a 2D selective scan over the
  chosen scan strategy, cross-scan by default) and is gated by a sigmoid convolution of its own
  input, so the gate can shut the global path off where local evidence says so;
- the attention half runs through multi-head self-attention over the H*W tokens, with a learned
  register token prepended (a sink for attention mass that no pixel must absorb) and a depthwise
  conv position encoding (attention alone is blind to where a token sits);
- a gated fusion module weighs the two halves per pixel and channel and mixes them back to C.

:class:`GambaBlock` is the bottleneck around it (1x1 reduce, cell, 1x1 expand, residual), the
unit vGamba stacks in place of a ResNet bottleneck.
"""

from __future__ import annotations

import torch
from torch import nn

from ssmkit.layers.ss2d import SS2D
from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.registry import register_block


def _check_map(x: object, channels: int, who: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{who} expects input [B, C, H, W] with C={channels}, got shape {tuple(x.shape)}")
    return x


def _auto_heads(width: int) -> int:
    """Most heads (up to 8) that keep a head at least 16 channels wide; 1 for narrow widths."""
    return next((h for h in (8, 4, 2) if width % h == 0 and width // h >= 16), 1)


class RegisterAttention2d(nn.Module):
    """Multi-head self-attention over the pixels of [B, C, H, W] with ``num_registers`` register tokens.

    Pre-norm, residual: ``x + MHSA(LN([registers; tokens]))[registers dropped]``. The registers
    are learned tokens that every pixel can attend to; they are dropped at the output.
    """

    def __init__(self, channels: int, n_heads: int | None = None, num_registers: int = 1,
                 dropout: float = 0.0, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        n_heads = _auto_heads(channels) if n_heads is None else n_heads
        if not isinstance(n_heads, int) or n_heads < 1 or channels % n_heads:
            raise ValueError(f"n_heads must be a positive divisor of the attention width {channels}, got {n_heads!r}")
        if not isinstance(num_registers, int) or num_registers < 0:
            raise ValueError(f"num_registers must be a non-negative int, got {num_registers!r}")
        self.channels, self.num_registers = channels, num_registers
        kw = {"device": device, "dtype": dtype}
        self.pos = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, **kw)
        self.registers = nn.Parameter(torch.randn(1, num_registers, channels, **kw) * 0.02)
        self.registers._no_weight_decay = True  # a learned token, like timm's cls_token
        self.norm = nn.LayerNorm(channels, **kw)
        self.attn = nn.MultiheadAttention(channels, n_heads, dropout=dropout, batch_first=True, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> [B, C, H, W]."""
        Bsz, C, H, W = x.shape
        x = x + self.pos(x)
        tokens = x.flatten(2).transpose(1, 2)  # [B, H*W, C]
        seq = torch.cat((self.registers.expand(Bsz, -1, -1).to(tokens.dtype), tokens), dim=1)
        h = self.norm(seq)
        out = seq + self.attn(h, h, h, need_weights=False)[0]
        return out[:, self.num_registers:].transpose(1, 2).reshape(Bsz, C, H, W)


@register_block("gamba_cell")
class GambaCell(NoWeightDecay, nn.Module):
    """Gamba cell: half the channels through a gated 2D SSM, half through MHSA, gated fusion.

    ``s = SS2D(x_s) * sigmoid(conv(x_s))``, ``t = RegisterAttention(x_t)`` for
    ``[x_s, x_t] = split(x)``; ``z = [s, t]``; ``y = W_out(sigmoid(W_g z) * z)``.

    Args:
        d_model: channels C (>= 2); the SSM half gets C // 2, attention the rest.
        d_state, expand: of the SS2D mixer. strategy: its scan strategy (a registered name).
        n_heads: attention heads (default: most heads of width >= 16, at most 8).
        num_registers: register tokens of the attention half.
        gate_kernel: kernel of the sigmoid gate conv of the SSM half (odd).
        backend: selective-scan backend of SS2D.

    Shapes: input [B, C, H, W] -> output [B, C, H, W].
    """

    input_kind = "image2d"

    def __init__(self, d_model: int = 16, d_state: int = 8, expand: float = 2.0, strategy: str = "cross",
                 n_heads: int | None = None, num_registers: int = 1, gate_kernel: int = 3,
                 backend: str = "auto", device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(d_model, int) or d_model < 2:
            raise ValueError(f"GambaCell d_model must be an int >= 2 (it is split in two), got {d_model!r}")
        if not isinstance(gate_kernel, int) or gate_kernel < 1 or gate_kernel % 2 == 0:
            raise ValueError(f"GambaCell gate_kernel must be an odd positive int, got {gate_kernel!r}")
        self.d_model = d_model
        self.d_ssm = d_model // 2
        self.d_attn = d_model - self.d_ssm
        kw = {"device": device, "dtype": dtype}
        self.ssm = SS2D(self.d_ssm, d_state=d_state, expand=expand, strategy=strategy, spatial_dims=2,
                        backend=backend, **kw)
        self.ssm_gate = nn.Conv2d(self.d_ssm, self.d_ssm, gate_kernel, padding=gate_kernel // 2, **kw)
        self.attn = RegisterAttention2d(self.d_attn, n_heads, num_registers, **kw)
        self.fuse_gate = nn.Conv2d(d_model, d_model, 1, **kw)
        self.fuse_out = nn.Conv2d(d_model, d_model, 1, **kw)

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two halves' outputs before fusion: s [B, C//2, H, W], t [B, C - C//2, H, W]."""
        x_s, x_t = torch.split(x, (self.d_ssm, self.d_attn), dim=1)
        s = self.ssm(x_s) * torch.sigmoid(self.ssm_gate(x_s))
        return s, self.attn(x_t)

    def fuse(self, s: torch.Tensor, t: torch.Tensor, return_gates: bool = False):
        """Gated fusion of the halves: [B, C//2, H, W] and [B, C - C//2, H, W] -> [B, C, H, W]."""
        z = torch.cat((s, t), dim=1)
        g = torch.sigmoid(self.fuse_gate(z))
        y = self.fuse_out(g * z)
        return (y, g) if return_gates else y

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        """x [B, C, H, W] -> [B, C, H, W] (and the fusion gate [B, C, H, W] if ``return_gates``)."""
        _check_map(x, self.d_model, "GambaCell")
        return self.fuse(*self.branches(x), return_gates=return_gates)


@register_block("gamba_block")
class GambaBlock(NoWeightDecay, nn.Module):
    """Gamba bottleneck block: ``x + N3(W3(act(N2(Cell(act(N1(W1 x)))))))``.

    W1 reduces C to the cell width, the :class:`GambaCell` mixes globally, W3 expands back; the
    norms are BatchNorm as in the ResNet bottleneck this block replaces.

    Args:
        d_model: channels C. reduction: the cell works on max(C // reduction, 2) channels.
        **cell_kwargs: passed to :class:`GambaCell` (d_state, strategy, n_heads, device, dtype...).

    Shapes: input [B, C, H, W] -> output [B, C, H, W].
    """

    input_kind = "image2d"

    def __init__(self, d_model: int = 16, reduction: int = 2, **cell_kwargs) -> None:
        super().__init__()
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"GambaBlock d_model must be a positive int, got {d_model!r}")
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"GambaBlock reduction must be a positive int, got {reduction!r}")
        self.d_model = d_model
        hidden = max(d_model // reduction, 2)
        kw = {"device": cell_kwargs.get("device"), "dtype": cell_kwargs.get("dtype")}
        self.reduce = nn.Sequential(nn.Conv2d(d_model, hidden, 1, bias=False, **kw), nn.BatchNorm2d(hidden, **kw),
                                    nn.ReLU())
        self.cell = GambaCell(hidden, **cell_kwargs)
        self.post = nn.Sequential(nn.BatchNorm2d(hidden, **kw), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(hidden, d_model, 1, bias=False, **kw), nn.BatchNorm2d(d_model, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> [B, C, H, W]."""
        _check_map(x, self.d_model, "GambaBlock")
        return x + self.expand(self.post(self.cell(self.reduce(x))))


__all__ = ["GambaBlock", "GambaCell", "RegisterAttention2d"]
