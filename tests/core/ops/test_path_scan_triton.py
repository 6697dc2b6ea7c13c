"""The fused Triton multi-path scan (in-kernel gather/scatter) against the materialising
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
    from ssmkit.registry import create_scan

    torch.manual_seed(0)
    results = []
    # (strategy, shape, D per path, N, groups per path, reduce, dtype, D/bias given)
    cases = [("cross", (3, 5), 3, 4, 1, "sum", torch.float32, True),
             ("sass", (2, 3), 4, 2, 2, "none", torch.float32, True),
             ("tri_orient", (2, 1, 3), 2, 4, 1, "mean", torch.bfloat16, False)]
    for strategy, shape, dim, n, gpp, reduce, dtype, extras in cases:
        index = create_scan(strategy).index(shape)
        K, L = index.shape
        u = torch.randn(2, dim, L).to(dtype)
        delta = (0.5 * torch.randn(2, K * dim, L)).to(dtype)
        A = -(torch.rand(K * dim, n) + 0.5)
        B = torch.randn(2, K * gpp, n, L).to(dtype)
        C = torch.randn(2, K * gpp, n, L).to(dtype)
        D = torch.randn(K * dim) if extras else None
        bias = 0.3 * torch.randn(K * dim) if extras else None
        with torch.no_grad():
            out = fused_path_scan(u, delta, A, B, C, index, D=D, delta_bias=bias, reduce=reduce, backend="triton")
        ref = path_scan_reference(u.float(), delta.float(), A, B.float(), C.float(), index, D=D,
                                  delta_bias=bias, reduce=reduce)
        err = float((out.float() - ref).abs().max() / ref.abs().max())
        results.append({"case": strategy, "err": err, "dtype": str(out.dtype), "shape": list(out.shape),
                        "want_shape": list(ref.shape), "finite": bool(torch.isfinite(out.float()).all())})
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
    assert len(results) == 3
    for r in results:
        assert r["shape"] == r["want_shape"], r
        assert r["finite"], r
        tol = 1e-2 if "bfloat16" in r["dtype"] else 1e-5
        assert r["err"] < tol, r
    assert results[2]["dtype"] == "torch.bfloat16"


@pytest.mark.gpu
@pytest.mark.parametrize("reduce", ["sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernel_on_gpu(cuda_device, reduce, dtype):
    from ssmkit.ops.path_scan import fused_path_scan, path_scan_reference
    from ssmkit.registry import create_scan
    from tests.conftest import rel_err

    index = create_scan("cross").index((13, 11), cuda_device)
    K, L = index.shape
    dim, n = 40, 16
    u = torch.randn(2, dim, L, device=cuda_device).to(dtype)
    delta = (0.5 * torch.randn(2, K * dim, L, device=cuda_device)).to(dtype)
    A = -(torch.rand(K * dim, n, device=cuda_device) + 0.5)
    B = torch.randn(2, K, n, L, device=cuda_device).to(dtype)
    C = torch.randn(2, K, n, L, device=cuda_device).to(dtype)
    D = torch.randn(K * dim, device=cuda_device)
    with torch.no_grad():
        out = fused_path_scan(u, delta, A, B, C, index, D=D, reduce=reduce, backend="triton")
    ref = path_scan_reference(u.float(), delta.float(), A, B.float(), C.float(), index, D=D, reduce=reduce)
    assert rel_err(out, ref) < (1e-2 if dtype == torch.bfloat16 else 1e-4)
