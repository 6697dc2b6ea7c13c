"""GatedFusion: PromptHash's adaptive gated selection fusion of two token streams.

Two streams (e.g. image tokens and text tokens) are joined into one sequence and mixed by two
complementary branches: a selective SSM (linear-time, order-aware, run in both directions so
every token sees the other stream) and a transformer encoder layer (content-based, all pairs).
A learned, token- and channel-wise sigmoid gate selects between the two branch outputs; the
fused sequence is split back into the two streams.

Pairing: when both streams have the same length, tokens are interleaved (a_1, b_1, a_2, b_2,
...), so that a causal scan sees each pair side by side; otherwise the streams are concatenated.
A learned stream embedding tells the branches which stream a token came from.
"""

from __future__ import annotations

import torch
from torch import nn

from ssmkit.layers.mamba import Mamba
from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.registry import register_block

PAIRINGS = ("auto", "interleave", "concat")


def _check_stream(name: str, x: object, d_model: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"GatedFusion stream {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != d_model or x.shape[1] < 1:
        raise ValueError(f"GatedFusion stream {name} must be [B, L, {d_model}] with L >= 1, got {tuple(x.shape)}")
    return x


@register_block("gated_fusion")
class GatedFusion(NoWeightDecay, nn.Module):
    """Adaptive gated selection fusion of two token streams: (a, b) -> (a', b').

    ``x = pair(a, b) + stream_embedding``;
    ``s = x + Mamba_fwd(LN(x)) + flip(Mamba_bwd(flip(LN(x))))`` (the SSM branch);
    ``t = TransformerEncoderLayer(x)`` (the attention branch);
    ``g = sigmoid(W [s, t] + c)``; ``y = g * s + (1 - g) * t``; ``(a', b') = unpair(y)``.

    Args:
        d_model: token width d of both streams.
        d_state, d_conv, expand: of the two Mamba mixers.
        n_heads: attention heads (default: 4 if d divides by 4, else 2 or 1).
        dim_feedforward: transformer FFN width (default 2 * d).
        dropout: in the transformer layer.
        pairing: "auto" (interleave equal lengths, else concat), "interleave" or "concat".
        backend: selective-scan backend of the Mamba mixers.

    Shapes: a [B, La, d], b [B, Lb, d] -> a' [B, La, d], b' [B, Lb, d]; with
    ``return_gates=True`` also the gate [B, La + Lb, d] in the paired order.
    """

    input_kind = "custom"

    def __init__(self, d_model: int = 16, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 n_heads: int | None = None, dim_feedforward: int | None = None, dropout: float = 0.0,
                 pairing: str = "auto", backend: str = "auto", device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"GatedFusion d_model must be a positive int, got {d_model!r}")
        if pairing not in PAIRINGS:
            raise ValueError(f"GatedFusion pairing must be one of {list(PAIRINGS)}, got {pairing!r}")
        if n_heads is None:
            n_heads = next(h for h in (4, 2, 1) if d_model % h == 0)
        if not isinstance(n_heads, int) or n_heads < 1 or d_model % n_heads:
            raise ValueError(f"GatedFusion n_heads must be a positive divisor of d_model={d_model}, got {n_heads!r}")
        self.d_model, self.pairing = d_model, pairing
        kw = {"device": device, "dtype": dtype}
        self.stream_embed = nn.Parameter(torch.zeros(2, d_model, **kw))
        nn.init.normal_(self.stream_embed, std=0.02)
        self.stream_embed._no_weight_decay = True  # an embedding, like timm's pos_embed
        self.ssm_norm = nn.LayerNorm(d_model, **kw)
        self.ssm_fwd = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend, **kw)
        self.ssm_bwd = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend, **kw)
        self.transformer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward or 2 * d_model, dropout, activation="gelu",
            batch_first=True, norm_first=True, **kw)
        self.gate = nn.Linear(2 * d_model, d_model, **kw)
        # Start the gate at 0.5 (zero weights, zero bias): both branches contribute from step 0
        # and the selection is learned, not inherited from a random init.
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def example_input(self, batch: int = 2, length_a: int = 7, length_b: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """Two small streams (a [batch, 7, d], b [batch, 5, d]); call ``block(*example)``."""
        p = self.gate.weight
        return (torch.randn(batch, length_a, self.d_model, device=p.device, dtype=p.dtype),
                torch.randn(batch, length_b, self.d_model, device=p.device, dtype=p.dtype))

    def _interleave(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        if self.pairing == "interleave" and a.shape[1] != b.shape[1]:
            raise ValueError("GatedFusion pairing='interleave' needs equal lengths, "
                             f"got La={a.shape[1]}, Lb={b.shape[1]}")
        return self.pairing == "interleave" or (self.pairing == "auto" and a.shape[1] == b.shape[1])

    def forward(self, a: torch.Tensor | tuple[torch.Tensor, torch.Tensor], b: torch.Tensor | None = None,
                return_gates: bool = False):
        """a [B, La, d], b [B, Lb, d] -> (a' [B, La, d], b' [B, Lb, d]) [, gate [B, La+Lb, d]].

        ``block((a, b))`` is accepted as well as ``block(a, b)``.
        """
        if b is None:
            if not (isinstance(a, (tuple, list)) and len(a) == 2):
                raise TypeError("GatedFusion expects two streams: block(a, b) or block((a, b))")
            a, b = a
        a, b = _check_stream("a", a, self.d_model), _check_stream("b", b, self.d_model)
        if a.shape[0] != b.shape[0]:
            raise ValueError("GatedFusion streams need the same batch size, "
                             f"got a {tuple(a.shape)}, b {tuple(b.shape)}")
        La = a.shape[1]
        a = a + self.stream_embed[0]
        b = b + self.stream_embed[1]
        interleave = self._interleave(a, b)
        x = torch.stack((a, b), dim=2).flatten(1, 2) if interleave else torch.cat((a, b), dim=1)

        h = self.ssm_norm(x)
        s = x + self.ssm_fwd(h) + self.ssm_bwd(h.flip(1)).flip(1)
        t = self.transformer(x)
        g = torch.sigmoid(self.gate(torch.cat((s, t), dim=-1)))
        y = g * s + (1.0 - g) * t

        if interleave:
            y2 = y.unflatten(1, (La, 2))
            out = (y2[:, :, 0], y2[:, :, 1])
        else:
            out = (y[:, :La], y[:, La:])
        return (*out, g) if return_gates else out


__all__ = ["GatedFusion", "PAIRINGS"]
