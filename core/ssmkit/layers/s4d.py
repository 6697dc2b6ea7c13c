"""S4D: a diagonal state-space layer whose convolution kernel is computed in closed form.

Each channel h holds N/2 complex modes (conjugate pairs are implicit, hence the factor 2):

    x'(t) = A x(t) + B u(t),  y(t) = 2 Re(C x(t)) + D u(t),   A diagonal, B = 1,

discretised with zero-order hold (step dt per channel), which makes the layer a long causal
convolution with kernel ``K[h, l] = 2 Re(sum_n C_n (exp(dt A_n) - 1) / A_n * exp(dt A_n l))``.
The convolution runs through the FFT (O(L log L)); :func:`s4d_recurrence` is the step-by-step
reference it is tested against.

Initialisations (Gu et al., 2022, "On the Parameterization and Initialization of Diagonal State
Space Models"): S4D-Lin ``A_n = -1/2 + i pi n`` and S4D-Real ``A_n = -(n + 1)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit._checks import positive_int
from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.registry import register_block

INITS = ("lin", "real")


def s4d_discretize(log_dt: torch.Tensor, log_A_real: torch.Tensor, A_imag: torch.Tensor,
                   C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ZOH discretisation: returns (dtA [H, N2] complex, C * (exp(dtA) - 1) / A [H, N2] complex).

    log_dt: [H]; log_A_real, A_imag: [H, N2]; C: [H, N2, 2] (real and imaginary parts).
    Computed in float32 (float64 for float64 parameters).
    """
    cdt = torch.float64 if log_dt.dtype == torch.float64 else torch.float32
    A = torch.complex(-torch.exp(log_A_real.to(cdt)), A_imag.to(cdt))
    dtA = A * torch.exp(log_dt.to(cdt))[:, None]
    Cc = torch.view_as_complex(C.to(cdt).contiguous())
    return dtA, Cc * torch.expm1(dtA) / A


def s4d_kernel(log_dt: torch.Tensor, log_A_real: torch.Tensor, A_imag: torch.Tensor, C: torch.Tensor,
               length: int) -> torch.Tensor:
    """The S4D convolution kernel K, [H, length] (float32, or float64 for float64 parameters)."""
    dtA, Cb = s4d_discretize(log_dt, log_A_real, A_imag, C)
    steps = torch.arange(length, device=log_dt.device, dtype=dtA.real.dtype)
    # Vandermonde product; Re(dtA) < 0, so the powers decay and never overflow
    return 2 * torch.einsum("hn,hnl->hl", Cb, torch.exp(dtA[..., None] * steps)).real


def fft_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution ``y[l] = sum_{j<=l} k[j] u[l-j]``: u [B, H, L], k [H, L] -> [B, H, L].

    Math in float32 (float64 for float64 inputs); the FFT length 2L makes it linear, not circular.
    """
    L = u.shape[-1]
    cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u.to(cdt), n=n) * torch.fft.rfft(k.to(cdt), n=n), n=n)[..., :L]
    return y


def s4d_recurrence(u: torch.Tensor, log_dt: torch.Tensor, log_A_real: torch.Tensor, A_imag: torch.Tensor,
                   C: torch.Tensor) -> torch.Tensor:
    """Reference: run the discretised SSM step by step. u [B, H, L] -> y [B, H, L] (without D)."""
    dtA, Cb = s4d_discretize(log_dt, log_A_real, A_imag, C)
    # with B absorbed into C: x_l = exp(dtA) x_{l-1} + u_l, y_l = 2 Re(Cb . x_l)
    decay = torch.exp(dtA)
    state = torch.zeros(u.shape[0], *dtA.shape, dtype=dtA.dtype, device=u.device)
    ys = []
    for l in range(u.shape[-1]):
        state = decay * state + u[:, :, l, None].to(dtA.real.dtype)
        ys.append(2 * (state * Cb).sum(-1).real)
    return torch.stack(ys, dim=-1)


class S4DKernel(nn.Module):
    """Learnable S4D kernel generator for H channels: ``forward(L) -> K [H, L]``.

    Args:
        channels: H. d_state: N, the real state size; N/2 complex modes (N must be even for
            "lin"; "real" uses N real modes). dt_min, dt_max: the step sizes start
            log-uniform in this range. init: "lin" | "real".
    """

    def __init__(self, channels: int, d_state: int = 16, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 init: str = "lin", device: torch.device | None = None):
        super().__init__()
        self.channels = positive_int(channels, "channels", "S4DKernel")
        self.d_state = positive_int(d_state, "d_state", "S4DKernel")
        if init not in INITS:
            raise ValueError(f"S4D init must be one of {list(INITS)}; got {init!r}")
        if init == "lin" and d_state % 2:
            raise ValueError(f"S4D-Lin uses conjugate pairs, so d_state must be even; got {d_state}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"S4D needs 0 < dt_min <= dt_max; got dt_min={dt_min}, dt_max={dt_max}")
        self.init = init
        H = channels
        N2 = d_state // 2 if init == "lin" else d_state
        log_dt = torch.rand(H, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        n = torch.arange(N2, dtype=torch.float32, device=device).repeat(H, 1)
        if init == "lin":
            log_A_real, A_imag = torch.log(0.5 * torch.ones_like(n)), math.pi * n
            scale = 1.0
        else:
            log_A_real, A_imag = torch.log(n + 1), torch.zeros_like(n)
            scale = 0.5  # real modes have no conjugate partner: halve the implicit factor 2
        C = torch.randn(H, N2, 2, device=device) * math.sqrt(0.5) * scale
        if init == "real":
            C[..., 1] = 0  # with real A the imaginary part of C never reaches the output
        self.log_dt = nn.Parameter(log_dt)
        self.log_A_real = nn.Parameter(log_A_real)
        self.A_imag = nn.Parameter(A_imag, requires_grad=init == "lin")
        self.C = nn.Parameter(C)
        for p in (self.log_dt, self.log_A_real, self.A_imag):
            p._no_weight_decay = True  # decaying these changes the dynamics, it does not regularise

    def forward(self, length: int) -> torch.Tensor:
        return s4d_kernel(self.log_dt, self.log_A_real, self.A_imag, self.C, length)


@register_block("s4d")
class S4D(NoWeightDecay, nn.Module):
    """S4D layer: [B, L, d_model] -> [B, L, d_model].

    ``y = GLU(W (GELU(K * u + D u)))``: the SSM convolution per channel, a skip, GELU, then a
    position-wise linear map to 2 d_model followed by a GLU, as in the S4D reference layer.

    Args:
        d_model: channels. d_state: N (see :class:`S4DKernel`). init: "lin" | "real".
        dt_min, dt_max: initial step-size range. bidirectional: add a right-to-left kernel
            (non-causal; for encoders). dropout: on the activations (training only).
    """

    input_kind = "seq"

    def __init__(self, d_model: int = 16, d_state: int = 16, init: str = "lin", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, bidirectional: bool = False, dropout: float = 0.0,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.d_model = positive_int(d_model, "d_model", "S4D")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"S4D dropout must be in [0, 1); got {dropout!r}")
        self.bidirectional, self.dropout = bool(bidirectional), float(dropout)
        self.kernel = S4DKernel(d_model, d_state, dt_min, dt_max, init, device=device)
        self.kernel_bwd = S4DKernel(d_model, d_state, dt_min, dt_max, init, device=device) if bidirectional else None
        self.D = nn.Parameter(torch.randn(d_model, device=device))
        self.out_proj = nn.Linear(d_model, 2 * d_model, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"S4D expects x [B, L, {self.d_model}]; got {tuple(x.shape)}")
        L = x.shape[1]
        if L == 0:
            return x.clone()
        u = x.transpose(1, 2)  # [B, H, L]
        y = fft_causal_conv(u, self.kernel(L))
        if self.kernel_bwd is not None:
            y = y + fft_causal_conv(u.flip(-1), self.kernel_bwd(L)).flip(-1)
        y = (y + u.to(y.dtype) * self.D.to(y.dtype)[:, None]).to(x.dtype)
        y = F.dropout(F.gelu(y), self.dropout, self.training)
        return F.glu(self.out_proj(y.transpose(1, 2)), dim=-1)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_state={self.kernel.d_state}, init={self.kernel.init!r}, " \
               f"bidirectional={self.bidirectional}"
