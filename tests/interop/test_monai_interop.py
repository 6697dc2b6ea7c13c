"""MONAI interop: an SS3D U-Net (ssmkit_vss_unet) trained with MONAI's DiceCELoss, run with
sliding_window_inference and scored with DiceMetric, at odd patch and volume sizes (the example
in docs/library.md, "MONAI")."""

from __future__ import annotations

import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.transforms import AsDiscrete

from ssmkit.registry import create_model

VOLUME = (11, 13, 9)  # odd, and not a multiple of the network's 4x downsampling
PATCH = (7, 9, 5)


def _volume(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy volume [1, 1, *VOLUME] with a bright box, and its label [1, 1, *VOLUME] (0/1)."""
    label = torch.zeros(1, 1, *VOLUME)
    lo = [int(torch.randint(1, s - 5, (1,), generator=gen)) for s in VOLUME]
    label[(0, 0, *(slice(a, a + 4) for a in lo))] = 1.0
    image = label * 2.0 + 0.5 * torch.randn(label.shape, generator=gen)
    return image, label


def _crop(image, label, gen):
    lo = [int(torch.randint(0, s - p + 1, (1,), generator=gen)) for s, p in zip(VOLUME, PATCH)]
    sl = (slice(None), slice(None), *(slice(a, a + p) for a, p in zip(lo, PATCH)))
    return image[sl], label[sl]


def test_ss3d_unet_in_a_monai_training_step():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = create_model("ssmkit_vss_unet", spatial_dims=3, in_channels=1, out_channels=2, features=(8, 16, 32),
                       d_state=4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    volumes = [_volume(gen) for _ in range(2)]

    losses = []
    net.train()
    for _ in range(10):
        patches = [_crop(img, lab, gen) for img, lab in volumes]
        image = torch.cat([p[0] for p in patches])
        label = torch.cat([p[1] for p in patches])
        logits = net(image)
        assert logits.shape == (2, 2, *PATCH)
        loss = loss_fn(logits, label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < losses[0], f"DiceCE did not fall: {losses}"

    net.eval()
    image, label = volumes[0]
    with torch.no_grad():
        logits = sliding_window_inference(image, roi_size=PATCH, sw_batch_size=2, predictor=net, overlap=0.25)
    assert logits.shape == (1, 2, *VOLUME) and torch.isfinite(logits).all()
    post_pred, post_label = AsDiscrete(argmax=True, to_onehot=2), AsDiscrete(to_onehot=2)
    metric = DiceMetric(include_background=False, reduction="mean")
    metric(y_pred=[post_pred(logits[0])], y=[post_label(label[0])])
    dice = float(metric.aggregate())
    assert 0.0 <= dice <= 1.0
