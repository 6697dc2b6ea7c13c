"""Gated multi-head attention: SDPA followed by a sigmoid output gate.

The gate is read off the query side: the query projection is widened so that one matmul yields
both the queries and the gate logits (head-wise: one scalar per head and token; element-wise:
one per output channel). ``sigmoid(gate)`` scales each head's attention output before the output
projection. The gate adds a data-dependent non-linearity between the value and output projections
and lets a head emit (close to) nothing, which removes the need for "attention sink" tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit._checks import positive_int
from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.registry import register_block

GATES = ("headwise", "elementwise", "none")


def _as_4d_mask(mask: torch.Tensor, B: int, L: int, S: int, name: str) -> torch.Tensor:
    """[L, S] | [B, L, S] | [B or 1, H or 1, L, S] -> 4-D, broadcastable to [B, H, L, S]."""
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() == 3:
        mask = mask[:, None]
    if mask.dim() != 4 or mask.shape[-2:] != (L, S) or mask.shape[0] not in (1, B):
        raise ValueError(f"{name} must be [L, S], [B, L, S] or [B, H, L, S] with B={B}, L={L}, S={S}; "
                         f"got {tuple(mask.shape)}")
    return mask


def merge_attention_masks(
    B: int,
    L: int,
    S: int,
    device: torch.device,
    attn_mask: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
    causal: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Combine an attention mask, a key mask and causality into one SDPA mask.

    Boolean masks mark positions that take part (True = attend, the SDPA convention); a float
    ``attn_mask`` is an additive bias. Returns ``(mask, row_has_key)``: the mask for SDPA (None
    when nothing is masked) and, where some query row might see no key at all, a boolean
    [B, H|1, L, 1] tensor telling which rows have at least one key. Such empty rows are given
    every key (so softmax stays finite in forward and backward) and their output is zeroed.
    """
    if attn_mask is None and key_mask is None and not causal:
        return None, None
    allowed = None  # boolean part
    bias = None  # additive float part
    if attn_mask is not None:
        m = _as_4d_mask(attn_mask, B, L, S, "attn_mask")
        if m.dtype == torch.bool:
            allowed = m
        elif m.is_floating_point():
            bias = m.to(dtype)
        else:
            raise TypeError(f"attn_mask must be bool (True = attend) or floating (additive); got {m.dtype}")
    if key_mask is not None:
        if key_mask.dtype != torch.bool or tuple(key_mask.shape) != (B, S):
            raise ValueError(f"key_mask must be a bool [B, S] = {(B, S)} tensor (True = valid key); "
                             f"got {key_mask.dtype} {tuple(key_mask.shape)}")
        km = key_mask[:, None, None, :]
        allowed = km if allowed is None else allowed & km
    if causal:
        tri = torch.ones(L, S, dtype=torch.bool, device=device).tril(S - L)[None, None]
        allowed = tri if allowed is None else allowed & tri
    if bias is not None:
        if allowed is not None:
            bias = bias.masked_fill(~allowed, float("-inf"))
        has_key = torch.isfinite(bias).any(-1, keepdim=True)
        bias = torch.where(has_key, bias, torch.zeros_like(bias))
        return bias, has_key
    has_key = allowed.any(-1, keepdim=True)
    allowed = allowed | ~has_key
    return allowed, has_key


@register_block("gated_attention")
class GatedAttention(NoWeightDecay, nn.Module):
    """Multi-head attention with a sigmoid output gate: [B, L, d_model] -> [B, L, d_model].

    Args:
        d_model: model width. num_heads: H. head_dim: per-head width (default d_model // H).
        gate: "headwise" (one gate per head and token), "elementwise" (one per channel) or
            "none" (plain multi-head attention).
        causal: mask future keys (self-attention only).
        dropout: attention-probability dropout, active in training mode only.
        bias: biases of the q(+gate)/k/v/o projections.
        qk_norm: RMS-normalise queries and keys per head before the dot product (stabilises
            training at large widths).

    Forward:
        x: [B, L, d_model]. context: [B, S, d_model] keys/values for cross-attention (default x).
        attn_mask: bool (True = attend) or float additive mask, [L, S], [B, L, S] or [B, H, L, S].
        key_mask: bool [B, S], True for valid (non-padding) keys.
        A query row that sees no key gets a zero attention output (the result is o_proj's bias).
    """

    input_kind = "seq"

    def __init__(self, d_model: int = 16, num_heads: int = 2, head_dim: int | None = None, gate: str = "headwise",
                 causal: bool = False, dropout: float = 0.0, bias: bool = False, qk_norm: bool = False,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.d_model = positive_int(d_model, "d_model", "GatedAttention")
        self.num_heads = positive_int(num_heads, "num_heads", "GatedAttention")
        if head_dim is None:
            if d_model % num_heads:
                raise ValueError(f"GatedAttention num_heads={num_heads} must divide d_model={d_model} "
                                 f"(or pass head_dim)")
            head_dim = d_model // num_heads
        self.head_dim = positive_int(head_dim, "head_dim", "GatedAttention")
        if gate not in GATES:
            raise ValueError(f"GatedAttention gate must be one of {list(GATES)}; got {gate!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GatedAttention dropout must be in [0, 1); got {dropout!r}")
        self.gate, self.causal, self.dropout, self.qk_norm = gate, bool(causal), float(dropout), bool(qk_norm)
        inner = self.num_heads * self.head_dim
        self.gate_dim = {"headwise": self.num_heads, "elementwise": inner, "none": 0}[gate]
        kw = {"device": device, "dtype": dtype}
        # queries and gate logits come from one matmul on the query-side input
        self.q_proj = nn.Linear(self.d_model, inner + self.gate_dim, bias=bias, **kw)
        self.k_proj = nn.Linear(self.d_model, inner, bias=bias, **kw)
        self.v_proj = nn.Linear(self.d_model, inner, bias=bias, **kw)
        self.o_proj = nn.Linear(inner, self.d_model, bias=bias, **kw)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, L, _ = t.shape
        return t.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"GatedAttention expects x [B, L, {self.d_model}]; got {tuple(x.shape)}")
        kv_in = x if context is None else context
        if context is not None:
            if self.causal:
                raise ValueError("GatedAttention causal=True is for self-attention; pass context=None")
            if context.dim() != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != self.d_model:
                raise ValueError(f"GatedAttention context must be [B={x.shape[0]}, S, {self.d_model}]; "
                                 f"got {tuple(context.shape)}")
        B, L, _ = x.shape
        S = kv_in.shape[1]
        inner = self.num_heads * self.head_dim
        qg = self.q_proj(x)
        # contiguous: a query slice whose row stride includes the gate columns is legal for SDPA,
        # but the fused CUDA kernels have mishandled such strides; one copy keeps them on safe ground
        q, g = qg[..., :inner].contiguous(), qg[..., inner:]
        q, k, v = self._heads(q), self._heads(self.k_proj(kv_in)), self._heads(self.v_proj(kv_in))
        if self.qk_norm:
            q = F.rms_norm(q, (self.head_dim,))
            k = F.rms_norm(k, (self.head_dim,))
        dropout_p = self.dropout if self.training else 0.0
        if attn_mask is None and key_mask is None:
            # no explicit mask: let SDPA pick its flash / memory-efficient causal kernels
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=self.causal and L > 0)
        else:
            mask, has_key = merge_attention_masks(B, L, S, x.device, attn_mask, key_mask, self.causal, q.dtype)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
            o = torch.where(has_key, o, torch.zeros((), dtype=o.dtype, device=o.device))
        if self.gate == "headwise":
            o = o * torch.sigmoid(g).transpose(1, 2)[..., None]  # [B, H, L, 1]
        elif self.gate == "elementwise":
            o = o * torch.sigmoid(self._heads(g))
        return self.o_proj(o.transpose(1, 2).reshape(B, L, inner))

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, head_dim={self.head_dim}, gate={self.gate!r}, "
                f"causal={self.causal}")
