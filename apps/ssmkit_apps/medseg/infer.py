"""Sliding-window prediction, NIfTI outputs on the input's own grid, and PNG slice overlays.

A prediction is made at the plan's spacing in RAS orientation, resampled back onto the input
grid (MONAI's ``SpatialResample``, trilinear on the class probabilities, then argmax) and saved
with the input's affine and header, so any viewer overlays it on the input exactly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import SpatialResample
from torch import nn

from ssmkit.engine.files import atomic_path
from ssmkit.errors import DataError, UserError
from ssmkit_apps.medseg.dataset import Case, case_name, is_nifti
from ssmkit_apps.medseg.plan import Plan
from ssmkit_apps.medseg.transforms import preprocess, root_cause

# Distinct colours for up to 10 classes (tab10 without its grey), background transparent.
PALETTE = np.array([[0, 0, 0], [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [188, 189, 34], [23, 190, 207]], np.float32) / 255.0


def predict_probs(model: nn.Module, image: torch.Tensor, plan: Plan, device: torch.device,
                  autocast: Callable, overlap: float = 0.5, sw_batch_size: int = 2,
                  mode: str = "gaussian") -> torch.Tensor:
    """Softmax probabilities [K, X, Y, Z] on CPU for one preprocessed image [C, X, Y, Z]."""
    x = torch.as_tensor(image).float()[None]

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        with autocast():
            out = model(patch)
        out = out[0] if isinstance(out, (list, tuple)) else out
        return torch.softmax(out.float(), 1)

    with torch.no_grad():
        probs = sliding_window_inference(x, roi_size=plan.patch_size, sw_batch_size=sw_batch_size, predictor=predictor,
                                         overlap=overlap, mode=mode, sw_device=device, device=torch.device("cpu"))
    return torch.as_tensor(probs)[0]


def list_inputs(path: str | Path, n_channels: int) -> tuple[list[Case], list[str]]:
    """(cases to predict, notes about files that were passed over). A folder contributes its
    NIfTI files (grouped into cases by the nnU-Net ``_0000`` channel suffix when the model takes
    several channels); a single file must be NIfTI (4D [X, Y, Z, C] for several channels)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"input {str(p)!r} does not exist; expected a .nii.gz volume or a folder of them")
    notes: list[str] = []
    if p.is_file():
        if not is_nifti(p):
            raise DataError(f"input {str(p)!r} is not a NIfTI file; expected a .nii.gz or .nii volume")
        # With several channels a single file must be 4D [X, Y, Z, C]; the pipeline checks it.
        return [Case(case_name(p), (str(p),), None)], notes
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
    notes += [f"{str(f)!r}: not a NIfTI file, passed over" for f in files if not is_nifti(f)]
    groups: dict[str, list[str]] = {}
    for f in files:
        if is_nifti(f):
            groups.setdefault(case_name(f) if n_channels > 1 else f.name, []).append(str(f))
    cases = [Case(case_name(fs[0]), tuple(fs), None) for _, fs in sorted(groups.items())]
    if not cases:
        raise DataError(f"folder {str(p)!r} holds no .nii.gz or .nii volumes")
    return cases, notes


def _read_original(path: str):
    """(nibabel image, voxel array) of the input, reading every byte so a truncated file is caught here."""
    import nibabel as nib

    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj)
    except Exception as err:
        raise DataError(f"{path!r} could not be read ({type(err).__name__}: {err}); "
                        "is it truncated or damaged?") from None
    return img, data


def save_prediction(seg: np.ndarray, ref, path: Path) -> None:
    """Write labels [X, Y, Z] as NIfTI with ``ref``'s affine and header (dtype set to uint8, no scaling)."""
    import nibabel as nib

    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    out = nib.Nifti1Image(seg.astype(np.uint8), ref.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(out, tmp)


def overlay_png(image: np.ndarray, seg: np.ndarray, affine: np.ndarray, path: Path, title: str = "",
                class_names: list[str] | None = None) -> None:
    """Axial, coronal and sagittal slices through the prediction's centre, labels over the image."""
    import nibabel as nib

    from ssmkit.engine.report import pyplot, save_figure

    # Reorient both to RAS so every overlay reads the same way whatever the file's orientation.
    ornt = nib.orientations.io_orientation(affine)
    img = nib.orientations.apply_orientation(image if image.ndim == 3 else image[..., 0], ornt)
    lab = nib.orientations.apply_orientation(seg, ornt)
    fg = np.argwhere(lab > 0)
    centre = fg.mean(0).round().astype(int) if len(fg) else (np.array(lab.shape) // 2)
    lo, hi = np.percentile(img, [1, 99])
    views = [("axial", img[:, :, centre[2]], lab[:, :, centre[2]]),
             ("coronal", img[:, centre[1], :], lab[:, centre[1], :]),
             ("sagittal", img[centre[0], :, :], lab[centre[0], :, :])]
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 4), dpi=100)
    for ax, (name, im, lb) in zip(axes, views):
        ax.imshow(np.rot90(im), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
        rgba = np.zeros((*lb.shape, 4), np.float32)
        rgba[..., :3] = PALETTE[np.clip(lb, 0, len(PALETTE) - 1)]
        rgba[..., 3] = (lb > 0) * 0.45
        ax.imshow(np.rot90(rgba))
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if class_names:
        for k, n in enumerate(class_names[1:], start=1):
            axes[0].plot([], [], "s", color=PALETTE[k % len(PALETTE)], label=n)
        axes[0].legend(fontsize=7, loc="lower left", framealpha=0.7)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def predict_case(model: nn.Module, case: Case, plan: Plan, device: torch.device, autocast: Callable,
                 overlap: float = 0.5, sw_batch_size: int = 2):
    """(labels [X, Y, Z] uint8 on the input grid, the input's nibabel image, its voxels)."""
    ref, data = _read_original(case.images[0])
    for extra in case.images[1:]:
        _read_original(extra)
    pre = preprocess(plan, with_label=False)
    try:
        d = pre({"image": list(case.images) if len(case.images) > 1 else case.images[0]})
    except Exception as err:
        cause = root_cause(err)
        if isinstance(cause, UserError):
            raise cause from None
        raise DataError(f"{case.images[0]!r} could not be preprocessed ({type(cause).__name__}: {cause})") from None
    image = d["image"]
    probs = predict_probs(model, image, plan, device, autocast, overlap, sw_batch_size)
    shape = ref.shape[:3]
    # Back onto the input grid: the preprocessed image's affine says where each voxel lies.
    src = MetaTensor(probs, affine=image.affine)
    back = SpatialResample(mode="bilinear", padding_mode="border", dtype=torch.float32)(
        src, dst_affine=torch.as_tensor(ref.affine, dtype=torch.float64), spatial_size=shape)
    seg = torch.as_tensor(back).argmax(0).numpy().astype(np.uint8)
    return seg, ref, data


def infer_paths(model: nn.Module, cases: list[Case], plan: Plan, out_dir: Path, device: torch.device,
                autocast: Callable, overlap: float = 0.5, sw_batch_size: int = 2,
                png: bool = True) -> tuple[list[Path], list[str]]:
    """Predict each case into ``out_dir``; a case that fails with a user error is reported on
    stderr and skipped. Returns (written NIfTI paths, failure messages)."""
    written, failed = [], []
    for case in cases:
        try:
            seg, ref, data = predict_case(model, case, plan, device, autocast, overlap, sw_batch_size)
        except UserError as err:
            msg = str(err).strip().splitlines()[0]
            print(f"skipped {case.name}: {msg}", file=sys.stderr, flush=True)
            failed.append(msg)
            continue
        target = out_dir / f"{case.name}.nii.gz"
        save_prediction(seg, ref, target)
        written.append(target)
        if png:
            counts = ", ".join(f"{plan.class_names[k]} {int((seg == k).sum())}" for k in range(1, plan.n_classes))
            overlay_png(data, seg, ref.affine, out_dir / f"{case.name}_overlay.png",
                        title=f"{case.name}: {counts} voxels", class_names=plan.class_names)
        print(f"wrote {target}", flush=True)
    return written, failed


__all__ = ["PALETTE", "infer_paths", "list_inputs", "overlay_png", "predict_case", "predict_probs", "save_prediction"]
