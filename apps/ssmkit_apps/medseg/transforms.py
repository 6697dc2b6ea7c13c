"""MONAI pipelines: load, check, reorient, resample, normalise by modality, crop and augment.

    preprocess:  LoadImaged -> EnsureChannelFirstd -> CheckVoxelsd -> Orientationd(RAS)
                 -> Spacingd(plan.spacing) -> NormalizeByModalityd -> EnsureTyped
    augment:     SpatialPadd(patch) -> RandCropByPosNegLabeld (foreground-biased) -> RandFlipd x3
                 -> RandRotated -> RandScaleIntensityd -> RandShiftIntensityd -> RandAdjustContrastd
                 -> RandGaussianNoised

The deterministic part is cached by ``CacheDataset``; the random part runs per sample with a
random state drawn from torch's global generator, which the engine checkpoints, so a resumed
run sees the same crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensity,
    Orientationd,
    RandAdjustContrastd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRange,
    Spacingd,
    SpatialPadd,
)
from torch.utils.data import Dataset

from ssmkit.errors import DataError, UserError
from ssmkit_apps.medseg.dataset import Case
from ssmkit_apps.medseg.plan import Plan


def _source(d: dict, key: str) -> str:
    meta = getattr(d.get(key), "meta", {}) or {}
    name = meta.get("filename_or_obj", d.get(f"{key}_path", key))
    return str(name[0] if isinstance(name, (list, tuple)) else name)


class CheckVoxelsd(MapTransform):
    """Reject NaN/inf image voxels and label values that dataset.json does not declare.

    Runs right after loading, so the message names the file as it is on disk.
    """

    def __init__(self, n_classes: int, image_key: str = "image", label_key: str = "label", n_channels: int = 1):
        super().__init__([image_key, label_key], allow_missing_keys=True)
        self.n_classes, self.image_key, self.label_key, self.n_channels = n_classes, image_key, label_key, n_channels

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        img = d[self.image_key]
        if img.ndim != 4 or img.shape[0] != self.n_channels:
            raise DataError(f"{_source(d, self.image_key)!r} has shape {tuple(img.shape[1:])} with {img.shape[0]} "
                            f"channel(s); expected a 3D volume with {self.n_channels} channel(s)")
        bad = ~torch.isfinite(torch.as_tensor(img))
        if bad.any():
            first = [int(v) for v in torch.nonzero(bad)[0][1:]]
            raise DataError(f"{_source(d, self.image_key)!r} holds {int(bad.sum())} NaN/inf voxel(s) (first at voxel "
                            f"{first}); fix or mask them before training or inference")
        if self.label_key in d:
            lab = torch.as_tensor(d[self.label_key])
            if lab.shape[0] != 1:
                raise DataError(f"label {_source(d, self.label_key)!r} must be a single 3D volume; got "
                                f"{lab.shape[0]} channels")
            values = torch.unique(lab)
            if not torch.isfinite(values).all():
                raise DataError(f"label {_source(d, self.label_key)!r} holds NaN/inf values")
            undeclared = [int(v) if v == int(v) else v for v in values.tolist()
                          if v != int(v) or not 0 <= v < self.n_classes]
            if undeclared:
                raise DataError(f"label {_source(d, self.label_key)!r} holds values {undeclared[:8]} that dataset.json "
                                f"does not declare; declared labels are 0..{self.n_classes - 1}")
        return d


class NormalizeByModalityd(MapTransform):
    """Per channel: a CT window (clip to [lo, hi], scale to [0, 1]) or an MR-style z-score over
    the non-zero voxels, as the plan says (``plan.windows[c]`` is [lo, hi] or None)."""

    def __init__(self, windows: Sequence[Sequence[float] | None], key: str = "image"):
        super().__init__([key])
        self.windows = list(windows)
        self.ct = [ScaleIntensityRange(w[0], w[1], 0.0, 1.0, clip=True) if w is not None else None
                   for w in self.windows]
        self.zscore = NormalizeIntensity(nonzero=True)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            chans = [self.ct[c](img[c:c + 1]) if self.ct[c] is not None else self.zscore(img[c:c + 1])
                     for c in range(img.shape[0])]
            d[key] = torch.cat([torch.as_tensor(c, dtype=torch.float32) for c in chans], 0) if len(chans) > 1 else \
                chans[0]
            if hasattr(img, "copy_meta_from") and hasattr(d[key], "copy_meta_from"):
                d[key].copy_meta_from(img, copy_attr=False)
        return d


def preprocess(plan: Plan, with_label: bool = True, normalize: bool = True) -> Compose:
    """The deterministic pipeline up to a normalised volume at the plan's spacing, RAS-oriented."""
    keys = ["image", "label"] if with_label else ["image"]
    modes = ("bilinear", "nearest") if with_label else ("bilinear",)
    steps: list[Any] = [
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys),
        CheckVoxelsd(plan.n_classes, n_channels=plan.in_channels),
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys, pixdim=plan.spacing, mode=modes),
    ]
    if normalize:
        steps.append(NormalizeByModalityd(plan.windows or [None] * plan.in_channels))
    steps.append(EnsureTyped(keys, dtype=(torch.float32, torch.uint8) if with_label else torch.float32,
                             track_meta=True))
    return Compose(steps)


def augment(plan: Plan, pos: float = 2.0, neg: float = 1.0, rotate_deg: float = 15.0, prob: float = 0.2) -> list:
    """The random part: a foreground-biased crop of ``plan.patch_size`` and light augmentation."""
    keys = ["image", "label"]
    rad = float(np.deg2rad(rotate_deg))
    # Rotations only about the axes whose neighbours are equally spaced: rotating thick slices into
    # the fine plane would invent detail (nnU-Net does the same for anisotropic data).
    fine = [s <= 2 * min(plan.spacing) for s in plan.spacing]
    ranges = {f"range_{a}": (rad if all(f for j, f in enumerate(fine) if j != i) else 0.0) for i, a in enumerate("xyz")}
    return [
        SpatialPadd(keys, spatial_size=plan.patch_size),
        RandCropByPosNegLabeld(keys, "label", spatial_size=plan.patch_size, pos=pos, neg=neg, num_samples=1),
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandFlipd(keys, prob=0.5, spatial_axis=2),
        RandRotated(keys, prob=prob, mode=("bilinear", "nearest"), padding_mode="zeros", **ranges),
        RandScaleIntensityd("image", factors=0.1, prob=prob),
        RandShiftIntensityd("image", offsets=0.1, prob=prob),
        RandAdjustContrastd("image", prob=prob, gamma=(0.7, 1.5)),
        RandGaussianNoised("image", prob=prob, std=0.05),
    ]


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception of MONAI's ``applying transform`` chain (or the first user error in it)."""
    seen = err
    while seen is not None:
        if isinstance(seen, UserError):
            return seen
        if seen.__cause__ is None:
            return seen
        seen = seen.__cause__
    return err


def _as_data_error(err: BaseException, case: Case) -> DataError:
    cause = root_cause(err)
    if isinstance(cause, DataError):
        return cause
    files = ", ".join(repr(p) for p in (*case.images, *([case.label] if case.label else [])))
    return DataError(f"case {case.name!r} ({files}) could not be loaded: {type(cause).__name__}: {cause}")


def cached(cases: list[Case], transform: Compose, num_workers: int = 0) -> CacheDataset:
    """A CacheDataset over the cases; a failure is reported as a DataError naming the case's files."""
    items = [c.as_dict() for c in cases]
    try:
        return CacheDataset(items, transform=transform, num_workers=num_workers or None, progress=False)
    except Exception:
        # Find the case that fails, so the message can name its files (MONAI's does not).
        for case in cases:
            try:
                transform(case.as_dict())
            except Exception as inner:
                raise _as_data_error(inner, case) from None
        raise


def _plain(t: Any) -> torch.Tensor:
    """A plain tensor (MetaTensor's metadata is not needed past the pipeline and slows collation)."""
    return t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)


class TrainPatches(Dataset):
    """``length`` random training patches per epoch from a cached set of cases.

    Item ``i`` comes from case ``i % n_cases``; its crop and augmentation use a random state drawn
    from torch's global generator. Items are (image [C, *patch] float32, label [1, *patch] int64).
    """

    def __init__(self, cases: list[Case], plan: Plan, length: int, pos: float = 2.0, neg: float = 1.0,
                 rotate_deg: float = 15.0, aug_prob: float = 0.2):
        self.cases = cases
        self.cache = cached(cases, Compose([*preprocess(plan).transforms,
                                            *augment(plan, pos, neg, rotate_deg, aug_prob)]))
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        self.cache.transform.set_random_state(seed=seed)
        try:
            out = self.cache[i % len(self.cases)]
        except Exception as err:
            raise _as_data_error(err, self.cases[i % len(self.cases)]) from None
        d = out[0] if isinstance(out, list) else out
        return _plain(d["image"]).float(), _plain(d["label"]).long()


class Volumes(Dataset):
    """Whole preprocessed volumes for validation, testing and inference.

    Items are dicts: ``image`` [C, X, Y, Z] (a MetaTensor), ``label`` [1, X, Y, Z] when the case has
    one, ``case`` (its name) and ``spacing`` (mm, RAS).
    """

    def __init__(self, cases: list[Case], plan: Plan):
        self.cases = cases
        self.has_labels = all(c.label is not None for c in cases)
        self.plan = plan
        self.cache = cached(cases, preprocess(plan, with_label=self.has_labels))

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> dict[str, Any]:
        d = dict(self.cache[i])
        d["case"] = self.cases[i].name
        d["spacing"] = list(self.plan.spacing)
        return d


def collate(items: list) -> Any:
    """Training patches stack into (image [B, C, *patch], label [B, 1, *patch]); volumes stay a list."""
    if isinstance(items[0], dict):
        return items
    return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])


__all__ = ["CheckVoxelsd", "NormalizeByModalityd", "TrainPatches", "Volumes", "augment", "cached", "collate",
           "preprocess", "root_cause"]
