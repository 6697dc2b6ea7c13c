"""ssmkit.models through ssmkit's own registry: shapes, gradients, the timm protocol, odd sizes."""

from __future__ import annotations

import pytest
import torch

from ssmkit.models import VSSM, VSSUNet
from ssmkit.registry import create_model, list_models

TINY = {"dims": 8, "depths": (1, 1, 1, 1), "d_state": 2}


def test_models_are_registered():
    assert {"ssmkit_vssm_tiny", "ssmkit_vssm_small", "ssmkit_vss_unet"} <= set(list_models())


def test_variants_keep_their_widths_and_take_overrides():
    tiny = create_model("ssmkit_vssm_tiny", num_classes=10, device="meta")
    small = create_model("ssmkit_vssm_small", num_classes=10, device="meta")
    assert tiny.dims == (96, 192, 384, 768) and tiny.depths == (2, 2, 5, 2)
    assert small.depths == (2, 2, 15, 2)
    n_tiny = sum(p.numel() for p in tiny.parameters())
    assert 20e6 < n_tiny < sum(p.numel() for p in small.parameters())
    over = create_model("ssmkit_vssm_tiny", num_classes=3, **TINY)
    assert over.dims == (8, 16, 32, 64) and over.get_classifier().out_features == 3


def test_vssm_forward_backward_at_an_odd_size():
    torch.manual_seed(0)
    model = create_model("ssmkit_vssm_tiny", num_classes=5, **TINY)
    x = torch.randn(2, 3, 37, 45, requires_grad=True)
    feats = model.forward_features(x)
    assert feats.shape == (2, 64, 1, 1)  # 37 // 4 = 9 -> 4 -> 2 -> 1
    logits = model.forward_head(feats)
    assert logits.shape == (2, 5)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 64)
    (logits * torch.randn_like(logits)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no or non-finite gradient for {missing}"
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    assert [f["num_chs"] for f in model.feature_info] == [8, 16, 32, 64]


def test_vssm_classifier_reset_and_unpooled_head():
    model = VSSM(num_classes=7, **TINY)
    x = torch.randn(1, 3, 32, 32)
    model.reset_classifier(0)
    assert model(x).shape == (1, 64)
    model.reset_classifier(4, global_pool="")
    assert model(x).shape == (1, 4, 1, 1)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(4, global_pool="mean")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="at least 32"):
        model(torch.randn(1, 3, 31, 64))


def test_vssm_grad_checkpointing_matches():
    torch.manual_seed(0)
    model = VSSM(num_classes=3, **TINY).train()
    x = torch.randn(2, 3, 32, 32)

    def grads():
        model.zero_grad()
        model(x).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    ref = grads()
    model.set_grad_checkpointing(True)
    got = grads()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ref, got))


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 1, 9, 13)), (3, (1, 2, 5, 7, 3))])
def test_unet_keeps_any_spatial_size(spatial_dims, shape):
    torch.manual_seed(0)
    net = create_model("ssmkit_vss_unet", spatial_dims=spatial_dims, in_channels=shape[1], out_channels=3,
                       features=(4, 8, 16), d_state=2)
    x = torch.randn(shape, requires_grad=True)
    out = net(x)
    assert out.shape == (shape[0], 3, *shape[2:])
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="VSSUNet expects"):
        net(torch.randn(shape[0], shape[1] + 1, *shape[2:]))


def test_unet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="spatial_dims"):
        VSSUNet(spatial_dims=1)
    with pytest.raises(ValueError, match="features"):
        VSSUNet(features=(4, 0))
