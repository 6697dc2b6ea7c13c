"""The plan from spacing and shape, MambaClinix's structure and outputs, and the MONAI baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssmkit.layers.gated_conv import HGConv
from ssmkit.layers.ss2d import VSSBlock
from ssmkit.registry import create_model
from ssmkit_apps.medseg.model import MambaClinix
from ssmkit_apps.medseg.plan import auto_patch, ct_window, make_plan, plan_stages


def test_plan_keeps_thick_slices_unpooled_until_in_plane_catches_up():
    # 0.7 x 0.7 x 3 mm (ratio > 2): z is neither pooled nor convolved across until x/y reach 2.8 mm
    strides, kernels = plan_stages([64, 64, 16], [0.7, 0.7, 3.0], max_stages=5)
    assert strides == [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]]
    assert kernels[:3] == [[3, 3, 1], [3, 3, 1], [3, 3, 3]]
    assert len(kernels) == 5


def test_plan_stops_at_min_size():
    # z: 8 -> 4, then 4 // 2 < 4 stops it; x/y: 16 -> 8 -> 4, then stop
    assert plan_stages([16, 16, 8], [1.0, 1.0, 1.0], max_stages=6)[0] == [[1, 1, 1], [2, 2, 2], [2, 2, 1]]
    assert plan_stages([64, 64, 64], [1.0, 1.0, 1.0], max_stages=3)[0] == [[1, 1, 1], [2, 2, 2], [2, 2, 2]]


def test_make_plan_uses_median_spacing_and_shape():
    spacings = [np.array([1.0, 1.0, 2.0]), np.array([1.0, 1.0, 1.6]), np.array([1.0, 1.0, 1.6])]
    shapes = [np.array([64, 64, 30]), np.array([64, 64, 40]), np.array([60, 64, 40])]
    plan = make_plan(spacings, shapes, ["bg", "a"], ["CT"], max_patch_voxels=32 * 32 * 32)
    assert plan.spacing == [1.0, 1.0, 1.6]
    assert plan.median_shape == [64, 64, 40]  # the 2 mm case is 30 * 2 / 1.6 = 37.5 slices
    assert np.prod(plan.patch_size) <= 32 * 32 * 32 and all(p % 16 == 0 for p in plan.patch_size)
    assert plan.in_channels == 1 and plan.n_classes == 2
    assert auto_patch([40, 50, 20], 10**9) == [48, 64, 32]
    assert ct_window([np.arange(1000.0)]) == pytest.approx([4.995, 994.005])


def test_mambaclinix_stages_and_deep_supervision():
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 1], [2, 2, 2]]
    kernels = [[3, 3, 3], [3, 3, 3], [3, 3, 1], [3, 3, 3]]
    net = MambaClinix(2, 4, strides, kernels, features=8, mamba_stages=2, scan="snake", d_state=4, hg_kernel=3)
    assert net.stage_kinds == ["hgconv", "hgconv", "ss3d", "ss3d"]
    assert all(isinstance(b, HGConv) for b in net.blocks[0]) and all(isinstance(b, VSSBlock) for b in net.blocks[3])
    assert net.blocks[2][0].mixer.strategy.name == "snake"
    assert net.divisor == [8, 8, 4]
    x = torch.randn(1, 2, 16, 16, 8)
    net.train()
    outs = net(x)
    assert [tuple(o.shape) for o in outs] == [(1, 4, 16, 16, 8), (1, 4, 8, 8, 4), (1, 4, 4, 4, 4)]
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if not n.startswith("heads.2"))
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (1, 4, 16, 16, 8)
    with pytest.raises(ValueError, match=r"multiple of \(8, 8, 4\)"):
        net(torch.randn(1, 2, 12, 16, 8))
    with pytest.raises(ValueError, match=r"\[B, 2, X, Y, Z\]"):
        net(torch.randn(1, 1, 16, 16, 8))


def test_mambaclinix_scan_strategy_must_support_3d():
    with pytest.raises(ValueError, match="spatial_dims"):
        MambaClinix(1, 2, [[1, 1, 1], [2, 2, 2]], features=8, mamba_stages=1, scan="sass")
    with pytest.raises(ValueError, match="mamba_stages"):
        MambaClinix(1, 2, [[1, 1, 1], [2, 2, 2]], features=8, mamba_stages=3)


def test_hgconv_stages_gate_by_multiplication():
    """Zeroing the depthwise gate features silences each shallow stage's g^n interaction."""
    net = MambaClinix(1, 2, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], features=8, mamba_stages=1, hg_kernel=3).eval()
    gn = net.blocks[0][0].gnconv
    x = torch.randn(1, 8, 8, 8, 8)
    gn.dwconv.register_forward_hook(lambda m, a, out: out * 0)
    assert torch.equal(gn.interaction(x), torch.zeros_like(gn.interaction(x)))


@pytest.mark.parametrize("name", ["medseg_mambaclinix", "medseg_unet", "medseg_swinunetr"])
def test_registered_models_share_the_interface(name):
    kw = {"in_channels": 1, "n_classes": 3}
    if name != "medseg_swinunetr":
        kw.update(strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], features=8)
    else:
        kw.update(swin_features=12, swin_depths=(1, 1, 1, 1))
    net = create_model(name, **kw).eval()
    # SwinUNETR's bottleneck (1/32) needs more than one voxel for its instance norm
    size = (64, 32, 32) if name == "medseg_swinunetr" else (16, 16, 16)
    with torch.no_grad():
        y = net(torch.randn(1, 1, *size))
    assert y.shape == (1, 3, *size)
    assert all(s % d == 0 for s, d in zip(size, net.divisor))
