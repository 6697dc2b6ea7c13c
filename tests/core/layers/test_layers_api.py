"""The public face of ssmkit.layers: exported names, device/dtype, no_weight_decay, fx tracing.

Parametrized over ``list_blocks()``, so a block registered later is held to the same contract.
"""

from __future__ import annotations

import pytest
import torch
from test_registry_blocks import example_inputs

import ssmkit.layers
from ssmkit.registry import create_block, get, list_blocks

# Modules whose own parameters must follow the dtype= argument (weights of the dense maths).
_DENSE = (torch.nn.Linear, torch.nn.modules.conv._ConvNd, torch.nn.LayerNorm, torch.nn.GroupNorm,
          torch.nn.modules.batchnorm._BatchNorm, torch.nn.MultiheadAttention)


def test_every_registered_block_is_exported():
    exported = {getattr(ssmkit.layers, n) for n in ssmkit.layers.__all__}
    missing = sorted(n for n in list_blocks() if get("block", n) not in exported)
    assert not missing, f"registered blocks missing from ssmkit.layers.__all__: {missing}"
    from ssmkit.layers import SS2D, Mamba  # the form users write
    assert Mamba is get("block", "mamba") and SS2D is get("block", "ss2d")


@pytest.mark.parametrize("name", list_blocks())
def test_block_takes_device_and_dtype(name):
    meta = create_block(name, d_model=16, device="meta", dtype=torch.float64)
    params = list(meta.parameters()) + list(meta.buffers())
    assert params and all(p.device.type == "meta" for p in params), \
        f"{name}: device='meta' did not reach {[n for n, p in meta.named_parameters() if p.device.type != 'meta']}"
    for mod_name, mod in meta.named_modules():
        if isinstance(mod, _DENSE):
            for p_name, p in mod.named_parameters(recurse=False):
                assert p.dtype == torch.float64, f"{name}: {mod_name}.{p_name} is {p.dtype}, expected float64"
    # The state-space parameters may stay float32 by design (the scans compute in float32), but no
    # floating parameter may be left in a third dtype.
    odd = [n for n, p in meta.named_parameters() if p.is_floating_point() and p.dtype not in (torch.float64,
                                                                                               torch.float32)]
    assert not odd, f"{name}: parameters {odd} are neither float64 nor float32"

    torch.manual_seed(0)
    block = create_block(name, d_model=16, dtype=torch.float64).eval()
    xs = tuple(x.double() for x in example_inputs(block))
    with torch.no_grad():
        out = block(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    assert all(o.dtype == torch.float64 for o in outs), f"{name}: float64 block returned {[o.dtype for o in outs]}"


@pytest.mark.parametrize("name", list_blocks())
def test_no_weight_decay_names_flags_and_1d(name):
    block = create_block(name, d_model=16)
    names = block.no_weight_decay()
    params = dict(block.named_parameters())
    assert isinstance(names, set) and names <= params.keys(), f"{name}: unknown names {names - params.keys()}"
    want = {n for n, p in params.items() if p.ndim <= 1 or getattr(p, "_no_weight_decay", False)}
    assert names == want, f"{name}: missing {sorted(want - names)}, extra {sorted(names - want)}"
    assert any(p.ndim >= 2 and n not in names for n, p in params.items()), f"{name}: nothing left to decay"


def test_state_space_parameters_are_flagged():
    # The parameters whose decay would change the dynamics, not regularise; 2-D ones only timm's
    # 1-D rule would miss.
    expect = {
        "mamba": {"A_log"}, "ss2d": {"A_log", "dt_proj_bias"}, "s4d": {"kernel.log_A_real", "kernel.log_dt"},
        "lru": {"nu_log", "theta_log", "gamma_log"}, "mega": {"ema_alpha", "ema_delta"},
    }
    for name, flagged in expect.items():
        names = create_block(name, d_model=16).no_weight_decay()
        assert flagged <= names, f"{name}: {sorted(flagged - names)} would be weight-decayed"


@pytest.mark.parametrize("name, kwargs, shape", [
    ("gbc", {}, (2, 16, 5, 7)),
    ("hgconv", {}, (2, 16, 5, 7)),
    ("hgconv", {"spatial_dims": 3}, (1, 16, 3, 4, 5)),
])
def test_symbolic_trace_keeps_output_and_input_check(name, kwargs, shape):
    block = create_block(name, d_model=16, **kwargs).eval()
    traced = torch.fx.symbolic_trace(block)
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.equal(traced(x), block(x))
    targets = {getattr(n.target, "__name__", "") for n in traced.graph.nodes if n.op == "call_function"}
    assert "_check_input" in targets, "the input check was traced away"
    with pytest.raises(ValueError, match="C=16"):
        traced(torch.randn(shape[0], 15, *shape[2:]))
