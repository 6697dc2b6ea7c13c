"""Random selective-scan inputs in the op's contract, shared by the tests and the benchmarks.

One builder, so that every comparison (fast path against reference, GPU against CPU, one
benchmark against the next) draws its inputs the same way:

    >>> ins = sample_inputs(batch=2, dim=6, L=9, nstate=4, groups=2, seed=0)
    >>> [tuple(ins[k].shape) for k in ("u", "A", "B", "initial_state")]
    [(2, 6, 9), (6, 4), (2, 2, 4, 9), (2, 6, 4)]
    >>> from ssmkit.ops.selective_scan import selective_scan
    >>> tuple(call_scan(selective_scan, ins, backend="reference").shape)
    (2, 6, 9)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# The tensors the scan reads in the input dtype; A, D, delta_bias and initial_state stay float32
# unless the whole call is float64, as the contract says.
_LOW_PRECISION = ("u", "delta", "B", "C", "z")
_OPTIONAL = ("D", "z", "delta_bias", "initial_state")


def sample_inputs(
    batch: int = 2,
    dim: int = 60,
    L: int = 65,
    nstate: int = 16,
    *,
    groups: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    skip: bool = True,
    gate: bool = True,
    bias: bool = True,
    init: bool = True,
    nseq: int | None = None,
    delta_shift: float = -1.0,
    delta_scale: float = 0.5,
    decay: tuple[float, float] | str = (0.5, 2.0),
    bias_scale: float = 0.1,
    seed: int | None = None,
    requires_grad: bool = False,
) -> dict[str, torch.Tensor | None]:
    """Random ``u, delta, A, B, C, D, z, delta_bias, initial_state`` (None where switched off).

    Args:
        batch, dim, L, nstate, groups: u, delta, z are [batch, dim, L]; A is [dim, nstate];
            B, C are [batch, groups, nstate, L]; D and delta_bias are [dim].
        skip, gate, bias, init: draw D, z, delta_bias and initial_state ([nseq or batch, dim,
            nstate]; nseq is the number of packed sequences with ``cu_seqlens``).
        delta_shift, delta_scale: delta ~ shift + scale * N(0, 1); the default puts
            softplus(delta) around 0.3.
        decay: (lo, hi) draws A = -U(lo, hi); ``"lognormal"`` draws A = -exp(0.5 N(0, 1)).
        bias_scale: delta_bias ~ bias_scale * N(0, 1).
        seed: draw from a fresh CPU generator with this seed (then move to ``device``), so the
            inputs are the same on every device; None draws from torch's global generator.
        requires_grad: make every tensor a leaf that requires grad.

    The draws happen in the order of the names above and only for the tensors switched on, so a
    given set of arguments and seed always gives the same tensors.
    """
    gen = None if seed is None else torch.Generator().manual_seed(seed)

    def normal(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        t = torch.randn(*shape, generator=gen)
        return t * scale + shift if (scale, shift) != (1.0, 0.0) else t

    def draw_A() -> torch.Tensor:
        if decay == "lognormal":
            return -torch.exp(normal(dim, nstate) * 0.5)
        lo, hi = decay
        return -(lo + (hi - lo) * torch.rand(dim, nstate, generator=gen))

    if decay != "lognormal" and not (isinstance(decay, tuple) and len(decay) == 2):
        raise ValueError(f"decay must be a (lo, hi) pair or 'lognormal'; got {decay!r}")
    t: dict[str, torch.Tensor | None] = {
        "u": normal(batch, dim, L),
        "delta": normal(batch, dim, L, scale=delta_scale, shift=delta_shift),
        "A": draw_A(),
        "B": normal(batch, groups, nstate, L),
        "C": normal(batch, groups, nstate, L),
    }
    t["D"] = normal(dim) if skip else None
    t["z"] = normal(batch, dim, L) if gate else None
    t["delta_bias"] = normal(dim, scale=bias_scale) if bias else None
    t["initial_state"] = normal(nseq or batch, dim, nstate) if init else None
    out: dict[str, torch.Tensor | None] = {}
    for name, v in t.items():
        if v is not None:
            keep = dtype if (name in _LOW_PRECISION or dtype == torch.float64) else torch.float32
            v = v.to(device=device, dtype=keep)
            if requires_grad:
                v.requires_grad_(True)
        out[name] = v
    return out


def call_scan(fn: Callable, inputs: dict, **kwargs):
    """``fn(u, delta, A, B, C, D=..., z=..., delta_bias=..., initial_state=..., **kwargs)`` with the
    tensors of ``inputs`` (a dict from :func:`sample_inputs`); ``fn`` is any backend with the
    selective-scan signature."""
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C")]
    optional = {k: inputs.get(k) for k in _OPTIONAL}
    return fn(*args, **optional, **kwargs)


__all__ = ["call_scan", "sample_inputs"]
