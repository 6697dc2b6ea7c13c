"""ops.gla: the chunked form against the recurrent reference (outputs, final state, every
gradient), varlen, layouts, validation and backend choice."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from ssmkit.ops.gla import gla, gla_chunked, resolve_backend
from tests.conftest import assert_grads_close, rel_err

TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float64: 1e-10}


def _inputs(B, H, T, K, V, dtype, device="cpu", gate_scale=2.0, with_state=True):
    q = torch.randn(B, H, T, K, device=device)
    k = torch.randn(B, H, T, K, device=device)
    v = torch.randn(B, H, T, V, device=device)
    # a wide gate range: some channels barely decay, some forget almost at once
    gk = F.logsigmoid(torch.randn(B, H, T, K, device=device) * gate_scale + 1.0)
    h0 = torch.randn(B, H, K, V, device=device) if with_state else None
    ins = [t.to(dtype).requires_grad_() for t in (q, k, v, gk)]
    if h0 is not None:
        h0 = h0.to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_()
    return ins, h0


def _run(backend, ins, h0, **kw):
    o, ht = gla(*ins, initial_state=h0, output_final_state=True, backend=backend, **kw)
    # fixed, not all-ones; on o's device, or a CUDA run fails on a device mismatch before any kernel runs
    w = torch.linspace(-1, 1, o.numel(), dtype=torch.float32, device=o.device).reshape(o.shape)
    loss = (o.float() * w).sum() + ht.float().square().sum() * 0.1
    leaves = [*ins] + ([h0] if h0 is not None else [])
    grads = torch.autograd.grad(loss, leaves)
    return o, ht, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,chunk", [pytest.param((2, 3, 63, 5, 7), 16, id="T63_chunk16"),
                                         pytest.param((1, 2, 1, 4, 3), 64, id="T1"),
                                         pytest.param((2, 1, 130, 8, 6), 32, id="T130_chunk32")])
def test_chunked_matches_reference(shape, chunk, dtype):
    ins, h0 = _inputs(*shape, dtype)
    o_r, h_r, g_r = _run("reference", ins, h0)
    o_c, h_c, g_c = _run("chunked", ins, h0, chunk_size=chunk)
    assert o_c.dtype == dtype and o_c.shape == o_r.shape
    tol = TOL[dtype]
    assert rel_err(o_c, o_r) < tol
    assert rel_err(h_c, h_r) < tol
    for name, a, e in zip(["dq", "dk", "dv", "dgk", "dh0"], g_c, g_r):
        assert rel_err(a, e) < tol * (4 if dtype == torch.bfloat16 else 1), name


@pytest.mark.parametrize("log_gate", [-7.0, -2.4, -1e-4])
def test_chunked_long_sequences_stay_finite(log_gate):
    # Constant gates from "forget at once" to "barely decay": over L = 1000 the cumulative decay
    # underflows float32 many times over. Output, final state and every gradient must stay
    # finite and match the float64 reference.
    B, H, T, K, V = 1, 2, 1000, 4, 3
    ins, h0 = _inputs(B, H, T, K, V, torch.float32)
    with torch.no_grad():
        ins[3].fill_(log_gate)
    o_c, h_c, g_c = _run("chunked", ins, h0, chunk_size=64)
    ins64 = [t.detach().double().requires_grad_() for t in ins]
    o_r, h_r, g_r = _run("reference", ins64, h0.detach().double().requires_grad_())
    assert torch.isfinite(o_c).all() and torch.isfinite(h_c).all(), "GLA output or final state is not finite"
    assert rel_err(o_c, o_r) < 1e-3 and rel_err(h_c, h_r) < 1e-3
    assert_grads_close(g_c, g_r, ("q", "k", "v", "gk", "h0"), 1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("intra", ["factorised", "secondary"])
def test_both_intra_chunk_forms_match_reference(intra, dtype):
    # "auto" picks one of these by the decay span; check each explicitly on the same inputs
    ins, h0 = _inputs(2, 3, 45, 5, 7, dtype, gate_scale=0.5)
    o_r, h_r, g_r = _run("reference", ins, h0)
    o, ht = gla_chunked(*ins, scale=5 ** -0.5, initial_state=h0, output_final_state=True, chunk_size=32,
                        subchunk_size=8, intra=intra)
    w = torch.linspace(-1, 1, o.numel(), dtype=torch.float32).reshape(o.shape)
    grads = torch.autograd.grad((o.float() * w).sum() + ht.float().square().sum() * 0.1, [*ins, h0])
    tol = TOL[dtype]
    assert rel_err(o, o_r) < tol and rel_err(ht, h_r) < tol
    assert all(rel_err(a, e) < tol * (4 if dtype == torch.bfloat16 else 1) for a, e in zip(grads, g_r))
    with pytest.raises(ValueError, match="intra must be one of"):
        gla_chunked(*ins, scale=1.0, intra="exact")


def test_chunked_float64_and_gradcheck():
    ins, h0 = _inputs(1, 2, 11, 3, 2, torch.float64)
    o_r, h_r, g_r = _run("reference", ins, h0)
    o_c, h_c, g_c = _run("chunked", ins, h0, chunk_size=8)
    assert o_c.dtype == torch.float64
    assert rel_err(o_c, o_r) < 1e-12 and rel_err(h_c, h_r) < 1e-12
    assert all(rel_err(a, e) < 1e-11 for a, e in zip(g_c, g_r))

    def f(q, k, v, gk, s):
        o, ht = gla(q, k, v, gk, initial_state=s, output_final_state=True, backend="chunked", chunk_size=4)
        return o, ht

    small = [t.detach()[:, :1, :6].clone().requires_grad_() for t in ins]
    assert torch.autograd.gradcheck(f, (*small, h0.detach()[:, :1].clone().requires_grad_()))


def test_strong_decay_stays_finite_and_exact():
    # exp(-b) of a 64-step cumulative gate of -30/step would overflow any float; log-space must not
    ins, h0 = _inputs(1, 2, 150, 4, 3, torch.float32, with_state=True)
    with torch.no_grad():
        ins[3].copy_(torch.full_like(ins[3], -30.0))
        ins[3][..., 0] = -1e-4
    o_r, h_r, g_r = _run("reference", ins, h0)
    o_c, h_c, g_c = _run("chunked", ins, h0)
    assert torch.isfinite(o_c).all() and all(torch.isfinite(g).all() for g in g_c)
    assert rel_err(o_c, o_r) < 1e-4 and rel_err(h_c, h_r) < 1e-4
    assert all(rel_err(a, e) < 1e-4 for a, e in zip(g_c, g_r))


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_varlen_equals_separate_sequences(backend):
    lens = [5, 0, 40, 18]
    H, K, V = 2, 4, 5
    T = sum(lens)
    ins, _ = _inputs(1, H, T, K, V, torch.float32, with_state=False)
    h0 = torch.randn(len(lens), H, K, V, requires_grad=True)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()])
    o, ht = gla(*ins, initial_state=h0, output_final_state=True, cu_seqlens=cu, backend=backend, chunk_size=16)
    for n, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        o_n, h_n = gla(*(t[:, :, s:e] for t in ins), initial_state=h0[n : n + 1], output_final_state=True,
                       backend="reference")
        assert rel_err(o[:, :, s:e], o_n) < 1e-5
        assert rel_err(ht[n : n + 1], h_n) < 1e-5
    # gradients flow into every sequence's initial state
    (g,) = torch.autograd.grad(o.sum() + ht.sum(), h0)
    assert (g.abs().sum(dim=(1, 2, 3)) > 0).all()


def test_time_first_layout_matches_head_first():
    ins, h0 = _inputs(2, 3, 20, 4, 5, torch.float32)
    o_h = gla(*ins, initial_state=h0, backend="chunked")
    o_t = gla(*(t.transpose(1, 2) for t in ins), initial_state=h0, head_first=False, backend="chunked")
    assert o_t.shape == (2, 20, 3, 5)
    assert rel_err(o_t.transpose(1, 2), o_h) < 1e-6


def test_default_scale_and_custom_scale():
    ins, _ = _inputs(1, 1, 9, 4, 2, torch.float32, with_state=False)
    o_default = gla(*ins, backend="reference")
    o_one = gla(*ins, scale=1.0, backend="reference")
    assert rel_err(o_default, o_one * 4 ** -0.5) < 1e-6


def test_validation_errors():
    q = torch.randn(1, 2, 5, 4)
    v = torch.randn(1, 2, 5, 3)
    with pytest.raises(ValueError, match="4-D"):
        gla(q[0], q[0], v[0], q[0])
    with pytest.raises(ValueError, match="one shape"):
        gla(q, q[..., :3], v, q)
    with pytest.raises(ValueError, match="first three dims"):
        gla(q, q, v[:, :, :4], q)
    with pytest.raises(ValueError, match=r"initial_state must be \[N, H, K, V\]"):
        gla(q, q, v, -q.abs(), initial_state=torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"needs batch 1; got q of shape \[2, 2, 5, 4\]"):
        gla(q.expand(2, -1, -1, -1), q.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1), q.expand(2, -1, -1, -1),
            cu_seqlens=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"from 0 to T=5 without decreasing; got \[0, 3, 2, 5\]"):
        gla(q, q, v, -q.abs(), cu_seqlens=torch.tensor([0, 3, 2, 5]))
    with pytest.raises(ValueError, match="must be <= 0"):
        gla(q, q, v, q.abs() + 0.1, check_finite=True)
    with pytest.raises(ValueError, match=r"gla backend must be one of .*; got 'cuda'"):
        gla(q, q, v, -q.abs(), backend="cuda")
    with pytest.raises(TypeError, match="integer"):
        gla(q, q, v, -q.abs(), cu_seqlens=torch.tensor([0.0, 5.0]))


def test_backend_choice_on_cpu(monkeypatch):
    monkeypatch.delenv("SSMKIT_BACKEND", raising=False)
    assert resolve_backend("auto", torch.device("cpu")) == "chunked"
    monkeypatch.setenv("SSMKIT_BACKEND", "reference")
    assert resolve_backend("auto", torch.device("cpu")) == "reference"
    # the fla path is never silently replaced: asking for it on CPU (or without fla) is an error
    with pytest.raises(RuntimeError, match="backend='fla'"):
        resolve_backend("fla", torch.device("cpu"))


def _float64_twin(ins, h0):
    """Float64 leaves holding the same (already rounded) values: the oracle for a fast backend, so the
    comparison measures that backend's error alone, not the sum of two low-precision errors."""
    return [t.detach().double().requires_grad_() for t in ins], h0.detach().double().requires_grad_()


# fla's chunk_gla runs float32 matmuls in TF32 (Triton's default input precision; fla's own tests set
# TRITON_F32_DEFAULT=ieee to avoid it) and keeps bf16 inputs' per-chunk states in bf16
# (fla/ops/gla/chunk.py:1240, states_in_fp32=False); these bounds are max-abs relative errors.
FLA_TOL = {torch.float32: 5e-3, torch.bfloat16: 3e-2}


def _assert_fla_matches_reference(ins, h0, dtype, tol):
    """The fla backend against the float64 reference: output, final state and every gradient."""
    o_r, h_r, g_r = _run("reference", *_float64_twin(ins, h0))
    o_f, h_f, g_f = _run("fla", ins, h0)
    assert o_f.dtype == dtype and h_f.dtype == torch.float32
    assert rel_err(o_f, o_r) < tol and rel_err(h_f, h_r) < tol
    for name, a, e in zip(["dq", "dk", "dv", "dgk", "dh0"], g_f, g_r):
        assert rel_err(a, e) < 4 * tol, name


@pytest.fixture
def fla_installed():
    """fla-core is the optional GPU extra (ssmkit[gpu]); its tests skip where it is not installed."""
    pytest.importorskip("fla", reason="fla-core is not installed (pip install 'ssmkit[gpu]')")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fla_matches_reference_on_gpu(cuda_device, fla_installed, dtype):
    ins, h0 = _inputs(2, 3, 200, 64, 32, dtype, device=cuda_device)
    _assert_fla_matches_reference(ins, h0, dtype, FLA_TOL[dtype])


@pytest.mark.gpu
def test_fla_varlen_on_gpu(cuda_device, fla_installed):
    # host int32 boundaries on purpose: the adapter must hand fla int64 boundaries on q's device
    lens = [37, 1, 90, 0, 64]
    ins, _ = _inputs(1, 2, sum(lens), 32, 16, torch.float32, device=cuda_device, with_state=False)
    h0 = torch.randn(len(lens), 2, 32, 16, device=cuda_device, requires_grad=True)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    o_r, h_r, g_r = _run("reference", *_float64_twin(ins, h0), cu_seqlens=cu)
    o_f, h_f, g_f = _run("fla", ins, h0, cu_seqlens=cu)
    tol = FLA_TOL[torch.float32]
    assert rel_err(o_f, o_r) < tol and rel_err(h_f, h_r) < tol
    for name, a, e in zip(["dq", "dk", "dv", "dgk", "dh0"], g_f, g_r):
        assert rel_err(a, e) < 4 * tol, name


def _standin_chunk_gla(calls):
    """A CPU stand-in with fla-core 0.6.0's ``chunk_gla`` signature, checks and semantics
    (fla/ops/gla/chunk.py:1454-1557), computed by a plain float32 loop written from fla's contract,
    independent of our reference: g is the per-step natural-log gate, o comes back in v's dtype,
    the final state float32 or None."""

    def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False, state_v_first=False,
                  cu_seqlens=None, cu_seqlens_cpu=None):
        calls.append({"state_v_first": state_v_first, "cu_seqlens_cpu": cu_seqlens_cpu is not None})
        if cu_seqlens is not None:
            if q.shape[0] != 1:
                raise ValueError(f"batch size must be 1 with cu_seqlens, got {q.shape[0]}")
            if initial_state is not None and initial_state.shape[0] != len(cu_seqlens) - 1:
                raise ValueError("one initial state per sequence expected")
            # fla's kernels read the boundaries through a device pointer
            assert cu_seqlens.device == q.device and not cu_seqlens.is_floating_point()
            assert cu_seqlens_cpu is None or (cu_seqlens_cpu.device.type == "cpu"
                                              and cu_seqlens_cpu.tolist() == cu_seqlens.tolist())
        if scale is None:
            scale = q.shape[-1] ** -0.5
        if initial_state is not None:
            assert initial_state.dtype == torch.float32, "initial_state must be in float32."
            assert initial_state.device == q.device
        assert q.shape == k.shape == g.shape, "q, k, g must have the same shape."
        assert v.shape == (*q.shape[:3], v.shape[-1]), "v must be [B, T, H, V]"
        B, T, H, K = q.shape
        V = v.shape[-1]
        bounds = [0, T] if cu_seqlens is None else cu_seqlens.tolist()
        N = B if cu_seqlens is None else len(bounds) - 1
        qf, kf, vf, gf = (t.float() for t in (q, k, v, g))
        o = torch.zeros(B, T, H, V, dtype=torch.float32, device=q.device)
        finals = []
        for n in range(N):
            b = n if cu_seqlens is None else 0
            s0, s1 = (0, T) if cu_seqlens is None else (bounds[n], bounds[n + 1])
            h = torch.zeros(H, K, V, device=q.device)
            if initial_state is not None:
                h = h + (initial_state[n].transpose(-1, -2) if state_v_first else initial_state[n])
            for t in range(s0, s1):
                h = gf[b, t].exp()[..., None] * h + kf[b, t][..., None] * vf[b, t][:, None, :]
                o = o.index_put((torch.tensor(b), torch.tensor(t)), (qf[b, t][..., None] * h).sum(-2) * scale)
            finals.append(h.transpose(-1, -2) if state_v_first else h)
        return o.to(v.dtype), (torch.stack(finals) if output_final_state else None)

    return chunk_gla


def _fake_fla(monkeypatch, release: str):
    """Install a stand-in ``fla.ops.gla.chunk_gla`` so the adapter's layout, dtype, device and keyword
    handling is checked without fla-core or a GPU. ``"0.6.0"``: that release's exact signature;
    ``"legacy"``: an old head-first default, the ``offsets`` spelling, no host copy argument."""
    import sys
    import types

    gla_mod = importlib.import_module("ssmkit.ops.gla")  # the package: ssmkit.ops.gla is the function

    calls = []
    real = _standin_chunk_gla(calls)
    if release == "0.6.0":
        chunk_gla = real
    else:
        def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False, offsets=None,
                      head_first=True):
            assert head_first is False, "the adapter must pin head_first=False"
            return real(q, k, v, g, scale, initial_state, output_final_state, cu_seqlens=offsets)

    pkg = types.ModuleType("fla")
    ops = types.ModuleType("fla.ops")
    mod = types.ModuleType("fla.ops.gla")
    mod.chunk_gla = chunk_gla
    pkg.ops, ops.gla = ops, mod
    for name, m in (("fla", pkg), ("fla.ops", ops), ("fla.ops.gla", mod)):
        monkeypatch.setitem(sys.modules, name, m)
    gla_mod._fla_chunk_gla.cache_clear()
    monkeypatch.setattr(gla_mod, "resolve_backend", lambda backend, device: "fla" if backend == "fla" else backend)
    return calls


@pytest.mark.parametrize("release", ["0.6.0", "legacy"])
@pytest.mark.parametrize("head_first", [True, False])
def test_fla_adapter_layout_and_arguments(monkeypatch, release, head_first):
    gla_mod = importlib.import_module("ssmkit.ops.gla")  # the package: ssmkit.ops.gla is the function

    try:
        calls = _fake_fla(monkeypatch, release)
        ins, _ = _inputs(1, 2, 19, 4, 3, torch.float32, with_state=False)
        cu = torch.tensor([0, 8, 19], dtype=torch.int32)
        h0 = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)  # any dtype in, float32 to fla
        args = ins if head_first else [t.transpose(1, 2) for t in ins]
        o, ht = gla_mod.gla(*args, initial_state=h0, output_final_state=True, cu_seqlens=cu, head_first=head_first,
                            backend="fla")
        o_r, ht_r = gla(*ins, initial_state=h0.float(), output_final_state=True, cu_seqlens=cu, backend="reference")
        assert ht.dtype == torch.float32
        assert rel_err(o if head_first else o.transpose(1, 2), o_r) < 1e-6 and rel_err(ht, ht_r) < 1e-6
        assert calls == [{"state_v_first": False, "cu_seqlens_cpu": release == "0.6.0"}]
        # the float32 copy handed to fla stays linked to the caller's state
        (g,) = torch.autograd.grad(ht.sum(), h0)
        assert g.dtype == torch.float64 and g.abs().sum() > 0
    finally:
        gla_mod._fla_chunk_gla.cache_clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fla_adapter_matches_reference_with_standin(monkeypatch, dtype):
    # the GPU test's shape of call (losses, gradients, dtypes) run through the 0.6.0 stand-in on CPU
    gla_mod = importlib.import_module("ssmkit.ops.gla")  # the package: ssmkit.ops.gla is the function

    try:
        _fake_fla(monkeypatch, "0.6.0")
        ins, h0 = _inputs(2, 3, 21, 8, 5, dtype)
        _assert_fla_matches_reference(ins, h0, dtype, TOL[dtype])
    finally:
        gla_mod._fla_chunk_gla.cache_clear()
