"""The mouth-opening measure on embedded faces with known openness, and the other metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssmkit.errors import DataError
from ssmkit_apps.talkinghead import face as Fc
from ssmkit_apps.talkinghead import metrics as M


def _clip(ident: Fc.Identity, mouth: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ctl = Fc.neutral_controls(len(mouth))
    ctl.update(Fc.expression_signal(len(mouth), rng))  # blinks, brows and head motion as in the data
    ctl["mouth"] = mouth.astype(np.float32)
    ctl["jaw"] = 0.85 * ctl["mouth"]
    ctl["lip_spread"] = rng.uniform(0, 1, len(mouth)).astype(np.float32)
    return Fc.render_clip(ident, ctl)


@pytest.mark.parametrize("kind,seed", [("drawn", 1), ("drawn", 2), ("drawn", 8), ("portrait", 11)])
def test_mouth_opening_tracks_known_openness(kind, seed):
    mouth = np.linspace(0, 1, 9)
    measured = M.mouth_opening(_clip(Fc.make_identity(kind, seed), mouth))
    assert M.pearson(mouth, measured) > 0.95
    assert (np.diff(measured) > -0.6).all()  # monotone up to the noise of lip spread and head motion
    assert measured[-1] - measured[0] > 2.5  # about the interior's height in pixels


def test_lip_sync_separates_following_from_ignoring_the_signal():
    ident = Fc.make_identity("drawn", 5)
    drive = np.clip(np.sin(np.linspace(0, 6, 20)) * 0.5 + 0.5, 0, 1)
    follows = _clip(ident, drive)
    frozen = _clip(ident, np.full(20, 0.4))
    shuffled = _clip(ident, np.random.default_rng(1).permutation(drive))
    assert M.lip_sync(drive, follows) > 0.9
    assert abs(M.lip_sync(drive, shuffled)) < 0.6
    meter = M.LipSyncMeter()
    meter.update(drive, follows)
    meter.update(drive, frozen)
    meter.update(np.full(20, 0.3), follows)  # a still driving signal is skipped
    res = meter.compute()
    assert res["lipsync_clips"] == 2 and 0.3 < res["lipsync"] < 0.7  # (r ~ 1 + r of a frozen mouth) / 2


def test_psnr_ssim_flicker():
    rng = np.random.default_rng(0)
    gt = (rng.random((4, 16, 16, 3)) * 255).astype(np.uint8)
    gt[:] = gt[0]  # a static clip
    assert M.psnr(gt, gt) == float("inf") and M.ssim(gt, gt) == pytest.approx(1.0)
    noisy = np.clip(gt.astype(int) + rng.integers(-8, 9, gt.shape), 0, 255).astype(np.uint8)
    assert 25 < M.psnr(noisy, gt) < 40 and M.ssim(noisy, gt) < 1
    assert M.flicker(gt, gt) == 0.0
    assert M.flicker(noisy, gt) > 3.0  # every generated change on a static truth is flicker
    with pytest.raises(ValueError, match="differ in shape"):
        M.psnr(gt[:2], gt)


def test_fid_needs_a_local_weights_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        M.FID(tmp_path / "missing.pth")
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(DataError, match="lacks"):
        M.FID(tmp_path / "bad.pth")


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (4000, 1))
    b = rng.normal(3.0, 2.0, (4000, 1))
    # 1-D: (mu_a - mu_b)^2 + var_a + var_b - 2 sqrt(var_a var_b) = 9 + 1 + 4 - 4 = 10
    assert M.frechet_distance(a, b) == pytest.approx(10.0, rel=0.05)
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(M.frechet_distance(a[:1], b))
    # few vectors in many dimensions (the test clips): the exact low-rank form agrees with sqrtm
    # where sqrtm is well conditioned, and stays >= 0 where it is not
    x, y = rng.normal(0, 1, (40, 6)), rng.normal(0.5, 1.5, (30, 6))
    assert M.frechet_distance(x, y, "svd") == pytest.approx(M.frechet_distance(x, y, "sqrtm"), rel=1e-6)
    wide_a, wide_b = rng.normal(0, 1, (3, 512)), rng.normal(0, 1, (4, 512))
    assert M.frechet_distance(wide_a, wide_a) == pytest.approx(0.0, abs=1e-6)
    assert M.frechet_distance(wide_a, wide_b) > 0


def test_fvd_loads_a_local_torchscript_i3d_and_feeds_it_0_255_clips(tmp_path, standin_i3d):
    path = standin_i3d
    fvd = M.FVD(path)
    clip = np.full((6, 8, 8, 3), 200, np.uint8)
    clip[..., 2] = 10
    np.testing.assert_allclose(fvd.features(clip), [[200, 200, 10, 6]])  # [B, 3, T, H, W] of 0-255 values
    rng = np.random.default_rng(0)
    real = [(rng.random((6, 8, 8, 3)) * 255).astype(np.uint8) for _ in range(5)]
    for r in real:
        fvd.update(r, r)
    assert fvd.compute() == pytest.approx(0.0, abs=1e-6)  # generated = real
    far = M.FVD(path)
    for r in real:
        far.update(np.clip(r.astype(int) + 60, 0, 255).astype(np.uint8), r)
    assert far.compute() > 1000  # brighter clips: the channel means move by ~50 levels
    with pytest.raises(DataError, match="does not exist"):
        M.FVD(tmp_path / "missing.pt")
    torch.save({"not": torch.zeros(1)}, tmp_path / "state.pt")
    with pytest.raises(DataError, match="cannot be loaded as a TorchScript module"):
        M.FVD(tmp_path / "state.pt")


@pytest.mark.slow
def test_fid_runs_inception_from_a_local_state_dict(tmp_path):
    from torchvision.models import inception_v3

    torch.manual_seed(0)  # random weights stand in for the pretrained ones: the wiring is tested, not the values
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict(), tmp_path / "inc.pth")
    fid = M.FID(tmp_path / "inc.pth")
    rng = np.random.default_rng(0)
    clip = (rng.random((2, 64, 64, 3)) * 255).astype(np.uint8)
    assert fid.features(clip).shape == (2, 2048)  # pool features, the classifier removed
    fid.update(clip, clip)
    assert fid.compute() == pytest.approx(0.0, abs=1e-3)
    other = M.FID(tmp_path / "inc.pth")
    other.update(np.zeros_like(clip), clip)
    assert other.compute() > fid.compute() + 1e-3
