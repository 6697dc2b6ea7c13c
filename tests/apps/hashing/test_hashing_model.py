"""The hashing models and losses: shapes, gradients, one modality at a time, local checkpoints."""

from __future__ import annotations

import pytest
import torch

from ssmkit.errors import DataError
from ssmkit.registry import create_model
from ssmkit_apps.hashing.losses import dcmh_loss, info_nce, local_info_nce, pairwise_nll, prompthash_loss, similarity


def _batch(b=4, size=32, length=12, vocab=40, classes=10):
    images = torch.randn(b, 3, size, size)
    tokens = torch.randint(4, vocab, (b, length))
    tokens[:, 0], tokens[:, -3:] = 2, 0
    labels = torch.zeros(b, classes)
    labels[torch.arange(b), torch.arange(b) % classes] = 1
    return images, tokens, labels


@pytest.mark.parametrize("name", ["prompthash_tiny", "dcmh"])
def test_models_encode_each_modality_alone_and_backpropagate(name):
    kw = {"vocab_size": 40, "image_size": 32}
    if name == "dcmh":
        kw.update(d_model=16, text_hidden=32, bits=(16, 32))
    model = create_model(name, **kw)
    images, tokens, labels = _batch()
    codes_i, codes_t = model.encode_image(images), model.encode_text(tokens)
    assert sorted(codes_i) == sorted(codes_t) == [16, 32]
    for b in (16, 32):
        assert codes_i[b].shape == (4, b) and codes_i[b].abs().max() < 1
    # an image's code does not depend on anything else in its batch
    assert torch.allclose(model.eval().encode_image(images[:1])[16], model.encode_image(images)[16][:1], atol=1e-5)
    model.train()
    out = model(images, tokens, labels)
    if name == "dcmh":
        loss, logs = dcmh_loss(out, labels, model.bits, 5.0, 0.5, 0.1)
    else:
        assert sorted(out["prompt"]) == [16, 32, 96]  # the label prompt's codes (training only)
        loss, logs = prompthash_loss(out, labels, model.bits, model.aux_bits, 5.0, 0.5, 0.1, 0.1, 0.1, 0.05, 0.1)
    assert torch.isfinite(loss) and "pair" in logs
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_prompthash_uses_the_core_gated_fusion():
    from ssmkit.layers.gated_fusion import GatedFusion

    model = create_model("prompthash_tiny", vocab_size=20)
    assert isinstance(model.fusion, GatedFusion)
    with pytest.raises(ValueError, match="create_model|takes no argument"):
        create_model("prompthash", vocab_size=20, no_such_option=1)


def test_losses_by_hand():
    u = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    S = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cos = [[1, 0], [0, 1]] -> theta = 2 * cos
    theta = 2 * torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    want = (torch.nn.functional.softplus(theta) - S * theta).mean()
    assert torch.allclose(pairwise_nll(u, u, S, 2.0), want)
    assert similarity(torch.tensor([[1, 0], [1, 1]]), torch.tensor([[0, 1]])).tolist() == [[0.0], [1.0]]
    a = torch.eye(3)
    assert info_nce(a, a, 0.01) < 1e-3 < info_nce(a, a.roll(1, 0), 0.01)
    assert local_info_nce(a[:, None].repeat(1, 2, 1), a[:, None].repeat(1, 2, 1), 0.01) < 1e-3


def test_timm_encoder_loads_a_local_clip_style_checkpoint(tmp_path):
    timm = pytest.importorskip("timm")
    src = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=32)
    # open_clip stores a timm trunk under "visual.trunk."; the loader strips such prefixes
    state = {f"visual.trunk.{k}": v.clone() for k, v in src.state_dict().items()}
    torch.save(state, tmp_path / "clip.pt")
    model = create_model("prompthash_tiny", vocab_size=20, image_encoder_kind="timm", timm_name="test_vit",
                         image_weights=str(tmp_path / "clip.pt"))
    got = model.image.backbone.state_dict()
    assert all(torch.equal(got[k], v) for k, v in src.state_dict().items())
    assert model.encode_image(torch.randn(2, 3, 32, 32))[16].shape == (2, 16)
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="does not fit timm model"):
        create_model("prompthash_tiny", vocab_size=20, image_encoder_kind="timm", timm_name="test_vit",
                     image_weights=str(tmp_path / "other.pt"))
    with pytest.raises(ValueError, match="needs model.image_encoder=timm"):
        create_model("prompthash_tiny", vocab_size=20, image_weights=str(tmp_path / "clip.pt"))
