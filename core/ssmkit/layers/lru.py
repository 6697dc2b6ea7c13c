"""LRU: the Linear Recurrent Unit (Orvieto et al., 2023, "Resurrecting Recurrent Neural Networks
for Long Sequences").

A complex diagonal linear recurrence with a stable exponential parameterisation,

    lambda = exp(-exp(nu_log) + i exp(theta_log))          |lambda| < 1 for any parameters
    x_t    = lambda * x_{t-1} + exp(gamma_log) * (B u_t)   gamma = sqrt(1 - |lambda|^2)
    y_t    = Re(C x_t) + D * u_t

"Ring" initialisation draws |lambda| uniformly on the ring r_min <= |lambda| <= r_max (by area)
and the phase in [0, max_phase]; gamma normalises each mode so that a white-noise input keeps
unit state variance however close |lambda| is to 1.

In parallel form the recurrence is evaluated by :func:`lru_scan`, a Hillis-Steele scan with
ceil(log2 L) vectorised steps (lambda is time-invariant, so step s simply multiplies by
lambda ** (2 ** s)); :func:`lru_recurrence` is the loop-over-time reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit._checks import positive_int
from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.registry import register_block


def lru_scan(lam: torch.Tensor, b: torch.Tensor, initial_state: torch.Tensor | None = None) -> torch.Tensor:
    """All states of ``x_t = lam * x_{t-1} + b_t``.

    Args:
        lam: [N] complex. b: [B, L, N] complex. initial_state: [B, N] complex (x_{-1}).

    Returns:
        x: [B, L, N] complex. Exact (not approximate); cost O(L log L), depth O(log L).

    The initial state enters as part of the first input (``b_0 + lam * x_{-1}``), so no power
    ``lam ** t`` is ever formed from a logarithm: for small ``|lam|`` at long ``L`` such a power
    underflows to 0, and the backward of ``polar``/``log`` at 0 is NaN. The doubling steps'
    powers ``lam ** (2 ** s)`` may underflow too; their backward is a product with the power
    itself, which stays finite.
    """
    if initial_state is not None and b.shape[1] > 0:
        b = torch.cat([b[:, :1] + (lam * initial_state)[:, None], b[:, 1:]], dim=1)
    L = b.shape[1]
    x = b
    power = lam
    offset = 1
    while offset < L:
        # x[t] += lam**offset * x[t - offset]: after this step x[t] sums 2*offset inputs
        shifted = F.pad(x[:, : L - offset] * power, (0, 0, offset, 0))
        x = x + shifted
        power = power * power
        offset *= 2
    return x


def lru_recurrence(lam: torch.Tensor, b: torch.Tensor, initial_state: torch.Tensor | None = None) -> torch.Tensor:
    """Reference for :func:`lru_scan`: the same recurrence as a loop over time."""
    x = initial_state if initial_state is not None else b.new_zeros(b.shape[0], b.shape[2])
    xs = []
    for t in range(b.shape[1]):
        x = lam * x + b[:, t]
        xs.append(x)
    return torch.stack(xs, dim=1) if xs else b.clone()


@register_block("lru")
class LRU(NoWeightDecay, nn.Module):
    """Linear Recurrent Unit layer: [B, L, d_model] -> [B, L, d_model].

    ``y = GLU(W (GELU(Re(C x) + D u)))`` with the LRU recurrence for x, followed (as in the
    paper's block) by a GELU and a position-wise GLU projection.

    Args:
        d_model: H, input/output width. d_state: N complex modes (default d_model).
        r_min, r_max: ring of initial |lambda| (0 < r_max < 1); long-range tasks want r_max near 1.
        max_phase: initial phases are uniform in [0, max_phase].
        bidirectional: add a second LRU that runs right to left (non-causal).
        dropout: on activations (training only).

    Forward: x [B, L, H]; ``initial_state`` [B, N] complex is accepted when not bidirectional.
    """

    input_kind = "seq"

    def __init__(self, d_model: int = 16, d_state: int | None = None, r_min: float = 0.4, r_max: float = 0.99,
                 max_phase: float = 2 * math.pi, bidirectional: bool = False, dropout: float = 0.0,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.d_model = positive_int(d_model, "d_model", "LRU")
        self.d_state = positive_int(d_state if d_state is not None else d_model, "d_state", "LRU")
        if not 0.0 <= r_min < r_max < 1.0:
            raise ValueError(f"LRU needs 0 <= r_min < r_max < 1; got r_min={r_min}, r_max={r_max}")
        if not 0.0 < max_phase <= 2 * math.pi:
            raise ValueError(f"LRU max_phase must be in (0, 2 pi]; got {max_phase}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LRU dropout must be in [0, 1); got {dropout!r}")
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        self.bidirectional, self.dropout = bool(bidirectional), float(dropout)
        n_dirs = 2 if bidirectional else 1
        H, N = self.d_model, self.d_state
        self.nu_log = nn.Parameter(torch.empty(n_dirs, N, device=device))
        self.theta_log = nn.Parameter(torch.empty(n_dirs, N, device=device))
        self.gamma_log = nn.Parameter(torch.empty(n_dirs, N, device=device))
        self.B = nn.Parameter(torch.empty(n_dirs, N, H, 2, device=device))  # real and imaginary parts
        self.C = nn.Parameter(torch.empty(n_dirs, H, N, 2, device=device))
        self.D = nn.Parameter(torch.empty(H, device=device))
        self.out_proj = nn.Linear(H, 2 * H, device=device, dtype=dtype)
        for p in (self.nu_log, self.theta_log, self.gamma_log):
            p._no_weight_decay = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        u1 = torch.rand_like(self.nu_log)
        u2 = torch.rand_like(self.theta_log)
        # |lambda|^2 uniform on [r_min^2, r_max^2]  <=>  uniform by area on the ring
        self.nu_log.copy_(torch.log(-0.5 * torch.log(u1 * (self.r_max ** 2 - self.r_min ** 2) + self.r_min ** 2)))
        self.theta_log.copy_(torch.log(self.max_phase * u2.clamp_min(1e-4)))
        mag = torch.exp(-torch.exp(self.nu_log))
        self.gamma_log.copy_(torch.log(torch.sqrt(1 - mag ** 2)))
        H, N = self.d_model, self.d_state
        self.B.normal_(0.0, 1.0 / math.sqrt(2 * H))
        self.C.normal_(0.0, 1.0 / math.sqrt(N))
        self.D.normal_()

    def lam(self, direction: int = 0) -> torch.Tensor:
        """The diagonal recurrence, [N] complex64."""
        return torch.polar(torch.exp(-torch.exp(self.nu_log[direction].float())),
                           torch.exp(self.theta_log[direction].float()))

    def _run(self, u: torch.Tensor, direction: int, initial_state: torch.Tensor | None) -> torch.Tensor:
        """u [B, L, H] float32 -> Re(C x) [B, L, H] for one direction."""
        Bm, Cm = self.B[direction].float(), self.C[direction].float()
        gamma = torch.exp(self.gamma_log[direction].float())
        bu = torch.complex(u @ Bm[..., 0].T, u @ Bm[..., 1].T) * gamma  # [B, L, N]
        x = lru_scan(self.lam(direction), bu, initial_state)
        return x.real @ Cm[..., 0].T - x.imag @ Cm[..., 1].T

    def forward(self, x: torch.Tensor, initial_state: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"LRU expects x [B, L, {self.d_model}]; got {tuple(x.shape)}")
        if initial_state is not None:
            if self.bidirectional:
                raise ValueError("LRU initial_state is only defined for the causal (bidirectional=False) layer")
            if not initial_state.is_complex() or tuple(initial_state.shape) != (x.shape[0], self.d_state):
                raise ValueError(f"LRU initial_state must be complex [B, N] = {(x.shape[0], self.d_state)}; "
                                 f"got {initial_state.dtype} {tuple(initial_state.shape)}")
            initial_state = initial_state.to(torch.complex64)
        if x.shape[1] == 0:
            return x.clone()
        u = x.float()  # complex math in complex64 whatever the input dtype
        # autocast would turn the projections into bf16, which complex tensors cannot hold
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = self._run(u, 0, initial_state)
            if self.bidirectional:
                y = y + self._run(u.flip(1), 1, None).flip(1)
            y = y + u * self.D.float()
        y = F.dropout(F.gelu(y), self.dropout, self.training).to(x.dtype)
        return F.glu(self.out_proj(y), dim=-1)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, r_min={self.r_min}, r_max={self.r_max}, "
                f"bidirectional={self.bidirectional}")
