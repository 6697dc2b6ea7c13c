"""BiGS: the bidirectional gated SSM layer of "Pretraining Without Attention" (Wang et al., 2023).

Two S4D-style diagonal SSMs, one running left to right and one right to left (each an FFT
convolution), mix the sequence; multiplicative gates replace attention:

    V = GELU(x W_v)                        [B, L, expand * d]   value / gate branch
    F = GELU(x W_f),  Bk = GELU(x W_b)     [B, L, d]
    U = (SSM_fwd(F) * flip(SSM_bwd(flip(Bk)))) W_u                [B, L, expand * d]
    y = (U * V) W_o                        [B, L, d]

The layer is a mixer like the others in the registry: wrap it in a pre-norm residual to get the
paper's block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit._checks import positive_int
from ssmkit.layers.s4d import INITS, S4DKernel, fft_causal_conv
from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.registry import register_block


@register_block("bigs")
class BiGS(NoWeightDecay, nn.Module):
    """Bidirectional gated SSM mixer: [B, L, d_model] -> [B, L, d_model].

    Args:
        d_model: width. expand: width of the gated value branch, expand * d_model (paper: 3).
        d_state: N of each S4D kernel. init: "lin" | "real". dt_min, dt_max: step-size range.
        dropout: on the gated product (training only).
    """

    input_kind = "seq"

    def __init__(self, d_model: int = 16, expand: int = 3, d_state: int = 16, init: str = "lin",
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dropout: float = 0.0,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.d_model = positive_int(d_model, "d_model", "BiGS")
        self.expand = positive_int(expand, "expand", "BiGS")
        if init not in INITS:
            raise ValueError(f"BiGS init must be one of {list(INITS)}; got {init!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"BiGS dropout must be in [0, 1); got {dropout!r}")
        self.dropout = float(dropout)
        E = self.expand * d_model
        kw = {"device": device, "dtype": dtype}
        self.in_proj = nn.Linear(d_model, E + 2 * d_model, **kw)  # V, F and Bk in one matmul
        self.kernel_fwd = S4DKernel(d_model, d_state, dt_min, dt_max, init, device=device)
        self.kernel_bwd = S4DKernel(d_model, d_state, dt_min, dt_max, init, device=device)
        self.D_fwd = nn.Parameter(torch.ones(d_model, device=device))
        self.D_bwd = nn.Parameter(torch.ones(d_model, device=device))
        self.u_proj = nn.Linear(d_model, E, **kw)
        self.out_proj = nn.Linear(E, d_model, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"BiGS expects x [B, L, {self.d_model}]; got {tuple(x.shape)}")
        L = x.shape[1]
        if L == 0:
            return x.clone()
        E = self.expand * self.d_model
        v, f, b = torch.split(F.gelu(self.in_proj(x)), [E, self.d_model, self.d_model], dim=-1)
        f, b = f.transpose(1, 2), b.transpose(1, 2).flip(-1)  # [B, d, L]; b runs right to left
        uf = fft_causal_conv(f, self.kernel_fwd(L)) + f.float() * self.D_fwd.float()[:, None]
        ub = (fft_causal_conv(b, self.kernel_bwd(L)) + b.float() * self.D_bwd.float()[:, None]).flip(-1)
        u = self.u_proj((uf * ub).transpose(1, 2).to(x.dtype))
        return self.out_proj(F.dropout(u * v, self.dropout, self.training))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, expand={self.expand}, d_state={self.kernel_fwd.d_state}"
