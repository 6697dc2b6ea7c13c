"""SS2D / SS3D / VSSBlock: the fused core against the materialised (VMamba) pipeline and the
reference oracle, every registered strategy in 2-D and 3-D, train and eval, errors."""

from __future__ import annotations

import copy

import pytest
import torch

from ssmkit.layers.ss2d import SS2D, SS3D, VSSBlock
from ssmkit.registry import create_block, create_scan, list_scans
from tests.conftest import rel_err

SHAPES = {2: (5, 7), 3: (3, 5, 4)}


def _strategy_dims():
    for name in list_scans():
        for dims in (2, 3):
            if create_scan(name).supports(dims):
                yield pytest.param(name, dims, id=f"{name}-{dims}d")


STRATEGY_DIMS = list(_strategy_dims())


def _grads(module, x, gy):
    params = [p for p in module.parameters() if p.requires_grad]
    out = module(x)
    return out, torch.autograd.grad(out, [x] + params, gy)


def _twin(layer, **changes):
    other = copy.deepcopy(layer)
    for k, v in changes.items():
        setattr(other, k, v)
    return other


@pytest.mark.parametrize("strategy,dims", STRATEGY_DIMS)
def test_fused_matches_materialized_forward_and_gradients(strategy, dims):
    layer = SS2D(d_model=6, d_state=3, strategy=strategy, spatial_dims=dims)
    ref = _twin(layer, impl="materialized")
    x = torch.randn(2, 6, *SHAPES[dims], requires_grad=True)
    gy = torch.randn(2, 6, *SHAPES[dims])
    out, grads = _grads(layer, x, gy)
    out_ref, grads_ref = _grads(ref, x, gy)
    assert out.shape == x.shape
    assert rel_err(out, out_ref) < 1e-5
    names = ["x"] + [n for n, _ in layer.named_parameters()]
    for name, a, b in zip(names, grads, grads_ref):
        assert rel_err(a, b) < 1e-5, name


@pytest.mark.parametrize("strategy,dims,share", [("cross", 2, False), ("sass", 2, True), ("tri_orient", 3, False),
                                                 ("snake", 3, True)])
def test_fused_chunked_matches_reference_oracle(strategy, dims, share):
    # Oracle: the materialised pipeline on the loop-over-time reference scan.
    shape = (3, 4) if dims == 2 else (2, 3, 2)
    layer = SS2D(d_model=4, d_state=2, strategy=strategy, spatial_dims=dims, share_proj=share, backend="chunked")
    oracle = _twin(layer, impl="materialized", backend="reference")
    x = torch.randn(2, 4, *shape, requires_grad=True)
    gy = torch.randn(2, 4, *shape)
    out, grads = _grads(layer, x, gy)
    out_ref, grads_ref = _grads(oracle, x, gy)
    assert rel_err(out, out_ref) < 1e-4
    for a, b in zip(grads, grads_ref):
        assert rel_err(a, b) < 1e-4


def test_bf16_fused_matches_materialized():
    layer = SS2D(d_model=8, d_state=4, strategy="cross").to(torch.bfloat16)
    ref = _twin(layer, impl="materialized")
    x = torch.randn(2, 8, 5, 6, dtype=torch.bfloat16, requires_grad=True)
    gy = torch.randn(2, 8, 5, 6, dtype=torch.bfloat16)
    out, grads = _grads(layer, x, gy)
    out_ref, grads_ref = _grads(ref, x, gy)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, out_ref) < 1e-2
    for a, b in zip(grads, grads_ref):
        assert rel_err(a, b) < 1e-2
    # and against the float32 layer, to catch a bf16-only blow-up
    f32 = _twin(layer).float()
    assert rel_err(out, f32(x.detach().float())) < 5e-2


BLOCK_CASES = [pytest.param(block, *case.values, id=f"{block}-{case.id}") for case in STRATEGY_DIMS
               for block in ("ss2d", "ss3d", "vss_block") if block != "ss3d" or case.values[1] == 3]


@pytest.mark.parametrize("block,strategy,dims", BLOCK_CASES)
def test_registered_blocks_every_strategy_train_and_eval(block, strategy, dims):
    kwargs = {"d_model": 8, "strategy": strategy, "spatial_dims": dims}
    if block == "vss_block":
        kwargs["drop_path"] = 0.2
    else:
        kwargs["dropout"] = 0.1
    m = create_block(block, **kwargs)
    assert m.input_kind == ("image2d" if dims == 2 else "volume3d")
    x = m.example_input(2)
    assert x.shape == (2, 8, *SHAPES[dims])
    m.train()
    y = m(x)
    y.square().mean().backward()
    assert y.shape == x.shape
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in m.parameters())
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))


@pytest.mark.parametrize("name", ["ss2d", "ss3d", "vss_block"])
def test_registered_defaults_are_tiny(name):
    m = create_block(name, d_model=16)
    assert sum(p.numel() for p in m.parameters()) < 50_000
    x = m.example_input(1)
    assert m(x).shape == x.shape


def test_ss3d_alias_defaults():
    m = SS3D(d_model=8)
    assert m.spatial_dims == 3 and m.strategy.name == "tri_orient" and m.num_paths == 3
    assert SS2D(d_model=8, spatial_dims=3, strategy="cross").num_paths == 6


def test_channels_last_matches_channels_first():
    a = SS2D(d_model=6, strategy="snake")
    b = _twin(a, channels_last=True)
    x = torch.randn(2, 6, 4, 5)
    torch.testing.assert_close(b(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), a(x), rtol=1e-5, atol=1e-6)
    blk = VSSBlock(d_model=6, spatial_dims=3, mlp_ratio=2.0)
    blk_cl = _twin(blk, channels_last=True)
    v = torch.randn(1, 6, 2, 3, 4)
    torch.testing.assert_close(blk_cl(v.movedim(1, -1)).movedim(-1, 1), blk(v), rtol=1e-5, atol=1e-6)


def test_mean_reduce_and_rms_norm_options():
    layer = SS2D(d_model=6, strategy="cross", reduce="mean", norm="rms")
    ref = _twin(layer, impl="materialized")
    x = torch.randn(1, 6, 3, 4)
    assert rel_err(layer(x), ref(x)) < 1e-5
    with torch.no_grad():
        core_sum = _twin(layer, reduce="sum").core(torch.randn(1, 12, 3, 4))
    assert core_sum.shape == (1, 12, 3, 4)


def test_per_path_parameters():
    layer = SS2D(d_model=16, d_state=4, strategy="cross")
    K, Di = 4, 32
    assert layer.A_log.shape == (K * Di, 4) and layer.D.shape == (K * Di,)
    assert layer.x_proj_weight.shape == (K, layer.dt_rank + 8, Di)
    shared = SS2D(d_model=16, d_state=4, strategy="cross", share_proj=True)
    assert shared.x_proj_weight.shape[0] == 1 and shared.dt_proj_weight.shape[0] == 1


def test_vss_block_without_mlp_and_drop_path_is_stochastic_in_train():
    blk = VSSBlock(d_model=6, mlp_ratio=0, drop_path=0.5)
    assert blk.mlp is None
    x = torch.randn(8, 6, 3, 3)
    blk.train()
    outs = [blk(x) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="sass.*spatial_dims"):
        SS2D(d_model=8, strategy="sass", spatial_dims=3)
    with pytest.raises(ValueError, match="tri_orient"):
        SS2D(d_model=8, strategy="tri_orient", spatial_dims=2)
    with pytest.raises(ValueError, match="Did you mean 'cross'"):
        SS2D(d_model=8, strategy="crosss")
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        SS2D(d_model=8, spatial_dims=1)
    with pytest.raises(ValueError, match="d_conv must be odd"):
        SS2D(d_model=8, d_conv=4)
    with pytest.raises(ValueError, match="impl"):
        SS2D(d_model=8, impl="fast")
    with pytest.raises(TypeError, match="ScanStrategy"):
        SS2D(d_model=8, strategy=3)
    layer = SS2D(d_model=8)
    with pytest.raises(ValueError, match=r"expects input \[B, 8, H, W\]; got \[2, 4, 5, 5\]"):
        layer(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"\[B, 8, D, H, W\]"):
        SS3D(d_model=8)(torch.randn(2, 8, 5, 5))
    with pytest.raises(ValueError, match="VSSBlock expects a 2-D map"):
        VSSBlock(d_model=8)(torch.randn(2, 8, 5))


LAYER_UNDER_INTERPRETER = """
import json, os, copy
assert os.environ["TRITON_INTERPRET"] == "1"
import torch
from ssmkit.layers.ss2d import SS2D

torch.manual_seed(0)
errs = []
for dims, shape, strategy in ((2, (2, 3), "sass"), (3, (2, 1, 2), "tri_orient")):
    # d_inner 8: with 2 channels the LayerNorm before the gate cancels the scan's gradients
    # almost exactly and any rounding difference looks like a large relative error.
    fused = SS2D(d_model=4, d_state=2, expand=2, strategy=strategy, spatial_dims=dims, backend="triton")
    oracle = copy.deepcopy(fused)
    oracle.impl, oracle.backend = "materialized", "reference"
    x = torch.randn(1, 4, *shape, requires_grad=True)
    gy = torch.randn(1, 4, *shape)
    outs = []
    for m in (fused, oracle):
        y = m(x)
        outs.append([y] + list(torch.autograd.grad(y, [x] + list(m.parameters()), gy)))
    errs.append(max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in zip(*outs)))
print("RESULT" + json.dumps(errs))
"""


@pytest.mark.slow
def test_layer_with_fused_triton_kernels_under_interpreter():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", LAYER_UNDER_INTERPRETER], cwd=Path(__file__).resolve().parents[3],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errs = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))[len("RESULT"):])
    assert len(errs) == 2 and all(e < 1e-5 for e in errs), errs


@pytest.mark.gpu
@pytest.mark.parametrize("strategy,dims", [("cross", 2), ("sass", 2), ("tri_orient", 3)])
def test_fused_layer_on_gpu_reads_the_channels_last_map(cuda_device, no_tf32, strategy, dims, monkeypatch):
    # On CUDA the fused core gets the conv output channels-last and "auto" sends it to the
    # Triton path_index mode; it must match the materialised pipeline, values and gradients.
    from ssmkit.ops.selective_scan import triton_scan

    seen = []
    real = triton_scan.selective_scan_triton

    def spy(u, *args, **kw):
        seen.append((kw.get("path_index") is not None, u.stride(1) == 1))
        return real(u, *args, **kw)

    monkeypatch.setattr(triton_scan, "selective_scan_triton", spy)
    # no_tf32: the two impls run the conv in different memory formats, whose TF32 round-offs
    # (~3e-4) would hide a real error.
    layer = SS2D(d_model=24, d_state=8, strategy=strategy, spatial_dims=dims, device=cuda_device)
    ref = _twin(layer, impl="materialized")
    shape = (13, 11) if dims == 2 else (5, 6, 7)
    x = torch.randn(2, 24, *shape, device=cuda_device, requires_grad=True)
    gy = torch.randn(2, 24, *shape, device=cuda_device)
    out, grads = _grads(layer, x, gy)
    assert seen and all(path and cl for path, cl in seen), seen
    out_ref, grads_ref = _grads(ref, x, gy)
    assert rel_err(out, out_ref) < 1e-4
    for name, a, b in zip(["x"] + [n for n, _ in layer.named_parameters()], grads, grads_ref):
        assert rel_err(a, b) < 1e-4, name
