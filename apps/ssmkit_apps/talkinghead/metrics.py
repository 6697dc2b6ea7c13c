"""Talking-head metrics: image fidelity, lip sync, temporal flicker, and FID with local weights.

All functions take uint8 frames [T, H, W, 3] (generated and ground truth of one clip).

- :func:`psnr`, :func:`ssim` (scikit-image's ``structural_similarity``) against ground truth.
- :func:`mouth_opening` measures how open the mouth is in each frame: the darkness of the
  mouth region of an aligned face (:data:`MEASURE_REGION`). Darkness is relative to the box's own
  skin level, ``clip((0.45 L_skin - L) / (0.25 L_skin), 0, 1)`` per pixel with L the luminance
  and L_skin its 80th percentile in the region, summed per column; the opening is the mean of the
  darkest quarter of the columns: roughly the height in pixels of the dark mouth interior,
  whatever the mouth's width. Lips, teeth and skin are bright next to the open mouth's
  interior, for every skin tone.
- :func:`lip_sync` is the Pearson correlation between the driving mouth signal and that
  measurement: 1 when the opening follows the speech, about 0 when it ignores it.
- :func:`flicker` is the mean absolute frame-to-frame change of the generated clip, in 0-255
  levels, over the pixels where the ground truth does not change (its change < 4 levels):
  changes there are flicker, not motion.
- FID needs Inception-v3 weights, which cannot be fetched here: :class:`FID` loads torchvision's
  Inception-v3 from a local file (``eval.fid_weights``), and :class:`FVD` a TorchScript I3D from
  a local file (``eval.fvd_weights``); without them they are reported unavailable. SyncNet
  (LSE-C/LSE-D) is not implemented; the report says so and names the lip-sync correlation instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ssmkit.errors import DataError

#: The ellipse (centre y, centre x, radius y, radius x; fractions of the frame) where the mouth
#: opening is measured: the mouth and its full opening in aligned faces, inside the cheeks and
#: above the chin line (a box would reach the background beside a narrow chin).
MEASURE_REGION = (46.5 / 64, 32 / 64, 6.5 / 64, 9 / 64)


def _check(gen: np.ndarray, gt: np.ndarray | None = None) -> None:
    if gen.ndim != 4 or gen.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3]; got {list(gen.shape)}")
    if gt is not None and gt.shape != gen.shape:
        raise ValueError(f"generated {list(gen.shape)} and ground truth {list(gt.shape)} differ in shape")


def psnr(gen: np.ndarray, gt: np.ndarray) -> float:
    """PSNR in dB over the whole clip (uint8 frames)."""
    _check(gen, gt)
    mse = float(np.mean((gen.astype(np.float64) - gt.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(gen: np.ndarray, gt: np.ndarray) -> float:
    """Mean SSIM over frames (scikit-image, 7x7 Gaussian-free window, colour channels averaged)."""
    from skimage.metrics import structural_similarity

    _check(gen, gt)
    return float(np.mean([structural_similarity(a, b, channel_axis=-1, data_range=255) for a, b in zip(gen, gt)]))


def luminance(frames: np.ndarray) -> np.ndarray:
    """[T, H, W] luminance in [0, 1] (Rec. 601)."""
    f = frames.astype(np.float32) / 255
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def mouth_opening(frames: np.ndarray, region: tuple[float, float, float, float] = MEASURE_REGION) -> np.ndarray:
    """[T] mouth opening of aligned faces: the dark interior's height in pixels (see the module doc)."""
    _check(frames)
    h, w = frames.shape[1:3]
    cy, cx, ry, rx = region[0] * h, region[1] * w, region[2] * h, region[3] * w
    y0, y1 = max(0, math.floor(cy - ry)), min(h, math.ceil(cy + ry) + 1)
    x0, x1 = max(0, math.floor(cx - rx)), min(w, math.ceil(cx + rx) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0  # [h', w']
    lum = luminance(frames[:, y0:y1, x0:x1])
    skin = np.array([np.percentile(f[inside], 80) for f in lum])[:, None, None]
    dark = np.clip((0.45 * skin - lum) / np.maximum(0.25 * skin, 1e-3), 0, 1) * inside
    cols = np.sort(dark.sum(1)[:, inside.any(0)], axis=1)  # [T, columns]: dark pixels per column, ascending
    k = max(1, cols.shape[1] // 4)
    return cols[:, -k:].mean(1).astype(np.float32)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    da, db = a - a.mean(), b - b.mean()
    den = math.sqrt(float((da**2).sum() * (db**2).sum()))
    return float("nan") if den < 1e-12 else float((da * db).sum() / den)


def lip_sync(drive: np.ndarray, frames: np.ndarray) -> float:
    """Pearson correlation between the driving mouth signal [T] and the opening measured on ``frames``."""
    if len(drive) != len(frames):
        raise ValueError(f"the mouth signal has {len(drive)} values for {len(frames)} frames")
    return pearson(drive, mouth_opening(frames))


def flicker(gen: np.ndarray, gt: np.ndarray, static_below: float = 4.0) -> float:
    """Mean |gen[t] - gen[t-1]| (0-255 levels) over pixels where the ground truth is static."""
    _check(gen, gt)
    if len(gen) < 2:
        return 0.0
    dg = np.abs(np.diff(gen.astype(np.float32), axis=0)).mean(-1)
    dt = np.abs(np.diff(gt.astype(np.float32), axis=0)).max(-1)
    static = dt < static_below
    return float(dg[static].mean()) if static.any() else 0.0


class LipSyncMeter:
    """Accumulates per-clip lip-sync: the mean of per-clip correlations over clips whose driving
    signal moves (std >= ``min_std``), and the correlation pooled over all their frames."""

    def __init__(self, min_std: float = 0.05):
        self.min_std, self.per_clip, self.drive, self.measured = min_std, [], [], []

    def update(self, drive: np.ndarray, frames: np.ndarray) -> None:
        if float(np.std(drive)) < self.min_std:
            return
        m = mouth_opening(frames)
        r = pearson(drive, m)
        self.per_clip.append(0.0 if math.isnan(r) else r)  # a frozen mouth follows nothing
        self.drive.append(np.asarray(drive, np.float64))
        self.measured.append(m.astype(np.float64))

    def compute(self) -> dict[str, float]:
        if not self.per_clip:
            return {"lipsync": float("nan"), "lipsync_pooled": float("nan"), "lipsync_clips": 0.0}
        pooled = pearson(np.concatenate(self.drive), np.concatenate(self.measured))
        return {"lipsync": float(np.mean(self.per_clip)), "lipsync_pooled": pooled,
                "lipsync_clips": float(len(self.per_clip))}


class FID:
    """Fréchet distance of Inception-v3 pool features, with torchvision's Inception-v3 loaded from
    a local state-dict file (``torch.load(weights_only=True)``). Frames are resized to 299x299."""

    def __init__(self, weights: str | Path, device: torch.device | str = "cpu"):
        from torchvision.models import inception_v3

        p = Path(weights)
        if not p.is_file():
            raise DataError(f"eval.fid_weights {str(p)!r} does not exist; expected torchvision Inception-v3 "
                            "weights (a state dict saved with torch.save)")
        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as err:
            raise DataError(f"{str(p)!r} cannot be loaded as a state dict ({err})") from None
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing:
            raise DataError(f"{str(p)!r} lacks {len(missing)} Inception-v3 parameters (first: {missing[0]})")
        net.fc = torch.nn.Identity()
        self.net = net.eval().to(device)
        self.device = torch.device(device)
        self.real: list[np.ndarray] = []
        self.fake: list[np.ndarray] = []

    @torch.no_grad()
    def features(self, frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255).to(self.device)
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        mean = torch.tensor([0.485, 0.456, 0.406], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=self.device).view(1, 3, 1, 1)
        return self.net((x - mean) / std).double().cpu().numpy()

    def update(self, gen: np.ndarray, gt: np.ndarray) -> None:
        self.fake.append(self.features(gen))
        self.real.append(self.features(gt))

    def compute(self) -> float:
        return frechet_distance(np.concatenate(self.real), np.concatenate(self.fake))


class FVD:
    """Fréchet video distance of I3D features, with the I3D network loaded from a local TorchScript
    file (``eval.fvd_weights``): the Kinetics-400 I3D exported to TorchScript by StyleGAN-V
    (``i3d_torchscript.pt``), which matches the TF-Hub network of the original FVD. It is called
    as StyleGAN-V calls it: float clips [B, 3, T, H, W] holding 0-255 values, with
    ``rescale=True, resize=True, return_features=True`` (it rescales to [-1, 1] and resizes to
    224x224 itself) -> features [B, 400]. One feature vector per clip: with fewer clips than
    feature dimensions the covariances are rank-deficient, so compare FVDs at equal clip counts."""

    def __init__(self, weights: str | Path, device: torch.device | str = "cpu"):
        p = Path(weights)
        if not p.is_file():
            raise DataError(f"eval.fvd_weights {str(p)!r} does not exist; expected a TorchScript I3D "
                            "(StyleGAN-V's i3d_torchscript.pt)")
        try:
            self.net = torch.jit.load(str(p), map_location="cpu").eval().to(device)
        except Exception as err:
            raise DataError(f"{str(p)!r} cannot be loaded as a TorchScript module ({err}); expected StyleGAN-V's "
                            "i3d_torchscript.pt") from None
        self.device = torch.device(device)
        self.real: list[np.ndarray] = []
        self.fake: list[np.ndarray] = []

    @torch.no_grad()
    def features(self, clip: np.ndarray) -> np.ndarray:
        """[1, F] features of one uint8 clip [T, H, W, 3]."""
        _check(clip)
        x = torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2)[None].float().to(self.device)
        feats = self.net(x, rescale=True, resize=True, return_features=True)
        if feats.ndim != 2 or feats.shape[0] != 1:
            raise DataError(f"the FVD network returned {list(feats.shape)}; expected features [1, F] per clip")
        return feats.double().cpu().numpy()

    def update(self, gen: np.ndarray, gt: np.ndarray) -> None:
        self.fake.append(self.features(gen))
        self.real.append(self.features(gt))

    def compute(self) -> float:
        return frechet_distance(np.concatenate(self.real), np.concatenate(self.fake))


def frechet_distance(a: np.ndarray, b: np.ndarray, method: str = "auto") -> float:
    """Fréchet distance between Gaussians fitted to features a [N, F] and b [M, F]; NaN below 2 rows.

    ``|mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr sqrt(C_a C_b)``. With fewer clips than feature
    dimensions (``N M <= F^2``, the usual case here) ``tr sqrt(C_a C_b)`` is the sum of the
    singular values of ``A B^T / sqrt((N-1)(M-1))`` (A, B the centred features), which is exact
    where scipy's ``sqrtm`` of the rank-deficient F x F product is not (it returned -1e16 on
    three Inception vectors). ``method``: "auto", "svd" or "sqrtm".
    """
    from scipy import linalg

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = a - mu_a, b - mu_b  # centred [N, F], [M, F]
    na, nb = len(a) - 1, len(b) - 1
    if method == "svd" or (method == "auto" and len(a) * len(b) <= a.shape[1] ** 2):
        cross = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / math.sqrt(na * nb)
    else:
        cross = float(np.trace(np.asarray(linalg.sqrtm((ca.T @ ca / na) @ (cb.T @ cb / nb))).real))
    return float(((mu_a - mu_b) ** 2).sum() + (ca**2).sum() / na + (cb**2).sum() / nb - 2 * cross)


__all__ = ["FID", "FVD", "LipSyncMeter", "MEASURE_REGION", "flicker", "frechet_distance", "lip_sync", "luminance",
           "mouth_opening", "pearson", "psnr", "ssim"]
