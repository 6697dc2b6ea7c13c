"""The fused multi-path scan (the Triton selective scan's path_index mode: u and the merged
output gradient read through the path index inside the kernels) against the materialising
reference, under TRITON_INTERPRET=1 at tiny sizes on the CPU, and on a GPU when marked.

The interpreter must be switched on before Triton is imported, so the CPU check runs in a
fresh interpreter process with the variable set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]

CHECK = textwrap.dedent(
    """
    import json, os
    assert os.environ["TRITON_INTERPRET"] == "1"
    import torch
    from ssmkit.ops.path_scan import fused_path_scan, path_scan_reference
    from ssmkit.ops.selective_scan import triton_scan
    from ssmkit.registry import create_scan

    def nan_empty(*shape, **kw):  # any element a kernel forgets to write stays NaN
        t = torch.empty(*shape, **kw)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    def nan_like(x, **kw):
        t = torch.empty_like(x, **kw)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    triton_scan._empty, triton_scan._empty_like = nan_empty, nan_like

    torch.manual_seed(0)
    results = []
    # (strategy, shape, D per path, N, groups per path, reduce, dtype, D/bias given, with grads,
    #  u as a channels-last map: a [B, D, L] view of [B, L, D] storage, read in place)
    cases = [("cross", (3, 5), 3, 4, 1, "sum", torch.float32, True, True, False),
             ("sass", (2, 3), 4, 2, 2, "none", torch.float32, True, True, True),
             ("bidirectional", (1, 7), 8, 2, 4, "mean", torch.float32, False, True, True),
             ("tri_orient", (2, 1, 3), 2, 4, 1, "mean", torch.bfloat16, False, False, False),
             ("cross", (2, 3), 3, 2, 1, "none", torch.float32, False, True, False),
             ("snake", (3, 2), 2, 2, 1, "sum", torch.bfloat16, True, False, True)]
    for strategy, shape, dim, n, gpp, reduce, dtype, extras, grads, cl in cases:
        index = create_scan(strategy).index(shape)
        K, L = index.shape
        nb = 2 if strategy == "sass" else 1  # the interpreter is slow: one case covers batch strides
        u = torch.randn(nb, L, dim).transpose(1, 2) if cl else torch.randn(nb, dim, L)
        ts = [u, 0.5 * torch.randn(nb, K * dim, L), -(torch.rand(K * dim, n) + 0.5),
              torch.randn(nb, K * gpp, n, L), torch.randn(nb, K * gpp, n, L)]
        ts = [t.to(dtype) if i != 2 else t for i, t in enumerate(ts)]
        ts += [torch.randn(K * dim), 0.3 * torch.randn(K * dim)] if extras else [None, None]
        if grads:
            leaves = [t.requires_grad_(True) for t in ts if t is not None]
            # Tiny tiles (T_fwd, T_bwd, seg) make every sequence cross chunk and segment boundaries:
            # the carried state, the adjoint carry and the rebuilt chunk-entry states are all used.
            tiles = (4, 2, 8) if strategy == "cross" else (4, 4, 8)
            triton_scan.set_tile_config(T_fwd=tiles[0], T_bwd=tiles[1], seg=tiles[2])
            out = fused_path_scan(*ts[:5], index, D=ts[5], delta_bias=ts[6], reduce=reduce, backend="triton")
            triton_scan.set_tile_config()
        else:
            with torch.no_grad():
                out = fused_path_scan(*ts[:5], index, D=ts[5], delta_bias=ts[6], reduce=reduce, backend="triton")
        f32 = [None if t is None else t.detach().float().requires_grad_(grads) for t in ts]
        ref = path_scan_reference(*f32[:5], index, D=f32[5], delta_bias=f32[6], reduce=reduce)
        err = float((out.detach().float() - ref.detach()).abs().max() / ref.detach().abs().max())
        gerr = []
        if grads:
            gy = torch.randn_like(ref)
            g_out = torch.autograd.grad(out, leaves, gy)
            g_ref = torch.autograd.grad(ref, [t for t in f32 if t is not None], gy)
            gerr = [float((a - b).abs().max() / b.abs().max()) for a, b in zip(g_out, g_ref)]
        # a channels-last map gives channels-last merged outputs (the in-place layout was used)
        cl_out = reduce != "none" and out.stride() == (L * dim, 1, dim)
        results.append({"case": strategy, "cl": cl, "cl_out": cl_out, "err": err, "grad_errs": gerr,
                        "dtype": str(out.dtype), "shape": list(out.shape), "want_shape": list(ref.shape),
                        "finite": bool(torch.isfinite(out.float()).all())
                        and all(bool(torch.isfinite(g).all()) for g in (g_out if grads else []))})
    print("RESULT" + json.dumps(results))
    """
)


def test_fused_kernel_matches_reference_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    results = json.loads(line[len("RESULT"):])
    assert len(results) == 6
    for r in results:
        assert r["shape"] == r["want_shape"], r
        assert r["finite"], r
        tol = 1e-2 if "bfloat16" in r["dtype"] else 1e-5
        assert r["err"] < tol, r
        assert all(e < 1e-5 for e in r["grad_errs"]), r
    assert [len(r["grad_errs"]) for r in results] == [7, 7, 5, 0, 5, 0]  # every input's gradient checked
    assert results[3]["dtype"] == results[5]["dtype"] == "torch.bfloat16"
    assert [r["cl_out"] for r in results] == [False, False, True, False, False, True]


@pytest.mark.gpu
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("reduce", ["sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernel_on_gpu(cuda_device, reduce, dtype, channels_last):
    from ssmkit.ops.path_scan import fused_path_scan, path_scan_reference
    from ssmkit.registry import create_scan
    from tests.conftest import rel_err

    index = create_scan("cross").index((13, 11), cuda_device)
    K, L = index.shape
    dim, n = 40, 16
    u = torch.randn(2, dim, L, device=cuda_device).to(dtype)
    if channels_last:
        u = u.transpose(1, 2).contiguous().transpose(1, 2)
    delta = (0.5 * torch.randn(2, K * dim, L, device=cuda_device)).to(dtype)
    A = -(torch.rand(K * dim, n, device=cuda_device) + 0.5)
    B = torch.randn(2, K, n, L, device=cuda_device).to(dtype)
    C = torch.randn(2, K, n, L, device=cuda_device).to(dtype)
    D = torch.randn(K * dim, device=cuda_device)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-4
    with torch.no_grad():
        out = fused_path_scan(u, delta, A, B, C, index, D=D, reduce=reduce, backend="triton")
    ref = path_scan_reference(u.float(), delta.float(), A, B.float(), C.float(), index, D=D, reduce=reduce)
    assert rel_err(out, ref) < tol
    leaves = [t.detach().requires_grad_(True) for t in (u, delta, A, B, C, D)]
    out = fused_path_scan(*leaves[:5], index, D=leaves[5], reduce=reduce, backend="triton")
    f32 = [t.detach().float().requires_grad_(True) for t in leaves]
    ref = path_scan_reference(*f32[:5], index, D=f32[5], reduce=reduce)
    gy = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, leaves, gy.to(out.dtype)), torch.autograd.grad(ref, f32, gy)):
        assert rel_err(a, b) < tol


def test_int32_index_cache_follows_identity_and_in_place_edits():
    # The host side converts a path index to int32 once per index tensor; an in-place edit (a new
    # version) or another tensor with the same values must not be served a stale conversion.
    from ssmkit.ops.selective_scan.triton_scan import _int32_index

    idx = torch.arange(12).view(2, 6)
    first = _int32_index(idx, idx.device)
    assert first.dtype == torch.int32 and torch.equal(first, idx.int())
    assert _int32_index(idx, idx.device) is first
    idx[1] = idx[1].flip(0)
    assert torch.equal(_int32_index(idx, idx.device), idx.int())
    other = idx.clone()
    assert _int32_index(other, other.device) is not _int32_index(idx, idx.device)


def test_channels_last_map_detects_only_the_transposed_layout():
    from ssmkit.ops.utils import channels_last_map

    cl = torch.randn(2, 6, 5).transpose(1, 2)  # [B, D=5, L=6] view of [B, L, D]
    assert channels_last_map(cl)
    assert not channels_last_map(cl.contiguous())
    assert not channels_last_map(torch.randn(2, 6, 10).transpose(1, 2)[:, ::2])  # strided channels
    img = torch.randn(2, 5, 3, 4).contiguous(memory_format=torch.channels_last)
    assert channels_last_map(img.flatten(2))
