"""A small pixel-space video diffusion UNet for talking heads, with ACTalker's parallel control.

Data flow for a clip of T frames (shapes per clip; B clips are processed together):

    noisy sample x_t [B, T, 3, 64, 64] ++ reference frame [B, 3, 64, 64] (repeated per frame)
      -> pixel-unshuffle 2 -> [B*T, 24, 32, 32] -> conv                      (C1 channels, 32x32)
      enc1: ResBlock (2-D conv per frame + temporal taps over T + timestep FiLM)
      down -> 16x16 (C2): enc2;  down -> 8x8 (C3): enc3
      mid:  VSSBlock (SS2D cross scan per frame) -> ParallelControl -> ResBlock
      dec3: ResBlock([mid, enc3]) -> ParallelControl
      up -> 16x16: dec2 ResBlock([up, enc2]);  up -> 32x32: dec1 ResBlock([up, enc1])
      -> conv -> pixel-shuffle -> [B, T, 3, 64, 64]

The control acts on the 8x8 map, where the mouth box is 4x4 tokens: the branches carry how
the mouth and the rest of the face move, and the decoder draws the detail.

The driving signals enter only through the control branches (``control.ParallelControl``):
audio features [B, T, F] and motion controls [B, T, 5] are encoded into condition tokens
once and read by both control blocks. ``gates`` [B, 2] (audio, motion) switch the branches
per clip. The output is the diffusion model's prediction (noise, sample or velocity, as the
scheduler is configured).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.layers.ss2d import VSSBlock
from ssmkit.registry import register_model
from ssmkit_apps.talkinghead.control import BRANCHES, ConditionEncoder, ParallelControl

MOTION_DIM = 5


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of integer timesteps [B]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def temporal_mix(h: torch.Tensor, taps: torch.Tensor, t: int) -> torch.Tensor:
    """sum_k taps[k] * h[frame + k - 1] per channel (zero beyond the clip): [B*T, C, H, W] -> same."""
    bt, c, hh, ww = h.shape
    v = h.view(bt // t, t, c, hh, ww)
    w = taps.view(3, 1, 1, c, 1, 1)
    out = v * w[1]
    if t > 1:
        prev = F.pad(v[:, :-1], (0, 0, 0, 0, 0, 0, 1, 0))  # frame t sees t - 1
        nxt = F.pad(v[:, 1:], (0, 0, 0, 0, 0, 0, 0, 1))
        out = out + prev * w[0] + nxt * w[2]
    return out.reshape(bt, c, hh, ww)


def _groups(c: int) -> int:
    return math.gcd(8, c)


class ResBlock(nn.Module):
    """Per-frame 3x3 convs with timestep FiLM, plus a depthwise temporal conv: [B*T, Cin, H, W] -> [B*T, Cout, H, W]."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        # Depthwise temporal taps (previous, current, next frame), zero at start: a plain
        # weighted sum of shifted copies, because CPU depthwise Conv3d backward is very slow.
        self.temporal = nn.Parameter(torch.zeros(3, cout))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor, t: int) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h + temporal_mix(h, self.temporal, t)


class TalkingHeadUNet(nn.Module):
    """Spatio-temporal UNet conditioned on a reference frame, with parallel audio/motion control.

    Args:
        channels: (C1, C2, C3) widths at 32x32, 16x16 and 8x8. audio_dim: F of the audio features.
        branches: which control branches exist ("audio", "motion"). mask_drop: see ParallelControl.
        cond_tokens: condition tokens per frame and signal. d_state, expand: of every Mamba and SS2D.
        bidirectional: bidirectional Mamba in the branches. ss2d: the VSS (SS2D) block in the middle.
        mouth_box: (y0, y1, x0, x1) fractions of the frame that hold the mouth.
        backend: selective-scan backend. size: frame size (a multiple of 8).
        audio_margin: frames of speech context the audio features carry on each side of the clip.
    """

    def __init__(self, channels: tuple[int, int, int] = (16, 32, 64), audio_dim: int = 160,
                 branches: tuple[str, ...] = BRANCHES, mask_drop: bool = True, cond_tokens: int = 2,
                 d_state: int = 4, expand: int = 1, bidirectional: bool = True, ss2d: bool = True,
                 mouth_box: tuple[float, float, float, float] = (0.58, 0.88, 0.30, 0.70), backend: str = "auto",
                 size: int = 64, audio_margin: int = 4):
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"TalkingHeadUNet channels must be (C1, C2, C3); got {channels}")
        c1, c2, c3 = (int(c) for c in channels)
        if size % 8:
            raise ValueError(f"TalkingHeadUNet size must be a multiple of 8; got {size}")
        self.size, self.audio_dim, self.branch_names = size, audio_dim, tuple(branches)
        self.audio_margin = int(audio_margin)
        emb = 4 * c1
        self.c1 = c1
        self.temb = nn.Sequential(nn.Linear(c1, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(6 * 4, c1, 3, padding=1)
        self.enc1 = ResBlock(c1, c1, emb)
        self.down1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.enc2 = ResBlock(c2, c2, emb)
        self.down2 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.enc3 = ResBlock(c3, c3, emb)
        self.vss = VSSBlock(c3, strategy="cross", mlp_ratio=2.0, d_state=d_state, expand=expand,
                            backend=backend) if ss2d else None
        kw = dict(mouth_box=mouth_box, mask_drop=mask_drop, d_state=d_state, expand=expand,
                  bidirectional=bidirectional, backend=backend)
        self.control_mid = ParallelControl(c3, tuple(branches), **kw)
        self.mid = ResBlock(c3, c3, emb)
        self.dec3 = ResBlock(2 * c3, c3, emb)
        self.control_dec = ParallelControl(c3, tuple(branches), **kw)
        self.up2 = nn.Conv2d(c3, c2, 3, padding=1)
        self.dec2 = ResBlock(2 * c2, c2, emb)
        self.up1 = nn.Conv2d(c2, c1, 3, padding=1)
        self.dec1 = ResBlock(2 * c1, c1, emb)
        self.norm_out = nn.GroupNorm(_groups(c1), c1)
        self.conv_out = nn.Conv2d(c1, 3 * 4, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.encoders = nn.ModuleDict()
        if "audio" in branches:
            self.encoders["audio"] = ConditionEncoder(audio_dim, c3, cond_tokens, margin=audio_margin)
        if "motion" in branches:
            self.encoders["motion"] = ConditionEncoder(MOTION_DIM, c3, cond_tokens)

    def example_input(self, batch: int = 2, frames: int = 4) -> tuple[torch.Tensor, ...]:
        s = self.size
        return (torch.randn(batch, frames, 3, s, s), torch.randint(0, 1000, (batch,)), torch.randn(batch, 3, s, s),
                torch.randn(batch, frames + 2 * self.audio_margin, self.audio_dim),
                torch.randn(batch, frames, MOTION_DIM), torch.ones(batch, len(BRANCHES)))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, ref: torch.Tensor, audio: torch.Tensor,
                motion: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """x [B, T, 3, S, S], timesteps [B], ref [B, 3, S, S], audio [B, T + 2 m, F] (m = audio_margin
        frames of speech context on each side), motion [B, T, 5], gates [B, 2] (audio, motion)
        -> prediction [B, T, 3, S, S]."""
        if x.dim() != 5 or x.shape[2] != 3 or x.shape[3] != self.size or x.shape[4] != self.size:
            raise ValueError(f"expected x [B, T, 3, {self.size}, {self.size}]; got {list(x.shape)}")
        b, t, _, s, _ = x.shape
        ta = t + 2 * self.audio_margin
        if ref.shape != (b, 3, s, s) or audio.shape != (b, ta, self.audio_dim) or motion.shape != (b, t, MOTION_DIM):
            raise ValueError(f"expected ref [B, 3, S, S], audio [B, T + {2 * self.audio_margin}, {self.audio_dim}], "
                             f"motion [B, T, {MOTION_DIM}] for x {list(x.shape)}; got {list(ref.shape)}, "
                             f"{list(audio.shape)}, {list(motion.shape)}")
        if gates.shape != (b, len(BRANCHES)):
            raise ValueError(f"expected gates [B, {len(BRANCHES)}] (audio, motion); got {list(gates.shape)}")
        emb = self.temb(timestep_embedding(timesteps, self.c1)).repeat_interleave(t, dim=0)  # [B*T, E]
        inp = torch.cat([x, ref[:, None].expand(b, t, 3, s, s)], dim=2).reshape(b * t, 6, s, s)
        e1 = self.enc1(self.conv_in(F.pixel_unshuffle(inp, 2)), emb, t)
        e2 = self.enc2(self.down1(e1), emb, t)
        e3 = self.enc3(self.down2(e2), emb, t)
        h = self.vss(e3) if self.vss is not None else e3
        cond = {name: enc(audio if name == "audio" else motion) for name, enc in self.encoders.items()}
        gate = {name: gates[:, BRANCHES.index(name)] for name in self.encoders}
        h = self._control(self.control_mid, h, cond, gate, b, t)
        h = self.mid(h, emb, t)
        h = self.dec3(torch.cat([h, e3], 1), emb, t)
        h = self._control(self.control_dec, h, cond, gate, b, t)
        h = self.dec2(torch.cat([self.up2(F.interpolate(h, scale_factor=2, mode="nearest")), e2], 1), emb, t)
        h = self.dec1(torch.cat([self.up1(F.interpolate(h, scale_factor=2, mode="nearest")), e1], 1), emb, t)
        out = F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(h))), 2)
        return out.view(b, t, 3, s, s)

    @staticmethod
    def _control(block: ParallelControl, h: torch.Tensor, cond, gate, b: int, t: int) -> torch.Tensor:
        bt, c, hh, ww = h.shape
        v = h.view(b, t, c, hh, ww).transpose(1, 2)  # [B, C, T, H, W]
        return block(v, cond, gate).transpose(1, 2).reshape(bt, c, hh, ww)


@register_model("talkinghead_unet")
def talkinghead_unet(**kw) -> TalkingHeadUNet:
    """The talking-head UNet with the given widths and options."""
    return TalkingHeadUNet(**kw)


@register_model("talkinghead_unet_tiny")
def talkinghead_unet_tiny(**kw) -> TalkingHeadUNet:
    """Widths (8, 16, 32): for tests."""
    return TalkingHeadUNet(**{"channels": (8, 16, 32), **kw})


@register_model("talkinghead_unet_small")
def talkinghead_unet_small(**kw) -> TalkingHeadUNet:
    """Widths (16, 32, 64): the default, trainable on a CPU."""
    return TalkingHeadUNet(**{"channels": (16, 32, 64), **kw})


__all__ = ["MOTION_DIM", "ResBlock", "TalkingHeadUNet", "talkinghead_unet", "talkinghead_unet_small",
           "talkinghead_unet_tiny", "timestep_embedding"]
