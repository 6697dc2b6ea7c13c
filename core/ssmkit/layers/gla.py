"""GLA layer: gated linear attention with data-dependent, low-rank forget gates.

Following the GLA paper (Yang et al., 2024): queries and keys of width ``expand_k * d_model``,
values of width ``expand_v * d_model``, split into H heads; the forget gate is

    alpha_t = sigmoid(x_t W_1 W_2 + b) ** (1 / tau)      (W_1 W_2 low rank, tau = 16)

kept in log space as ``gk = logsigmoid(x W_1 W_2 + b) / tau`` (<= 0), which is what
:func:`ssmkit.ops.gla.gla` consumes and never underflows. The output of each head is
RMS-normalised, multiplied by a swish output gate ``silu(x W_r)`` and projected back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit._checks import positive_int
from ssmkit.layers.norm import rms_norm
from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.ops.gla import BACKENDS, gla
from ssmkit.registry import register_block


@register_block("gla")
class GLA(NoWeightDecay, nn.Module):
    """Gated linear attention mixer: [B, L, d_model] -> [B, L, d_model].

    Args:
        d_model: model width. num_heads: H.
        expand_k, expand_v: key/query width and value width as multiples of d_model (the paper
            uses 0.5 and 1); each must give a whole number divisible by H.
        gate_low_rank_dim: rank of the forget-gate projection.
        gate_logit_normalizer: tau; larger values keep the gates closer to 1 (longer memory).
        use_output_gate: multiply the normalised output by ``silu(x W_r)``.
        norm_eps: epsilon of the per-head RMS norm.
        backend: "auto" | "reference" | "chunked" | "fla" (see :mod:`ssmkit.ops.gla`).
        chunk_size: chunk length of the "chunked" backend.

    Forward:
        x: [B, L, d_model]. initial_state: [N, H, K, V] with K = expand_k * d_model / H and
        V = expand_v * d_model / H. cu_seqlens: [N+1] packed sequences (B == 1).
        Returns y [B, L, d_model], or (y, final_state [N, H, K, V]) with ``output_final_state``.
    """

    input_kind = "seq"

    def __init__(self, d_model: int = 16, num_heads: int = 4, expand_k: float = 0.5, expand_v: float = 1.0,
                 gate_low_rank_dim: int = 16, gate_logit_normalizer: float = 16.0, use_output_gate: bool = True,
                 norm_eps: float = 1e-5, backend: str = "auto", chunk_size: int = 64,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.d_model = positive_int(d_model, "d_model", "GLA")
        self.num_heads = positive_int(num_heads, "num_heads", "GLA")
        key_dim, value_dim = d_model * expand_k, d_model * expand_v
        for name, dim in (("expand_k", key_dim), ("expand_v", value_dim)):
            if dim != int(dim) or int(dim) < num_heads or int(dim) % num_heads:
                raise ValueError(f"GLA {name}: d_model * {name} = {dim} must be a whole multiple of "
                                 f"num_heads={num_heads}")
        self.key_dim, self.value_dim = int(key_dim), int(value_dim)
        self.head_k, self.head_v = self.key_dim // num_heads, self.value_dim // num_heads
        self.gate_low_rank_dim = positive_int(gate_low_rank_dim, "gate_low_rank_dim", "GLA")
        if not gate_logit_normalizer > 0:
            raise ValueError(f"GLA gate_logit_normalizer must be > 0; got {gate_logit_normalizer!r}")
        if backend not in BACKENDS:
            raise ValueError(f"GLA backend must be one of {list(BACKENDS)}; got {backend!r}")
        self.gate_logit_normalizer = float(gate_logit_normalizer)
        self.use_output_gate = bool(use_output_gate)
        self.norm_eps = float(norm_eps)
        self.backend = backend
        self.chunk_size = positive_int(chunk_size, "chunk_size", "GLA")
        kw = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False, **kw)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=False, **kw)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=False, **kw)
        self.gk_proj = nn.Sequential(nn.Linear(d_model, gate_low_rank_dim, bias=False, **kw),
                                     nn.Linear(gate_low_rank_dim, self.key_dim, bias=True, **kw))
        self.g_proj = nn.Linear(d_model, self.value_dim, bias=False, **kw) if use_output_gate else None
        self.norm_weight = nn.Parameter(torch.ones(self.head_v, **kw))
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False, **kw)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # small projections keep q·S well scaled at init (the paper's xavier gain 2 ** -2.5)
        gain = 2 ** -2.5
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.gk_proj[0], self.gk_proj[1], self.o_proj):
            nn.init.xavier_uniform_(lin.weight, gain=gain)
        if self.g_proj is not None:
            nn.init.xavier_uniform_(self.g_proj.weight, gain=gain)
        nn.init.zeros_(self.gk_proj[1].bias)
        self.norm_weight.fill_(1.0)

    def forward(self, x: torch.Tensor, initial_state: torch.Tensor | None = None, output_final_state: bool = False,
                cu_seqlens: torch.Tensor | None = None):
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"GLA expects x [B, L, {self.d_model}]; got {tuple(x.shape)}")
        B, L, _ = x.shape
        H = self.num_heads
        # time-first [B, L, H, *] views are free and are fla's native layout: no transposes
        q = self.q_proj(x).view(B, L, H, self.head_k)
        k = self.k_proj(x).view(B, L, H, self.head_k)
        v = self.v_proj(x).view(B, L, H, self.head_v)
        # the log gate stays float32 even under bf16 autocast: fla accepts it and its cumulative
        # sum over a chunk is where low precision would hurt
        gk = (F.logsigmoid(self.gk_proj(x).float()) / self.gate_logit_normalizer).view(B, L, H, self.head_k)
        out = gla(q, k, v, gk, initial_state=initial_state,
                  output_final_state=output_final_state, cu_seqlens=cu_seqlens, head_first=False,
                  backend=self.backend, chunk_size=self.chunk_size)
        o, ht = out if output_final_state else (out, None)
        o = rms_norm(o, self.norm_weight, self.norm_eps)  # per head: normalise over V
        if self.g_proj is not None:
            o = o * F.silu(self.g_proj(x).view(B, L, H, self.head_v))
        y = self.o_proj(o.reshape(B, L, self.value_dim))
        return (y, ht) if output_final_state else y

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, key_dim={self.key_dim}, "
                f"value_dim={self.value_dim}, backend={self.backend!r}")
