"""ACTalker's parallel-control Mamba: one Mamba branch per driving signal, mask-drop and a gate.

For a video feature map [B, C, T, H, W] and per-frame driving signals (audio features, the
expression/motion controls), each branch

1. takes only its facial region's tokens (mask-drop): the mouth box for audio, every other
   position for expression; with ``mask_drop=False`` every branch takes every token;
2. puts its condition tokens c_t [k, C] around the region tokens r_t [n, C] of every frame and
   runs a (bidirectional) :class:`ssmkit.layers.mamba.Mamba` over each frame's ``[c_t, r_t, c_t]``,
   then another over every region token's path through the T frames, so the signal steers
   tokens across space and time (see :class:`ControlBranch`);
3. writes its output back **only** at its region's positions, scaled by a learned per-channel
   gain and by the gate.

The gate is a per-sample weight in {0, 1} for each branch (audio only, expression only, both,
or none). A gate of 0 leaves the features exactly as if the branch were not there, which is
also how per-signal classifier-free guidance gets its unconditional predictions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.layers.mamba import BiMamba, Mamba

BRANCHES = ("audio", "motion")


def region_indices(h: int, w: int, box: tuple[float, float, float, float], device=None
                   ) -> dict[str, torch.Tensor]:
    """Flat token indices of a [h, w] grid: ``mouth`` inside ``box`` (fractions y0, y1, x0, x1,
    rounded outwards) and ``rest`` outside it; both sorted (raster order)."""
    y0, y1, x0, x1 = box
    r0, r1 = math.floor(y0 * h), math.ceil(y1 * h)
    c0, c1 = math.floor(x0 * w), math.ceil(x1 * w)
    inside = torch.zeros(h, w, dtype=torch.bool, device=device)
    inside[r0:r1, c0:c1] = True
    flat = inside.flatten()
    if flat.all() or not flat.any():
        raise ValueError(f"mouth box {box} covers {int(flat.sum())} of {h * w} tokens; it must split the grid")
    return {"mouth": flat.nonzero().flatten(), "rest": (~flat).nonzero().flatten()}


class ConditionEncoder(nn.Module):
    """Per-frame signal [B, T + 2 m, F] -> condition tokens [B, T, k, C] with temporal context.

    ``margin`` m extra frames on each side give the frames at the edges of a clip the same
    context as the others (the speech just before and after a window); they are consumed by
    the convolutions and cropped away. ``context``: the first convolution's width (odd).
    """

    def __init__(self, in_dim: int, dim: int, n_tokens: int = 2, context: int = 5, margin: int = 0):
        super().__init__()
        if context % 2 == 0:
            raise ValueError(f"ConditionEncoder context must be odd (centred window); got {context}")
        self.in_dim, self.dim, self.n_tokens, self.margin = in_dim, dim, n_tokens, int(margin)
        self.proj = nn.Linear(in_dim, dim)
        self.temporal = nn.Conv1d(dim, dim, context, padding=context // 2)
        self.temporal2 = nn.Conv1d(dim, dim, 3, padding=1)
        self.tokens = nn.Linear(dim, n_tokens * dim)
        self.pos = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        m = self.margin
        if signal.dim() != 3 or signal.shape[-1] != self.in_dim or signal.shape[1] <= 2 * m:
            raise ValueError(f"ConditionEncoder expects [B, T + {2 * m}, {self.in_dim}] with T >= 1; "
                             f"got {list(signal.shape)}")
        b, t = signal.shape[0], signal.shape[1] - 2 * m
        h = F.gelu(self.proj(signal)).transpose(1, 2)  # [B, C, T + 2m]
        h = F.gelu(self.temporal(h))
        h = h + F.gelu(self.temporal2(h))
        h = h[:, :, m:m + t]
        return self.tokens(h.transpose(1, 2)).view(b, t, self.n_tokens, self.dim) + self.pos


class ControlBranch(nn.Module):
    """One signal's Mamba: (condition tokens [B, T, k, C], region tokens [B, T, n, C]) -> update [B, T, n, C].

    Two bidirectional scans cover space and time: a spatial one over each frame's sequence
    ``[c_t, r_t, c_t]`` (the condition at both ends, so both directions read it before the
    region), then a temporal one over each region token's T frames. Factorised this way the
    scans step through ``2k + n`` and ``T`` positions instead of ``T (k + n)``, which on CPU (one
    step at a time) is the difference between usable and not.
    """

    def __init__(self, dim: int, d_state: int = 4, bidirectional: bool = True, backend: str = "auto",
                 init_gain: float = 0.1, expand: int = 1):
        super().__init__()
        mixer_cls = BiMamba if bidirectional else Mamba
        self.norm_s = nn.LayerNorm(dim)
        self.spatial = mixer_cls(dim, d_state=d_state, expand=expand, backend=backend)
        self.norm_t = nn.LayerNorm(dim)
        self.temporal = mixer_cls(dim, d_state=d_state, expand=expand, backend=backend)
        self.out = nn.Linear(dim, dim)
        # A small start: the branch begins close to "absent" and learns how much to steer.
        self.gain = nn.Parameter(torch.full((dim,), float(init_gain)))

    def forward(self, cond: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        b, t, k, c = cond.shape
        n = region.shape[2]
        seq = torch.cat([cond, region, cond], dim=2).reshape(b * t, 2 * k + n, c)
        y = region + self.spatial(self.norm_s(seq)).view(b, t, 2 * k + n, c)[:, :, k:k + n]
        z = y.transpose(1, 2).reshape(b * n, t, c)  # each region token's path through time
        z = z + self.temporal(self.norm_t(z))
        return self.out(z.view(b, n, t, c).transpose(1, 2)) * self.gain


class ParallelControl(nn.Module):
    """The parallel branches over a feature map [B, C, T, H, W] -> [B, C, T, H, W].

    Args:
        dim: C. branches: the signals that get a branch (a subset of ``BRANCHES``).
        mouth_box: (y0, y1, x0, x1) fractions of the frame holding the mouth (aligned faces).
        mask_drop: each branch sees and writes only its region (audio: mouth, motion: the rest);
            False: every branch sees and writes every token.
        d_state, expand, bidirectional, backend: of the branches' Mamba mixers.
    """

    def __init__(self, dim: int, branches: tuple[str, ...] = BRANCHES,
                 mouth_box: tuple[float, float, float, float] = (0.58, 0.88, 0.30, 0.70), mask_drop: bool = True,
                 d_state: int = 4, expand: int = 1, bidirectional: bool = True, backend: str = "auto"):
        super().__init__()
        unknown = [b for b in branches if b not in BRANCHES]
        if unknown or not branches:
            raise ValueError(f"branches must be a non-empty subset of {list(BRANCHES)}; got {list(branches)}")
        self.dim, self.mouth_box, self.mask_drop = dim, tuple(mouth_box), bool(mask_drop)
        self.branches = nn.ModuleDict({b: ControlBranch(dim, d_state, bidirectional, backend, expand=expand)
                                       for b in branches})
        self._regions: dict[tuple, dict[str, torch.Tensor]] = {}

    def region(self, name: str, h: int, w: int, device) -> torch.Tensor | None:
        """The flat token indices branch ``name`` reads and writes (None: every token)."""
        if not self.mask_drop:
            return None
        key = (h, w, str(device))
        if key not in self._regions:
            self._regions[key] = region_indices(h, w, self.mouth_box, device)
        return self._regions[key]["mouth" if name == "audio" else "rest"]

    def forward(self, x: torch.Tensor, cond: dict[str, torch.Tensor], gates: dict[str, torch.Tensor]) -> torch.Tensor:
        """``x`` [B, C, T, H, W]; ``cond[name]`` [B, T, k, C] condition tokens; ``gates[name]`` [B] in {0, 1}.

        A branch missing from ``cond`` or ``gates``, or gated off for the whole batch, is skipped.
        """
        b, c, t, h, w = x.shape
        tokens = x.permute(0, 2, 3, 4, 1).reshape(b, t, h * w, c)  # [B, T, HW, C]
        out = tokens
        for name, branch in self.branches.items():
            if name not in cond or name not in gates:
                continue
            g = gates[name].to(x.dtype)
            if not bool((g != 0).any()):
                continue
            idx = self.region(name, h, w, x.device)
            region = tokens if idx is None else tokens.index_select(2, idx)
            upd = branch(cond[name], region) * g.view(b, 1, 1, 1)
            out = out + upd if idx is None else out.index_add(2, idx, upd)
        return out.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)


__all__ = ["BRANCHES", "ConditionEncoder", "ControlBranch", "ParallelControl", "region_indices"]
