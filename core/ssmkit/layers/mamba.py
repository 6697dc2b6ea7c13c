"""Mamba (S6) mixer, its bidirectional variant and the pre-norm residual block.

Data flow of :class:`Mamba` for input [B, L, d_model]:

    in_proj -> x, z              [B, d_inner, L] each
    x -> depthwise causal conv1d -> silu
    x_proj(x) -> dt (low rank), B, C;  dt_proj(dt) -> delta [B, d_inner, L]
    y = selective_scan(x, delta, A, B, C, D, z)   (gated by silu(z) inside the scan)
    out_proj(y) -> [B, L, d_model]

Streaming: :meth:`Mamba.allocate_inference_cache` returns a :class:`MambaCache` (the last
``d_conv`` conv inputs and the SSM state); :meth:`Mamba.step` consumes one token in O(1), and
``forward(..., cache=cache)`` pre-fills the cache from a whole prompt with the parallel scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit._checks import positive_int
from ssmkit.layers.norm import RMSNorm
from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.ops.selective_scan import BACKENDS, resolve_backend, selective_scan, selective_state_update
from ssmkit.registry import register_block


@dataclass
class MambaCache:
    """Streaming state of one :class:`Mamba` mixer.

    conv_state: [B, d_inner, d_conv] the last d_conv conv inputs, newest last (module dtype).
    ssm_state: [B, d_inner, N] the SSM state (float32, float64 for a float64 module).
    seqlen_offset: tokens consumed so far.
    """

    conv_state: torch.Tensor
    ssm_state: torch.Tensor
    seqlen_offset: int = 0

    def reset(self) -> None:
        """Start a new sequence in the same buffers."""
        self.conv_state.zero_()
        self.ssm_state.zero_()
        self.seqlen_offset = 0


def _seq_index(cu_seqlens: torch.Tensor, L: int) -> torch.Tensor:
    """[L] index of the packed sequence each position belongs to."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    if int(lengths.sum()) != L or bool((lengths < 0).any()):
        raise ValueError(f"cu_seqlens must rise from 0 to L={L} without decreasing; got {cu_seqlens.tolist()}")
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths)


@register_block("mamba")
class Mamba(NoWeightDecay, nn.Module):
    """Mamba-1 selective-SSM mixer: [B, L, d_model] -> [B, L, d_model].

    Args:
        d_model: model width. d_state: N, the SSM state size per channel. d_conv: causal conv
            width. expand: d_inner = expand * d_model.
        dt_rank: rank of the dt projection; "auto" is ceil(d_model / 16).
        ngroups: G, groups of channels sharing B and C (1 in Mamba-1).
        dt_min, dt_max: the initial step sizes are log-uniform in [dt_min, dt_max].
        dt_init: "random" (uniform dt_proj weight in +-dt_rank**-0.5 * dt_scale) or "constant".
        dt_init_floor: lower clamp of the sampled initial dt.
        conv_bias, bias: biases of the conv and of in_proj/out_proj.
        backend: selective-scan backend, "auto" | "reference" | "chunked" | "triton".
        fused: where the scan backend is "triton" (on CUDA by default), run a forward with
            neither cache, initial_state, return_final_state nor cu_seqlens as one fused
            Function (:mod:`ssmkit.ops.selective_scan.triton_mamba_inner`): channel-major
            projections read in place by a Triton conv+SiLU and the scan, no transposes, and the
            conv output, delta and gated output recomputed in the backward instead of kept.
            False keeps the step-by-step path (same results within rounding).

    Examples:
        >>> import torch
        >>> from ssmkit.layers.mamba import Mamba
        >>> _ = torch.manual_seed(0)
        >>> mixer = Mamba(d_model=16, d_state=8)
        >>> x = torch.randn(2, 10, 16)
        >>> mixer(x).shape
        torch.Size([2, 10, 16])

        Streaming, one token at a time, gives the same outputs as the whole sequence:

        >>> cache = mixer.allocate_inference_cache(batch=2)
        >>> with torch.no_grad():
        ...     steps = torch.stack([mixer.step(x[:, t], cache) for t in range(10)], dim=1)
        ...     torch.allclose(steps, mixer(x), atol=1e-5)
        True
    """

    input_kind = "seq"

    def __init__(self, d_model: int = 16, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", ngroups: int = 1, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, backend: str = "auto", fused: bool = True,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.d_model = positive_int(d_model, "d_model", "Mamba")
        self.d_state = positive_int(d_state, "d_state", "Mamba")
        self.d_conv = positive_int(d_conv, "d_conv", "Mamba")
        self.expand = positive_int(expand, "expand", "Mamba")
        self.d_inner = self.expand * self.d_model
        if dt_rank == "auto":
            dt_rank = math.ceil(self.d_model / 16)
        self.dt_rank = positive_int(dt_rank, "dt_rank", "Mamba")
        self.ngroups = positive_int(ngroups, "ngroups", "Mamba")
        if self.d_inner % self.ngroups:
            raise ValueError(f"Mamba ngroups={ngroups} must divide d_inner={self.d_inner} (expand * d_model)")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"Mamba needs 0 < dt_min <= dt_max; got dt_min={dt_min}, dt_max={dt_max}")
        if dt_init not in ("random", "constant"):
            raise ValueError(f"Mamba dt_init must be 'random' or 'constant'; got {dt_init!r}")
        if backend not in BACKENDS:
            raise ValueError(f"Mamba backend must be one of {list(BACKENDS)}; got {backend!r}")
        self.backend = backend
        self.fused = bool(fused)
        kw = dict(device=device, dtype=dtype)

        self.in_proj = nn.Linear(self.d_model, 2 * self.d_inner, bias=bias, **kw)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, self.d_conv, groups=self.d_inner,
                                padding=self.d_conv - 1, bias=conv_bias, **kw)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.ngroups * self.d_state, bias=False, **kw)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **kw)
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=bias, **kw)

        # S4D-real initialisation: A[d, n] = -(n + 1), stored as log(-A) so A stays negative.
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        # Optimisers built by the engine read these flags: decaying A_log or D towards 0 would
        # change the dynamics (A -> -1, no skip) rather than regularise.
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.reset_dt_parameters(dt_min, dt_max, dt_init, dt_scale, dt_init_floor)

    @torch.no_grad()
    def reset_dt_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init: str = "random",
                            dt_scale: float = 1.0, dt_init_floor: float = 1e-4) -> None:
        """Mamba's dt initialisation: softplus(dt_proj.bias) is log-uniform in [dt_min, dt_max].

        The bias holds the inverse softplus of the sampled dt, so that at initialisation the
        step sizes span two orders of magnitude: some channels remember long, others react fast.
        """
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        u = torch.rand(self.d_inner, device=self.dt_proj.bias.device, dtype=torch.float32)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
        inv_softplus = dt + torch.log(-torch.expm1(-dt))
        self.dt_proj.bias.copy_(inv_softplus)
        # Model-level weight init (zeroing Linear biases) must leave this bias alone.
        self.dt_proj.bias._no_reinit = True

    def example_input(self, batch: int = 2) -> torch.Tensor:
        """A small [batch, 11, d_model] input for registry tests and smoke checks."""
        p = self.in_proj.weight
        return torch.randn(batch, 11, self.d_model, device=p.device, dtype=p.dtype)

    # ----------------------------------------------------------------------------- caches
    def allocate_inference_cache(self, batch: int, dtype: torch.dtype | None = None,
                                 device: torch.device | None = None) -> MambaCache:
        """Zeroed streaming cache for ``batch`` sequences: conv [B, d_inner, d_conv], ssm [B, d_inner, N]."""
        positive_int(batch, "batch", "Mamba.allocate_inference_cache")
        weight = self.conv1d.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        return MambaCache(
            conv_state=torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype),
            ssm_state=torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=state_dtype),
        )

    def _check_cache(self, cache: object, batch: int) -> MambaCache:
        if not isinstance(cache, MambaCache):
            raise TypeError(f"cache must be a MambaCache from allocate_inference_cache; got {type(cache).__name__}")
        want_conv = (batch, self.d_inner, self.d_conv)
        want_ssm = (batch, self.d_inner, self.d_state)
        if tuple(cache.conv_state.shape) != want_conv or tuple(cache.ssm_state.shape) != want_ssm:
            raise ValueError(
                f"cache holds conv_state {list(cache.conv_state.shape)} and ssm_state {list(cache.ssm_state.shape)}; "
                f"expected [B, d_inner, d_conv] = {list(want_conv)} and [B, d_inner, N] = {list(want_ssm)}")
        return cache

    # ---------------------------------------------------------------------------- forward
    def _param_dtype(self, x: torch.Tensor) -> torch.dtype:
        # A, D and dt_bias go to the scan in float32, or float64 when the module runs in float64
        # (so gradcheck and float64 oracles exercise the whole layer).
        return torch.float64 if x.dtype == torch.float64 else torch.float32

    def _conv(self, x: torch.Tensor, reverse: bool, cu_seqlens: torch.Tensor | None,
              left: torch.Tensor | None) -> torch.Tensor:
        """Depthwise conv over L, causal (anti-causal when ``reverse``): [B, d_inner, L] -> same."""
        w, b, K = self.conv1d.weight, self.conv1d.bias, self.d_conv
        if cu_seqlens is not None:
            return self._packed_conv(x, reverse, cu_seqlens)
        if reverse:
            # Mirror image of the causal conv, y[t] = sum_k w[k] x[t + K-1-k]: reversing the K
            # taps of the [D, 1, K] weight replaces flipping the [B, D, L] sequence twice.
            return F.conv1d(F.pad(x, (0, K - 1)), w.flip(-1), b, groups=self.d_inner)
        context = F.pad(x, (K - 1, 0)) if left is None else torch.cat([left.to(x.dtype), x], dim=-1)
        return F.conv1d(context, w, b, groups=self.d_inner)

    def _packed_conv(self, x: torch.Tensor, reverse: bool, cu_seqlens: torch.Tensor) -> torch.Tensor:
        # Taps that reach across a sequence boundary are masked out, so each packed sequence
        # is convolved as if it were alone (zero padding at its own ends).
        K, L = self.d_conv, x.shape[-1]
        seq = _seq_index(cu_seqlens, L)
        if reverse:
            windows = F.pad(x, (0, K - 1)).unfold(-1, K, 1)  # [B, D, L, K]: x[t + k]
            offsets = torch.arange(K, device=x.device)
            taps = self.conv1d.weight[:, 0, :].flip(-1)
        else:
            windows = F.pad(x, (K - 1, 0)).unfold(-1, K, 1)  # [B, D, L, K]: x[t - (K-1) + k]
            offsets = torch.arange(K, device=x.device) - (K - 1)
            taps = self.conv1d.weight[:, 0, :]
        src = torch.arange(L, device=x.device)[:, None] + offsets[None, :]  # [L, K]
        inside = (src >= 0) & (src < L)
        same = seq[src.clamp(0, max(L - 1, 0))] == seq[:, None]
        mask = (inside & same).to(x.dtype)
        y = torch.einsum("bdlk,dk->bdl", windows * mask, taps)
        return y if self.conv1d.bias is None else y + self.conv1d.bias[None, :, None]

    def _mix(self, xz: torch.Tensor, reverse: bool = False, cu_seqlens: torch.Tensor | None = None,
             initial_state: torch.Tensor | None = None, return_final_state: bool = False,
             cache: MambaCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Conv, projections and gated scan on xz [B, 2*d_inner, L]; returns y [B, d_inner, L]."""
        x, z = xz.chunk(2, dim=1)
        L = x.shape[-1]
        left = None if cache is None else cache.conv_state[:, :, 1:]
        x_raw, x = x, F.silu(self._conv(x, reverse, cu_seqlens, left))
        if cache is not None:  # after the conv, which read the old context through ``left``
            window = torch.cat([cache.conv_state, x_raw.detach().to(cache.conv_state.dtype)], dim=-1)
            cache.conv_state.copy_(window[..., -self.d_conv:])

        x_dbl = F.linear(x.transpose(1, 2), self.x_proj.weight)  # [B, L, R + 2GN]
        GN = self.ngroups * self.d_state
        dt, Bm, Cm = x_dbl.split([self.dt_rank, GN, GN], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # [B, d_inner, L]
        # [B, G, N, L] views; each backend lays them out as it needs (time-major, L-contiguous).
        Bm = Bm.unflatten(-1, (self.ngroups, self.d_state)).permute(0, 2, 3, 1)
        Cm = Cm.unflatten(-1, (self.ngroups, self.d_state)).permute(0, 2, 3, 1)

        pdtype = self._param_dtype(x)
        A = -torch.exp(self.A_log.to(pdtype))
        if cache is not None:
            # A copy, because the scan may keep the initial state for its backward pass while
            # the cache is overwritten below.
            initial_state = cache.ssm_state.clone()
        need_final = return_final_state or cache is not None
        out = selective_scan(x, delta, A, Bm, Cm, D=self.D.to(pdtype), z=z,
                             delta_bias=self.dt_proj.bias.to(pdtype), delta_softplus=True,
                             initial_state=initial_state, return_final_state=need_final,
                             reverse=reverse, cu_seqlens=cu_seqlens, backend=self.backend)
        y, final = out if need_final else (out, None)
        if cache is not None:
            cache.ssm_state.copy_(final.detach())
            cache.seqlen_offset += L
        return y, final

    def _runs_fused(self, x: torch.Tensor, cu_seqlens, initial_state, return_final_state, cache) -> bool:
        """Whether :meth:`forward` takes the fused Triton path (see ``fused`` in the class docstring)."""
        if not self.fused or cache is not None or initial_state is not None or return_final_state:
            return False
        return cu_seqlens is None and x.shape[1] > 0 and resolve_backend(self.backend, x.device) == "triton"

    def _forward_fused(self, x: torch.Tensor, reverse: bool) -> torch.Tensor:
        from ssmkit.ops.selective_scan.triton_mamba_inner import mamba_inner_triton

        pdtype = self._param_dtype(x)
        return mamba_inner_triton(x, self.in_proj.weight, self.in_proj.bias, self.conv1d.weight[:, 0],
                                  self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                                  self.dt_proj.bias.to(pdtype), -torch.exp(self.A_log.to(pdtype)),
                                  self.D.to(pdtype), self.out_proj.weight, self.out_proj.bias, self.ngroups, reverse)

    def _check_input(self, hidden_states: object) -> None:
        if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() != 3 \
                or hidden_states.shape[-1] != self.d_model:
            got = list(hidden_states.shape) if isinstance(hidden_states, torch.Tensor) else type(hidden_states).__name__
            raise ValueError(f"{type(self).__name__} expects input [B, L, d_model={self.d_model}]; got {got}")

    def forward(self, hidden_states: torch.Tensor, *, cache: MambaCache | None = None,
                initial_state: torch.Tensor | None = None, return_final_state: bool = False,
                cu_seqlens: torch.Tensor | None = None, reverse: bool = False):
        """Mix a sequence: [B, L, d_model] -> [B, L, d_model].

        Args:
            cache: a :class:`MambaCache`; the sequence continues the cached one (conv context and
                SSM state), and the cache is advanced to its end (prompt pre-fill before ``step``).
            initial_state: [B, d_inner, N] SSM state to start from ([S, d_inner, N] with
                ``cu_seqlens``); differentiable. It carries no conv context; use ``cache`` to
                continue a sequence exactly.
            return_final_state: also return the SSM state after the last token.
            cu_seqlens: [S+1] boundaries of sequences packed along L (batch 1); conv and scan
                both restart at every boundary.
            reverse: run right to left (anti-causal conv and reverse scan, no flipped copies).
        """
        self._check_input(hidden_states)
        if cache is not None:
            if reverse or cu_seqlens is not None or initial_state is not None:
                raise ValueError("cache continues one left-to-right stream; it cannot be combined with "
                                 "reverse=True, cu_seqlens or initial_state")
            self._check_cache(cache, hidden_states.shape[0])
        if self._runs_fused(hidden_states, cu_seqlens, initial_state, return_final_state, cache):
            return self._forward_fused(hidden_states, reverse)
        xz = self.in_proj(hidden_states).transpose(1, 2)  # [B, 2*d_inner, L]
        y, final = self._mix(xz, reverse, cu_seqlens, initial_state, return_final_state, cache)
        out = self.out_proj(y.transpose(1, 2))
        return (out, final) if return_final_state else out

    @torch.no_grad()
    def step(self, hidden_states: torch.Tensor, cache: MambaCache) -> torch.Tensor:
        """Consume one token per sequence: [B, d_model] (or [B, 1, d_model]) -> same shape.

        O(1) in the number of tokens seen: updates ``cache`` in place.
        """
        single = hidden_states.dim() == 3
        if single:
            if hidden_states.shape[1] != 1:
                raise ValueError(f"step takes one token, [B, 1, d_model]; got {list(hidden_states.shape)} "
                                 "(use forward(..., cache=cache) to pre-fill several tokens)")
            hidden_states = hidden_states[:, 0]
        if hidden_states.dim() != 2 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"step expects [B, d_model={self.d_model}]; got {list(hidden_states.shape)}")
        self._check_cache(cache, hidden_states.shape[0])
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)  # [B, d_inner] each

        conv = cache.conv_state
        conv.copy_(torch.roll(conv, shifts=-1, dims=-1))
        conv[:, :, -1] = x.to(conv.dtype)
        x = (conv.to(x.dtype) * self.conv1d.weight[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)

        GN = self.ngroups * self.d_state
        dt, Bm, Cm = F.linear(x, self.x_proj.weight).split([self.dt_rank, GN, GN], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)
        pdtype = self._param_dtype(x)
        y = selective_state_update(
            cache.ssm_state, x, dt, -torch.exp(self.A_log.to(pdtype)),
            Bm.unflatten(-1, (self.ngroups, self.d_state)), Cm.unflatten(-1, (self.ngroups, self.d_state)),
            D=self.D.to(pdtype), z=z, dt_bias=self.dt_proj.bias.to(pdtype), dt_softplus=True)
        cache.seqlen_offset += 1
        out = self.out_proj(y)
        return out[:, None] if single else out


@register_block("bimamba")
class BiMamba(NoWeightDecay, nn.Module):
    """Bidirectional Mamba: a left-to-right and a right-to-left mixer, combined. [B, L, d_model] -> same.

    The backward direction runs with ``reverse=True`` (anti-causal conv, reverse scan): no
    flipped copies of the sequence are made.

    Args:
        d_model: model width.
        shared: one set of weights for both directions; in_proj and out_proj then run once and
            the two gated scan outputs are combined in between. Otherwise each direction is a
            full :class:`Mamba` with its own parameters.
        combine: "mean" (average of the two directions) or "add" (their sum).
        backend: selective-scan backend. Other keyword arguments go to :class:`Mamba`.
    """

    input_kind = "seq"

    def __init__(self, d_model: int = 16, shared: bool = False, combine: str = "mean",
                 backend: str = "auto", **mamba_kwargs):
        super().__init__()
        if combine not in ("mean", "add"):
            raise ValueError(f"BiMamba combine must be 'mean' or 'add'; got {combine!r}")
        self.d_model = d_model
        self.shared = bool(shared)
        self.combine = combine
        self.forward_mixer = Mamba(d_model, backend=backend, **mamba_kwargs)
        self.backward_mixer = None if self.shared else Mamba(d_model, backend=backend, **mamba_kwargs)

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return self.forward_mixer.example_input(batch)

    def forward(self, hidden_states: torch.Tensor, *, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, d_model] -> [B, L, d_model]; ``cu_seqlens`` packs sequences along L (batch 1)."""
        fwd = self.forward_mixer
        fwd._check_input(hidden_states)
        scale = 0.5 if self.combine == "mean" else 1.0
        if self.backward_mixer is not None:
            out = fwd(hidden_states, cu_seqlens=cu_seqlens) + self.backward_mixer(
                hidden_states, cu_seqlens=cu_seqlens, reverse=True)
            return out * scale if scale != 1.0 else out
        xz = fwd.in_proj(hidden_states).transpose(1, 2)
        y_f, _ = fwd._mix(xz, reverse=False, cu_seqlens=cu_seqlens)
        y_b, _ = fwd._mix(xz, reverse=True, cu_seqlens=cu_seqlens)
        # out_proj is affine, so out_proj(y_f) + out_proj(y_b) = W (y_f + y_b) + 2 b: one matmul.
        bias = fwd.out_proj.bias
        if bias is not None and scale == 1.0:
            bias = 2 * bias
        return F.linear(((y_f + y_b) * scale).transpose(1, 2), fwd.out_proj.weight, bias)


@register_block("mamba_block")
class MambaBlock(NoWeightDecay, nn.Module):
    """Pre-norm residual block ``x + mixer(RMSNorm(x))``: [B, L, d_model] -> [B, L, d_model].

    Args:
        d_model: model width. norm_eps: RMSNorm epsilon.
        bidirectional: use :class:`BiMamba` as the mixer (no streaming then).
        backend: selective-scan backend. Other keyword arguments go to the mixer.
    """

    input_kind = "seq"

    def __init__(self, d_model: int = 16, norm_eps: float = 1e-5, bidirectional: bool = False,
                 backend: str = "auto", **mixer_kwargs):
        super().__init__()
        self.d_model = d_model
        self.bidirectional = bool(bidirectional)
        self.norm = RMSNorm(d_model, eps=norm_eps, device=mixer_kwargs.get("device"), dtype=mixer_kwargs.get("dtype"))
        mixer_cls = BiMamba if self.bidirectional else Mamba
        self.mixer = mixer_cls(d_model, backend=backend, **mixer_kwargs)

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return self.mixer.example_input(batch)

    def forward(self, hidden_states: torch.Tensor, **mixer_kwargs):
        """Keyword arguments (cache, initial_state, return_final_state, cu_seqlens, reverse) go to the mixer."""
        out = self.mixer(self.norm(hidden_states), **mixer_kwargs)
        if isinstance(out, tuple):
            return hidden_states + out[0], out[1]
        return hidden_states + out

    def _streaming_mixer(self) -> Mamba:
        if self.bidirectional:
            raise ValueError("a bidirectional MambaBlock looks at future tokens and cannot stream")
        return self.mixer

    def allocate_inference_cache(self, batch: int, dtype: torch.dtype | None = None,
                                 device: torch.device | None = None) -> MambaCache:
        return self._streaming_mixer().allocate_inference_cache(batch, dtype=dtype, device=device)

    @torch.no_grad()
    def step(self, hidden_states: torch.Tensor, cache: MambaCache) -> torch.Tensor:
        """One token: [B, d_model] (or [B, 1, d_model]) -> same shape, updating ``cache``."""
        return hidden_states + self._streaming_mixer().step(self.norm(hidden_states), cache)


__all__ = ["BiMamba", "Mamba", "MambaBlock", "MambaCache"]
