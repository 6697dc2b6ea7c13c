"""One recurrent step of the selective scan, for streaming inference: O(1) in sequence length.

The step is the body of the reference loop (``reference.py``) applied to a single time index:

    dt  = softplus(dt + dt_bias)                        (or dt + dt_bias)
    h   = exp(dt * A) * h + dt * x * B                  (h is ``state``, updated in place)
    y   = sum_n C[n] * h[n] + D * x
    y  *= silu(z)                                        (when z is given)

Calling it for t = 0 .. L-1 on the columns of a sequence reproduces ``selective_scan`` on that
sequence, including its final state; tests check exactly that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmkit.ops.selective_scan._validate import _expect
from ssmkit.ops.utils import format_shape as _shape

_STATE_DTYPES = (torch.float32, torch.float64)


def _validate(state, x, dt, A, B, C, D, z, dt_bias) -> tuple[torch.Tensor, torch.Tensor]:
    """Check every argument against the contract; return B and C as [batch, G, N]."""
    if not isinstance(state, torch.Tensor) or state.dim() != 3:
        raise ValueError(f"state must be [B, D, N] (batch, channels, state size); got {_shape(state)}")
    if state.dtype not in _STATE_DTYPES:
        # The state accumulates over arbitrarily many steps; a 16-bit state would drift.
        raise TypeError(f"state has dtype {state.dtype}; expected float32 (or float64), it is updated in place")
    batch, dim, nstate = state.shape
    if not isinstance(B, torch.Tensor) or B.dim() not in (2, 3):
        raise ValueError(f"B must be [B, G, N] (or [B, N] for one group); got {_shape(B)}")
    if not isinstance(C, torch.Tensor) or C.dim() not in (2, 3):
        raise ValueError(f"C must be [B, G, N] (or [B, N] for one group); got {_shape(C)}")
    # [B, N] is accepted as the one-group shorthand, as mamba-ssm users pass it.
    B = B.unsqueeze(1) if B.dim() == 2 else B
    C = C.unsqueeze(1) if C.dim() == 2 else C
    groups = B.shape[1]
    if groups < 1 or dim % groups != 0:
        raise ValueError(f"B has G={groups} groups, which does not divide D={dim}; expected D % G == 0")
    _expect("x", x, (batch, dim), "[B, D]")
    _expect("dt", dt, (batch, dim), "[B, D]")
    _expect("A", A, (dim, nstate), "[D, N]")
    _expect("B", B, (batch, groups, nstate), "[B, G, N]")
    _expect("C", C, (batch, groups, nstate), "[B, G, N]")
    _expect("D", D, (dim,), "[D]", optional=True)
    _expect("z", z, (batch, dim), "[B, D]", optional=True)
    _expect("dt_bias", dt_bias, (dim,), "[D]", optional=True)
    tensors = {"state": state, "x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "z": z, "dt_bias": dt_bias}
    devices = {n: t.device for n, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all inputs must be on one device; got {devices}")
    return B, C


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = True,
) -> torch.Tensor:
    """Advance the selective-scan state by one token and return that token's output.

    Args:
        state: [B, D, N] float32 (or float64) SSM state; updated in place.
        x: [B, D] input at this step. dt: [B, D] step size (before bias and softplus).
        A: [D, N] state matrix diagonal (negative for decay).
        B, C: [B, G, N] input-dependent projections (G groups, D % G == 0; [B, N] means G=1).
        D: [D] skip connection. z: [B, D] gate; the output is multiplied by silu(z).
        dt_bias: [D] added to dt before the softplus.
        dt_softplus: apply softplus to dt (+ dt_bias), as ``selective_scan(delta_softplus=True)``.

    Returns:
        y [B, D] in x's dtype. The math runs in the state's dtype (float32 or float64).

    The cost is O(B·D·N) per call, independent of how many tokens came before.
    """
    B, C = _validate(state, x, dt, A, B, C, D, z, dt_bias)
    compute = state.dtype
    batch, dim, nstate = state.shape
    groups = B.shape[1]
    per_group = dim // groups

    dt_ = dt.to(compute)
    if dt_bias is not None:
        dt_ = dt_ + dt_bias.to(compute)
    if dt_softplus:
        dt_ = F.softplus(dt_)
    x_ = x.to(compute)
    dA = torch.exp(dt_.unsqueeze(-1) * A.to(compute))  # [B, D, N]

    # Splitting the channel axis into (G, D/G) is always a view, so the in-place update below
    # writes through to the caller's state whatever its strides; B and C broadcast per group
    # without materialising a [B, D, N] copy.
    h = state.view(batch, groups, per_group, nstate)
    Bg = B.to(compute).unsqueeze(2)  # [B, G, 1, N]
    Cg = C.to(compute).unsqueeze(2)
    h.mul_(dA.view(batch, groups, per_group, nstate))
    h.add_((dt_ * x_).view(batch, groups, per_group, 1) * Bg)
    y = (h * Cg).sum(-1).reshape(batch, dim)
    if D is not None:
        y = y + D.to(compute) * x_
    if z is not None:
        y = y * F.silu(z.to(compute))
    return y.to(x.dtype)
