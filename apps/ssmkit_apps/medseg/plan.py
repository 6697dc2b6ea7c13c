"""A small experiment plan from the dataset's spacing and shapes (nnU-Net's idea, kept simple).

- Target spacing: the median voxel spacing of the training cases (in RAS axis order).
- Median shape: the median case size once resampled to that spacing.
- Patch: the median shape rounded up to the network's divisor, shrunk along its largest axis
  until it fits the voxel budget (or the patch the config asks for).
- Stages: starting from the patch at the target spacing, each new stage halves every axis whose
  spacing is within twice the finest one and that stays >= ``min_size`` voxels; the others keep
  stride 1 there, so thick-slice axes are pooled only once the in-plane axes have caught up.
  A stage's kernel is 3 along axes within twice the finest spacing and 1 along the others
  (no mixing across slices that are far apart).
- CT intensity window: the 0.5 and 99.5 percentiles of the labelled foreground voxels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ssmkit.errors import DataError


@dataclass
class Plan:
    """Everything the model and the transforms need to agree on; stored in the run's app_state.json."""

    spacing: list[float]  # target spacing, mm, RAS order
    patch_size: list[int]
    strides: list[list[int]]  # per stage, per axis (stage 0 is [1, 1, 1])
    kernels: list[list[int]]  # per stage, per axis
    class_names: list[str]
    modalities: list[str]
    median_shape: list[int] = field(default_factory=list)
    windows: list[list[float] | None] = field(default_factory=list)  # per channel: CT [lo, hi] or None (z-score)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return len(self.modalities)

    @property
    def divisor(self) -> list[int]:
        """Per-axis product of the strides: a patch must be a multiple of it."""
        return [int(np.prod([s[i] for s in self.strides])) for i in range(3)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        try:
            keys = ("spacing", "patch_size", "strides", "kernels", "class_names", "modalities")
            return cls(**{k: d[k] for k in keys},
                       median_shape=list(d.get("median_shape", [])), windows=list(d.get("windows", [])))
        except (KeyError, TypeError) as err:
            raise DataError(f"the run's plan is incomplete ({err}); re-run training") from None


def plan_stages(patch: list[int], spacing: list[float], max_stages: int = 5,
                min_size: int = 4) -> tuple[list[list[int]], list[list[int]]]:
    """(strides, kernels) per stage for a patch at a spacing; see the module docstring."""
    size, sp = list(patch), [float(s) for s in spacing]

    def kernel(sp_now: list[float]) -> list[int]:
        return [3 if s <= 2 * min(sp_now) else 1 for s in sp_now]

    strides, kernels = [[1, 1, 1]], [kernel(sp)]
    while len(strides) < max_stages:
        s = [2 if size[i] // 2 >= min_size and sp[i] <= 2 * min(sp) and size[i] % 2 == 0 else 1 for i in range(3)]
        if s == [1, 1, 1]:
            break
        size = [n // k for n, k in zip(size, s)]
        sp = [a * k for a, k in zip(sp, s)]
        strides.append(s)
        kernels.append(kernel(sp))
    return strides, kernels


def auto_patch(median_shape: list[float], max_voxels: int, multiple: int = 16) -> list[int]:
    """The median shape rounded up to ``multiple``, shrunk along its largest axis to fit ``max_voxels``."""
    patch = [int(multiple * np.ceil(max(s, 1) / multiple)) for s in median_shape]
    while int(np.prod(patch)) > max_voxels and max(patch) > multiple:
        i = int(np.argmax(patch))
        patch[i] -= multiple
    return patch


def make_plan(spacings: list[np.ndarray], shapes: list[np.ndarray], class_names: list[str], modalities: list[str],
              patch_size: list[int] | None = None, spacing: list[float] | None = None, max_stages: int = 5,
              max_patch_voxels: int = 128**3, multiple: int = 16) -> Plan:
    """The plan for cases with RAS ``spacings`` [n, 3] and ``shapes`` [n, 3] (see the module docstring)."""
    if not spacings:
        raise DataError("cannot plan without training cases")
    sp = np.asarray(spacing if spacing else np.median(np.stack(spacings), 0), float)
    if sp.shape != (3,) or (sp <= 0).any():
        raise DataError(f"target spacing must be 3 positive numbers (mm); got {sp.tolist()}")
    resampled = np.stack([np.asarray(sh) * np.asarray(s) / sp for sh, s in zip(shapes, spacings)])
    median = np.median(resampled, 0)
    patch = list(patch_size) if patch_size else auto_patch(median.tolist(), max_patch_voxels, multiple)
    strides, kernels = plan_stages(patch, sp.tolist(), max_stages)
    return Plan(spacing=[round(float(s), 4) for s in sp], patch_size=[int(p) for p in patch], strides=strides,
                kernels=kernels, class_names=list(class_names), modalities=list(modalities),
                median_shape=[int(round(m)) for m in median])


def ct_window(values: list[np.ndarray], lo: float = 0.5, hi: float = 99.5) -> list[float]:
    """[lo, hi] percentiles of the pooled foreground intensities (nnU-Net's CT clipping range)."""
    pooled = np.concatenate([np.asarray(v, np.float64).ravel() for v in values if np.size(v)])
    if pooled.size == 0:
        raise DataError("no labelled foreground voxels to compute a CT window from; set data.ct_window=[lo, hi]")
    a, b = np.percentile(pooled, [lo, hi])
    return [float(a), float(b) if b > a else float(a) + 1.0]


__all__ = ["Plan", "auto_patch", "ct_window", "make_plan", "plan_stages"]
