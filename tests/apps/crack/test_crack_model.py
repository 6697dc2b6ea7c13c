"""Every registered crack model: shapes, gradients, padding; the parts that have an exact identity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmkit.layers.gated_conv import GBC
from ssmkit.layers.ss2d import SS2D
from ssmkit.registry import create_model, list_models
from ssmkit_apps.crack.model import VARIANTS, DynamicUpsample, SCSegamba, UNet, gflops, param_count

TINY = ["scsegamba_tiny", "crack_unet_tiny"]


def test_variants_are_registered_timm_style():
    names = {n for sizes in VARIANTS.values() for n in sizes.values()}
    assert names == {"scsegamba_tiny", "scsegamba", "scsegamba_large", "crack_unet_tiny", "crack_unet",
                     "crack_unet_large"}
    assert names <= set(list_models())


@pytest.mark.parametrize("name", TINY)
def test_forward_backward_any_size(name):
    model = create_model(name)
    x = model.example_input(2, 32)
    out = model(x)
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()
    out.float().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "a parameter got no gradient"
    # sizes that are not multiples of the patch size are padded inside and cropped back
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 27, 41)).shape == (1, 1, 27, 41)
    with pytest.raises(ValueError, match=r"RGB images \[B, 3, H, W\]"):
        model(torch.rand(1, 1, 16, 16))


def test_scsegamba_is_built_from_the_core_blocks():
    model = create_model("scsegamba_tiny")
    mixers = [m for m in model.modules() if isinstance(m, SS2D)]
    assert len(mixers) == 4 and all(m.strategy.name == "sass" and m.num_paths == 4 for m in mixers)
    assert sum(isinstance(m, GBC) for m in model.modules()) == 4 * 2 + 1  # two per layer, one in the head
    assert float(model.threshold) == 0.5 and "threshold" in model.state_dict()


def test_default_sizes_match_the_paper_and_each_other():
    scs, unet = create_model("scsegamba"), create_model("crack_unet")
    n_scs, n_unet = param_count(scs), param_count(unet)
    assert 2.6e6 < n_scs < 3.1e6  # the paper reports 2.8M
    assert abs(n_unet - n_scs) / n_scs < 0.05
    assert param_count(create_model("scsegamba_tiny")) <= param_count(create_model("crack_unet_tiny"))


def test_flop_counter_sees_convs_and_projections():
    g = gflops(create_model("crack_unet_tiny"), size=32)
    # U-Net at base 5: the first double conv alone is 2 * 32*32 * (3*5 + 5*5) * 9 MACs
    assert g > 2 * 32 * 32 * (3 * 5 + 5 * 5) * 9 / 1e9
    assert gflops(create_model("scsegamba_tiny"), size=32) > 0


def test_dynamic_upsample_starts_as_bilinear():
    up = DynamicUpsample(4, scale=4)
    x = torch.randn(2, 4, 5, 6)
    ref = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up(x), ref, atol=1e-5, rtol=1e-5)
    torch.nn.init.normal_(up.offset.weight)
    assert (up(x) - ref).abs().max() > 1e-3  # the offsets do move the sampling points


def test_model_arguments_are_checked():
    with pytest.raises(ValueError, match="n_layers must be an int >= 4"):
        SCSegamba(channels=16, n_layers=2)
    with pytest.raises(ValueError, match="multiple of 8"):
        SCSegamba(channels=12)
    with pytest.raises(ValueError, match="base must be an int >= 2"):
        UNet(base=1)
    with pytest.raises(ValueError, match="takes no argument 'chanels'"):
        create_model("scsegamba_tiny", chanels=16)
