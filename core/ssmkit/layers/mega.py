"""Mega: a multi-dimensional damped EMA followed by single-head gated attention.

Layout of one layer (Ma et al., 2023, "Mega: Moving Average Equipped Gated Attention"):

    x' = norm(x)                                     (pre-norm; post-norm with prenorm=False)
    v  = silu(x' W_v)                                [B, L, hidden_dim]
    m  = silu(EMA(x') + omega * x')                  the EMA gives the attention a local bias
    u, zr, hx = split(m W_m)                         update gate, shared q/k + reset, candidate
    z, r = split(silu(zr));  q = z * g_q + b_q;  k = z * g_k + b_k
    h  = silu(hx + (softmax(q k^T / sqrt(z_dim) + relpos) v * r) W_h)
    y  = x + sigmoid(u) * (h - x)                    gated residual (the layer keeps its own residual)

``chunk_size=None`` attends over the whole sequence (quadratic); an integer attends inside
non-overlapping chunks of that many tokens (Mega-chunk, linear in L) while the EMA still carries
information across chunk boundaries. The relative position bias is T5-style: relative distances
fall into log-spaced buckets, each with a learned scalar, so any length works.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit._checks import positive_int
from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.ops.ema import ema
from ssmkit.registry import register_block


def relative_position_bucket(relative: torch.Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """Map ``key - query`` distances to bucket ids in [0, num_buckets).

    Half the buckets (all of them when causal) hold exact small distances; the rest cover
    distances up to ``max_distance`` on a log scale, and anything farther shares the last one.
    Bidirectional buckets keep keys before and after the query apart.
    """
    offset = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        offset = (relative > 0).long() * num_buckets
        dist = relative.abs()
    else:
        dist = (-relative).clamp_min(0)  # future keys are masked anyway; they share bucket 0
    exact = max(num_buckets // 2, 1)
    far = exact + (torch.log(dist.float().clamp_min(1) / exact) / math.log(max(max_distance / exact, 1 + 1e-6))
                   * (num_buckets - exact)).long()
    far = far.clamp_max(num_buckets - 1)
    return offset + torch.where(dist < exact, dist, far)


class T5RelativeBias(nn.Module):
    """Learned bucketed relative position bias: (L, S) -> [L, S] float additive bias."""

    def __init__(self, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if num_buckets < (4 if bidirectional else 2):
            raise ValueError(f"T5RelativeBias needs num_buckets >= {4 if bidirectional else 2}; got {num_buckets}")
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.weight = nn.Parameter(torch.zeros(num_buckets, device=device, dtype=dtype))

    def forward(self, L: int, S: int | None = None) -> torch.Tensor:
        S = L if S is None else S
        # The bias depends on k - q only (Toeplitz): look up the L + S - 1 distinct offsets, then
        # lay them out as a view (unfold: row i is v[i : i + S]) flipped so that row q starts at
        # offset -q, i.e. bias[q, k] = v[k - q + L - 1]. The backward is unfold's window sum;
        # indexing the weight with the full [L, S] bucket map instead made autograd accumulate
        # L*S updates into num_buckets slots: 40 ms per step at L = 1024 on an H100.
        rel = torch.arange(-(L - 1), S, device=self.weight.device)
        v = self.weight[relative_position_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)]
        return v.unfold(0, S, 1).flip(0)


@register_block("mega")
class MegaLayer(NoWeightDecay, nn.Module):
    """Mega layer (EMA + single-head gated attention): [B, L, d_model] -> [B, L, d_model].

    Args:
        d_model: model width. z_dim: width of the shared query/key (default max(4, d_model // 4)).
        hidden_dim: width of values and of the reset gate (default 2 * d_model).
        ema_dim: N, EMA dimensions per channel.
        chunk_size: None for full attention, or the chunk length of linear-time Mega-chunk.
        causal: causal attention (the EMA is causal unless ``bidirectional``).
        bidirectional: add a second, right-to-left EMA (encoders); not with ``causal``.
        num_buckets, max_distance: the relative position bias.
        dropout: dropout on attention probabilities and on the layer output (training only).
        prenorm: LayerNorm before (True) or after (False) the layer.

    The layer contains its own gated residual; use it without an outer residual connection.
    """

    input_kind = "seq"

    def __init__(self, d_model: int = 16, z_dim: int | None = None, hidden_dim: int | None = None, ema_dim: int = 4,
                 chunk_size: int | None = None, causal: bool = False, bidirectional: bool = False,
                 num_buckets: int = 32, max_distance: int = 128, dropout: float = 0.0, prenorm: bool = True,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.d_model = positive_int(d_model, "d_model", "MegaLayer")
        self.z_dim = positive_int(z_dim if z_dim is not None else max(4, d_model // 4), "z_dim", "MegaLayer")
        self.hidden_dim = positive_int(hidden_dim if hidden_dim is not None else 2 * d_model, "hidden_dim", "MegaLayer")
        self.ema_dim = positive_int(ema_dim, "ema_dim", "MegaLayer")
        self.chunk_size = None if chunk_size is None else positive_int(chunk_size, "chunk_size", "MegaLayer")
        if causal and bidirectional:
            raise ValueError("MegaLayer: causal=True cannot use a bidirectional EMA; pass bidirectional=False")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MegaLayer dropout must be in [0, 1); got {dropout!r}")
        self.causal, self.bidirectional = bool(causal), bool(bidirectional)
        self.dropout, self.prenorm = dropout, prenorm
        kw = {"device": device, "dtype": dtype}
        D, N = self.d_model, self.ema_dim
        n_dirs = 2 if bidirectional else 1
        # EMA parameters: alpha/delta through a sigmoid, beta/eta as they are (Mega's init)
        self.ema_alpha = nn.Parameter(torch.empty(n_dirs, D, N, **kw))
        self.ema_delta = nn.Parameter(torch.empty(n_dirs, D, N, **kw))
        self.ema_beta = nn.Parameter(torch.empty(n_dirs, D, N, **kw))
        self.ema_eta = nn.Parameter(torch.empty(n_dirs, D, N, **kw))
        self.omega = nn.Parameter(torch.empty(D, **kw))
        self.norm = nn.LayerNorm(D, **kw)
        self.v_proj = nn.Linear(D, self.hidden_dim, **kw)
        self.mx_proj = nn.Linear(D, D + self.z_dim + self.hidden_dim + D, **kw)
        self.h_proj = nn.Linear(self.hidden_dim, D, **kw)
        self.qk_gamma = nn.Parameter(torch.empty(2, self.z_dim, **kw))
        self.qk_beta = nn.Parameter(torch.empty(2, self.z_dim, **kw))
        self.rel_bias = T5RelativeBias(num_buckets, max_distance, bidirectional=not causal, **kw)
        # EMA rates set the dynamics and the q/k gains and offsets act as norm affines: no decay
        for p in (self.ema_alpha, self.ema_delta, self.qk_gamma, self.qk_beta):
            p._no_weight_decay = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.ema_alpha, mean=0.0, std=0.2)
        nn.init.normal_(self.ema_delta, mean=0.0, std=0.2)
        # beta alternates sign across EMA dims so the expansion starts well conditioned
        signs = torch.ones(self.ema_dim, device=self.ema_beta.device)
        signs[1::2] = -1
        self.ema_beta.copy_(torch.randn_like(self.ema_beta) * 0.02 + signs)
        nn.init.normal_(self.ema_eta, mean=0.0, std=1.0)
        nn.init.normal_(self.omega, mean=0.0, std=1.0)
        # fan-in scaled weights (Mega's fixed std 0.02 starves narrow layers of signal), and
        # q/k scales near 1 so queries and keys start as the same vector z: attention begins as
        # similarity search instead of uniform averaging, which trains much faster at small widths
        for lin in (self.v_proj, self.mx_proj, self.h_proj):
            nn.init.normal_(lin.weight, mean=0.0, std=lin.in_features ** -0.5)
            nn.init.zeros_(lin.bias)
        nn.init.normal_(self.qk_gamma, mean=1.0, std=0.02)
        nn.init.zeros_(self.qk_beta)
        self.rel_bias.weight.zero_()

    def _ema(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, D] -> EMA(x) [B, L, D] (both directions summed when bidirectional)."""
        u = x.transpose(1, 2)  # [B, D, L]
        scale = math.sqrt(1.0 / self.ema_dim)  # keeps the EMA output variance independent of N
        out = 0
        for i in range(self.ema_alpha.shape[0]):
            src = u if i == 0 else u.flip(-1)
            y = ema(src, torch.sigmoid(self.ema_alpha[i]), torch.sigmoid(self.ema_delta[i]), self.ema_beta[i],
                    self.ema_eta[i] * scale)
            out = out + (y if i == 0 else y.flip(-1))
        return out.transpose(1, 2)

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k [B, L, z]; v [B, L, hidden] -> [B, L, hidden], full or chunked."""
        B, L, _ = q.shape
        c = L if self.chunk_size is None else min(self.chunk_size, L)
        Lp = -(-L // c) * c
        if Lp != L:
            pad = (0, 0, 0, Lp - L)
            q, k, v = (F.pad(t, pad) for t in (q, k, v))
        n = Lp // c
        q, k, v = (t.reshape(B * n, 1, c, t.shape[-1]) for t in (q, k, v))
        bias = self.rel_bias(c).to(q.dtype)  # same relative layout in every chunk
        if self.causal:
            bias = bias.masked_fill(~torch.ones(c, c, dtype=torch.bool, device=q.device).tril(), float("-inf"))
        if Lp != L:
            # padded keys of the last chunk must not be attended; every real query still sees itself
            key_ok = (torch.arange(Lp, device=q.device) < L).view(n, c)
            bias = bias[None].expand(B, n, c, c).reshape(B * n, 1, c, c)
            bias = bias.masked_fill(~key_ok.repeat(B, 1)[:, None, None, :], float("-inf"))
        dropout_p = self.dropout if self.training else 0.0
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
        return h.reshape(B, Lp, -1)[:, :L]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"MegaLayer expects x [B, L, {self.d_model}]; got {tuple(x.shape)}")
        if x.shape[1] == 0:
            return x.clone()
        residual = x
        xn = self.norm(x) if self.prenorm else x
        v = F.silu(self.v_proj(xn))
        mx = F.silu(self._ema(xn).to(xn.dtype) + xn * self.omega)
        u, zr, hx = torch.split(self.mx_proj(mx), [self.d_model, self.z_dim + self.hidden_dim, self.d_model], dim=-1)
        u = torch.sigmoid(u)
        z, r = torch.split(F.silu(zr), [self.z_dim, self.hidden_dim], dim=-1)
        q = z * self.qk_gamma[0] + self.qk_beta[0]
        k = z * self.qk_gamma[1] + self.qk_beta[1]
        h = self._attention(q, k, v)
        h = F.silu(hx + self.h_proj(h * r))
        h = F.dropout(h, self.dropout, self.training)
        out = residual + u * (h - residual)
        return out if self.prenorm else self.norm(out)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, z_dim={self.z_dim}, hidden_dim={self.hidden_dim}, ema_dim={self.ema_dim}, "
                f"chunk_size={self.chunk_size}, causal={self.causal}, bidirectional={self.bidirectional}")
