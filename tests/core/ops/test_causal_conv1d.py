"""Depthwise causal conv1d (+ SiLU): the reference against torch's conv1d, the Triton kernels
against the reference (outputs and the gradients of x, weight and bias).

CPU: the reference against ``F.conv1d`` for every tap count, reverse, with and without bias and
SiLU; the checks on arguments. The Triton kernels run under ``TRITON_INTERPRET=1`` in one
subprocess (the variable must be set before the kernels are decorated) at odd shapes, in
float32, bfloat16 and float64, on contiguous and channel-major inputs (a channel slice of a
[2*D, B*L] matmul output, read in place), with NaN-filled output buffers in one case.

GPU (``-m gpu``): odd and layer-sized shapes against the reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from ssmkit.ops.causal_conv1d import causal_conv1d, causal_conv1d_reference


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |a - e| / max |e| (this file also runs as the interpreter subprocess, without conftest)."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-12)) if e.numel() else 0.0


def _torch_conv(x, w, b, activation, reverse):
    """nn.Conv1d's depthwise conv cut to L outputs (flipped in time for the reverse case)."""
    if reverse:
        return _torch_conv(x.flip(-1), w, b, activation, False).flip(-1)
    K, L = w.shape[1], x.shape[-1]
    y = F.conv1d(x, w[:, None, :], b, padding=K - 1, groups=x.shape[1])[..., :L]
    return F.silu(y) if activation == "silu" else y


@pytest.mark.parametrize("K", [1, 2, 4, 5])
@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
@pytest.mark.parametrize("bias,activation", [pytest.param(True, "silu", id="bias_silu"),
                                             pytest.param(False, None, id="bare")])
def test_reference_is_torch_conv1d(K, reverse, bias, activation):
    x = torch.randn(2, 3, 9, dtype=torch.float64)
    w = torch.randn(3, K, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64) if bias else None
    got = causal_conv1d_reference(x, w, b, activation, reverse)
    assert rel_err(got, _torch_conv(x, w, b, activation, reverse)) < 1e-12


def test_reference_keeps_the_input_dtype_and_computes_in_float32():
    x = torch.randn(2, 4, 30).bfloat16()
    w = torch.randn(4, 4)
    y = causal_conv1d(x, w, activation="silu")
    assert y.dtype == torch.bfloat16
    assert rel_err(y, _torch_conv(x.float(), w, None, "silu", False)) < 1e-2


def test_arguments_are_checked():
    x = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match=r"weight must be \[4, \*\]"):
        causal_conv1d(x, torch.randn(3, 4))
    with pytest.raises(ValueError, match="activation must be one of"):
        causal_conv1d(x, torch.randn(4, 4), activation="gelu")
    with pytest.raises(ValueError, match="backend must be one of .* Did you mean 'triton'"):
        causal_conv1d(x, torch.randn(4, 4), backend="trition")
    with pytest.raises(ValueError, match=r"bias must be \[4\]"):
        causal_conv1d(x, torch.randn(4, 4), torch.randn(5))
    with pytest.raises(ValueError, match="K >= 1"):
        causal_conv1d(x, torch.randn(4, 0))
    with pytest.raises(RuntimeError, match="triton needs CUDA"):
        causal_conv1d(x, torch.randn(4, 4), backend="triton")


@dataclass(frozen=True)
class ConvCase:
    """One interpreter case: x [batch, dim, L], K taps, dtype and options."""

    name: str
    batch: int
    dim: int
    L: int
    K: int
    dtype: str = "float32"
    reverse: bool = False
    bias: bool = True
    silu: bool = True
    channel_major: bool = False
    poison: bool = False


INTERP_CASES = [
    ConvCase("B2_D5_L37_K4", 2, 5, 37, 4),
    ConvCase("B1_D3_L300_K3_rev_bare_bf16", 1, 3, 300, 3, "bfloat16", reverse=True, bias=False, silu=False),
    ConvCase("B3_D6_L19_K4_channel_major_poison", 3, 6, 19, 4, channel_major=True, poison=True),
    ConvCase("B2_D4_L23_K2_channel_major_rev_bf16", 2, 4, 23, 2, "bfloat16", reverse=True, channel_major=True),
    ConvCase("B2_D3_L1_K4", 2, 3, 1, 4),
    ConvCase("B1_D2_L11_K1_f64", 1, 2, 11, 1, "float64"),
]
TOL = {"float32": 1e-5, "bfloat16": 1e-2, "float64": 1e-12}


def _case_inputs(case: ConvCase, device: str = "cpu") -> tuple:
    g = torch.Generator().manual_seed(case.L + case.K)
    dtype = getattr(torch, case.dtype)
    wdtype = torch.float64 if dtype == torch.float64 else torch.float32
    x = torch.randn(case.batch, case.dim, case.L, generator=g).to(dtype)
    if case.channel_major:
        # x as the first half of a [2*D, B*L] matmul output, viewed [B, D, L]: strides (L, B*L, 1).
        xz = torch.randn(2 * case.dim, case.batch * case.L, generator=g).to(dtype)
        xz[: case.dim] = x.permute(1, 0, 2).reshape(case.dim, -1)
        x = xz[: case.dim].view(case.dim, case.batch, case.L).transpose(0, 1)
    w = (torch.randn(case.dim, case.K, generator=g) * 0.5).to(wdtype)
    b = torch.randn(case.dim, generator=g).to(wdtype) if case.bias else None
    gy = torch.randn(case.batch, case.dim, case.L, generator=g, dtype=torch.float64)
    return tuple(t.to(device) if t is not None else None for t in (x, w, b, gy))


def _errors(case: ConvCase, device: str) -> dict:
    """Relative errors of the Triton kernels' output and gradients against the float64 reference."""
    x, w, b, gy = _case_inputs(case, device)
    act = "silu" if case.silu else None
    leaves = [t.detach().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    y = causal_conv1d(*leaves, activation=act, reverse=case.reverse, backend="triton")
    wanted = [t for t in leaves if t is not None]
    grads = torch.autograd.grad((y.double() * gy).sum(), wanted)
    ref = [t.detach().double().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    yr = causal_conv1d_reference(*ref, activation=act, reverse=case.reverse)
    grads_r = torch.autograd.grad((yr * gy).sum(), [t for t in ref if t is not None])
    errs = {"y": rel_err(y, yr)}
    errs.update({n: rel_err(a, e) for n, a, e in zip(("dx", "dweight", "dbias"), grads, grads_r)})
    errs["dtypes_ok"] = float(y.dtype == x.dtype and all(a.dtype == t.dtype for a, t in zip(grads, wanted)))
    errs["finite"] = float(all(bool(torch.isfinite(t).all()) for t in (y, *grads)))
    return errs


def _poisoned(alloc):
    def nan_filled(*args, **kwargs):
        t = alloc(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    return nan_filled


def _interp_worker() -> dict:
    from ssmkit.ops.causal_conv1d import triton_conv

    out = {}
    for case in INTERP_CASES:
        real = triton_conv._empty
        if case.poison:
            triton_conv._empty = _poisoned(real)
        try:
            out[case.name] = _errors(case, "cpu")
        finally:
            triton_conv._empty = real
    return out


@pytest.fixture(scope="module")
def interp_results():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--interp-worker"], env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"interpreter worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in INTERP_CASES])
def test_interpreter_matches_reference(interp_results, case):
    errs = dict(interp_results[case.name])
    assert errs.pop("dtypes_ok") == 1.0, f"{case.name}: output or gradient dtype differs from its input's"
    assert errs.pop("finite") == 1.0, f"{case.name}: non-finite values (an unwritten buffer element?)"
    bad = {k: v for k, v in errs.items() if not v < TOL[case.dtype]}
    assert not bad, f"{case.name}: relative errors above {TOL[case.dtype]}: {bad}"
    assert {"y", "dx", "dweight"} <= set(errs)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("case", [
    pytest.param(ConvCase("B2_D40_L301_K4", 2, 40, 301, 4), id="B2_D40_L301_K4"),
    pytest.param(ConvCase("B2_D40_L301_K3_rev_bf16", 2, 40, 301, 3, "bfloat16", reverse=True), id="rev_bf16"),
    pytest.param(ConvCase("B3_D24_L77_K4_channel_major_bf16", 3, 24, 77, 4, "bfloat16", channel_major=True),
                 id="channel_major_bf16"),
    pytest.param(ConvCase("B8_D2048_L2048_K4_bf16", 8, 2048, 2048, 4, "bfloat16"), id="layer_size_bf16"),
])
def test_gpu_matches_reference(cuda_device, case):
    errs = _errors(case, cuda_device)
    assert errs.pop("dtypes_ok") == 1.0 and errs.pop("finite") == 1.0
    tol = {"float32": 1e-5, "bfloat16": 1e-2}[case.dtype]
    assert all(v < tol for v in errs.values()), errs


if __name__ == "__main__" and "--interp-worker" in sys.argv:
    print(json.dumps(_interp_worker()))
