"""timm interop: the VSSM backbones in timm's registry, features_only, local weights, and
timm's optimizer factory leaving the state-space parameters undecayed."""

from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.optim import create_optimizer_v2

import ssmkit.models  # noqa: F401  (registers the timm entry points)
from ssmkit.registry import create_block

TINY = {"dims": 8, "depths": (1, 1, 1, 1), "d_state": 2}


def test_import_order_and_side_effects():
    # One interpreter: `import ssmkit` pulls in neither timm nor the blocks, `import ssmkit.layers`
    # registers blocks without timm, and `import ssmkit.models` registers the timm entry points.
    code = (
        "import sys, ssmkit\n"
        "assert 'timm' not in sys.modules and 'ssmkit.layers' not in sys.modules, 'import ssmkit imported more'\n"
        "import ssmkit.layers\n"
        "assert 'timm' not in sys.modules, 'ssmkit.layers imported timm'\n"
        "assert 'mamba' in ssmkit.list_blocks()\n"
        "import ssmkit.models, timm\n"
        "print(sorted(timm.list_models('ssmkit_*')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['ssmkit_vssm_small', 'ssmkit_vssm_tiny']"


def test_create_model_full_width_tiny():
    torch.manual_seed(0)
    model = timm.create_model("ssmkit_vssm_tiny", num_classes=10).eval()
    assert model.pretrained_cfg["architecture"] == "ssmkit_vssm_tiny"
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32)
        feats = model.forward_features(x)
        assert feats.shape == (1, 768, 1, 1)
        assert model.forward_head(feats).shape == (1, 10)
        assert model.forward_head(feats, pre_logits=True).shape == (1, 768)


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3), (1, 3)])
def test_features_only(out_indices):
    net = timm.create_model("ssmkit_vssm_tiny", features_only=True, out_indices=out_indices, **TINY)
    feats = net(torch.randn(2, 3, 35, 33))
    chans = [8 * 2 ** i for i in out_indices]
    assert [f.shape[1] for f in feats] == chans == net.feature_info.channels()
    assert net.feature_info.reduction() == [4 * 2 ** i for i in out_indices]
    assert [tuple(f.shape[2:]) for f in feats] == [{0: (8, 8), 1: (4, 4), 2: (2, 2), 3: (1, 1)}[i]
                                                   for i in out_indices]


def test_in_chans_and_global_pool_pass_through():
    model = timm.create_model("ssmkit_vssm_small", num_classes=0, in_chans=1, global_pool="max", **TINY)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 64)


def test_pretrained_needs_a_local_file(tmp_path):
    with pytest.raises(ValueError, match="no published weights"):
        timm.create_model("ssmkit_vssm_tiny", pretrained=True)
    torch.manual_seed(0)
    src = timm.create_model("ssmkit_vssm_tiny", num_classes=4, **TINY).eval()
    path = tmp_path / "vssm.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    torch.manual_seed(1)
    same = timm.create_model("ssmkit_vssm_tiny", pretrained=True, num_classes=4, **TINY,
                             pretrained_cfg_overlay={"file": str(path), "num_classes": 4}).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(same(x), src(x))
    # another head size: the backbone loads, the classifier starts fresh (timm's rule)
    other = timm.create_model("ssmkit_vssm_tiny", pretrained=True, num_classes=6, **TINY,
                              pretrained_cfg_overlay={"file": str(path), "num_classes": 4})
    assert torch.equal(other.stem.proj.weight, src.stem.proj.weight)
    assert other.get_classifier().out_features == 6


def _adamw_first_step(p0: torch.Tensor, grad: torch.Tensor, lr: float, wd: float, eps: float = 1e-8) -> torch.Tensor:
    """AdamW's first update (bias-corrected moments are g and g**2)."""
    return p0 * (1 - lr * wd) - lr * grad / (grad.abs() + eps)


@pytest.mark.parametrize("kind", ["vssm", "mamba"])
def test_timm_optimizer_leaves_ssm_parameters_undecayed(kind):
    torch.manual_seed(0)
    if kind == "vssm":
        model = timm.create_model("ssmkit_vssm_tiny", num_classes=3, **TINY)
        x, target = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
        loss_fn = lambda: torch.nn.functional.cross_entropy(model(x), target)  # noqa: E731
        names = ["stages.1.blocks.0.mixer.A_log", "stages.1.blocks.0.mixer.D", "stages.1.blocks.0.mixer.dt_proj_bias",
                 "head.fc.bias", "stem.proj.bias"]
        decayed = ["stages.1.blocks.0.mixer.in_proj.weight", "head.fc.weight"]
    else:  # a bare block: timm reads its no_weight_decay() just the same
        model = create_block("mamba", d_model=8, bias=True)
        x = torch.randn(2, 5, 8)
        loss_fn = lambda: model(x).square().mean()  # noqa: E731
        names = ["A_log", "D", "dt_proj.bias", "in_proj.bias", "conv1d.bias"]
        decayed = ["in_proj.weight", "x_proj.weight"]
    lr, wd = 1e-2, 0.5
    opt = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=wd)
    params = dict(model.named_parameters())
    groups = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert all(groups[id(params[n])] == 0.0 for n in names), {n: groups[id(params[n])] for n in names}
    assert all(groups[id(params[n])] == wd for n in decayed)

    before = {n: p.detach().clone() for n, p in params.items()}
    opt.zero_grad()
    loss_fn().backward()
    grads = {n: p.grad.detach().clone() for n, p in params.items()}
    opt.step()
    for n in names + decayed:
        want = _adamw_first_step(before[n], grads[n], lr, wd if n in decayed else 0.0)
        assert torch.allclose(params[n].detach(), want, atol=1e-6), f"{n}: update is not AdamW with the right decay"
    # and the decay really is visible on the decayed ones (the check above can tell them apart)
    n = decayed[0]
    assert not torch.allclose(params[n].detach(), _adamw_first_step(before[n], grads[n], lr, 0.0), atol=1e-6)


def test_layer_decay_groups_by_stage():
    # timm's layer-wise LR decay reads group_matcher(): stem, one group per stage, then the head
    model = timm.create_model("ssmkit_vssm_tiny", num_classes=3, **TINY)
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    assert sorted({g["lr_scale"] for g in opt.param_groups}) == [0.5 ** k for k in range(5, -1, -1)]
    names = {id(p): n for n, p in model.named_parameters()}
    for g in opt.param_groups:
        if any(names[id(p)].endswith("mixer.A_log") for p in g["params"]):
            assert g["weight_decay"] == 0.0
