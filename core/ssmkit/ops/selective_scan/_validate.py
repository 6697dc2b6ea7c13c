"""Input validation for the selective-scan op: clear errors that name the shape and what was expected."""

from __future__ import annotations

import torch

from ssmkit.ops.utils import check_cu_seqlens
from ssmkit.ops.utils import format_shape as _shape

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _expect(name: str, t: object, shape: tuple[int, ...], form: str, optional: bool = False) -> None:
    """Check that ``t`` is a float tensor of ``shape`` (``form`` names the dims); None passes only if optional."""
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {form}, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        want = "[" + ", ".join(str(s) for s in shape) + "]"
        raise ValueError(f"{name} has shape {_shape(t)}; expected {form} = {want}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; expected one of float32, float16, bfloat16, float64")


def validate_selective_scan(
    u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens, check_finite: bool
) -> None:
    """Raise ValueError/TypeError naming the offending argument; the contract is in docs/design.md ("Ops")."""
    if not isinstance(u, torch.Tensor) or u.dim() != 3:
        got = _shape(u) if isinstance(u, torch.Tensor) else type(u).__name__
        raise ValueError(f"u must be [B, D, L] (batch, channels, length); got {got}")
    batch, dim, L = u.shape
    if not isinstance(A, torch.Tensor) or A.dim() != 2 or A.shape[0] != dim:
        got = _shape(A) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"A must be [D, N] with D={dim} (u's channels); got {got}")
    nstate = A.shape[1]
    if not isinstance(B, torch.Tensor) or B.dim() != 4:
        got = _shape(B) if isinstance(B, torch.Tensor) else type(B).__name__
        raise ValueError(f"B must be [B, G, N, L] (batch, groups, state, length); got {got}")
    groups = B.shape[1]
    if groups < 1 or dim % groups != 0:
        raise ValueError(f"B has G={groups} groups, which does not divide D={dim}; expected D % G == 0")
    _expect("u", u, (batch, dim, L), "[B, D, L]")
    _expect("delta", delta, (batch, dim, L), "[B, D, L]")
    _expect("z", z, (batch, dim, L), "[B, D, L]", optional=True)
    _expect("A", A, (dim, nstate), "[D, N]")
    _expect("B", B, (batch, groups, nstate, L), "[B, G, N, L]")
    _expect("C", C, (batch, groups, nstate, L), "[B, G, N, L]")
    _expect("D", D, (dim,), "[D]", optional=True)
    _expect("delta_bias", delta_bias, (dim,), "[D]", optional=True)

    tensors = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z,
               "delta_bias": delta_bias, "initial_state": initial_state}
    devices = {n: t.device for n, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all inputs must be on one device; got {devices}")

    if cu_seqlens is not None:
        nseq = check_cu_seqlens(cu_seqlens, L, batch, shape=f"u of shape {_shape(u)}")
        _expect("initial_state", initial_state, (nseq, dim, nstate), "[S, D, N] (one state per packed sequence)",
                optional=True)
    else:
        _expect("initial_state", initial_state, (batch, dim, nstate), "[B, D, N]", optional=True)

    if check_finite:
        for name, t in tensors.items():
            if t is not None and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf); expected finite inputs")
