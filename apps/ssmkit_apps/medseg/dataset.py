"""The nnU-Net / Medical Segmentation Decathlon dataset layout: reading and checking it.

    <root>/
      dataset.json     channel_names (or MSD "modality"), labels, numTraining, file_ending,
                       optionally the MSD "training" list of {"image", "label"} pairs
      imagesTr/        <case>_0000.nii.gz (one file per channel, nnU-Net v2) or <case>.nii.gz (MSD)
      labelsTr/        <case>.nii.gz: integer labels on the image's grid
      imagesTs/        test images, named like imagesTr
      labelsTs/        optional: test labels, needed to score the test split

Everything a user can get wrong is reported as a :class:`DataError` naming the file: a missing
or malformed dataset.json, a listed file that is missing or not NIfTI, a label volume whose
shape or affine differs from its image, a 4D image where dataset.json declares one channel,
NaN voxels, and label values that dataset.json does not declare (the last two are checked on
the voxels, by :class:`CheckVoxelsd` inside the MONAI pipeline).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssmkit.errors import DataError

LAYOUT = """<root>/
  dataset.json   {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, ...},
                  "numTraining": N, "file_ending": ".nii.gz"}
  imagesTr/      <case>_0000.nii.gz (one file per channel) or <case>.nii.gz
  labelsTr/      <case>.nii.gz
  imagesTs/      test images (optional)
  labelsTs/      test labels (optional; needed to evaluate the test split)"""
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: str | Path) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def case_name(path: str | Path) -> str:
    """``phantom_007_0000.nii.gz`` -> ``phantom_007``; ``liver_3.nii.gz`` -> ``liver_3``."""
    name = Path(path).name
    for suf in NIFTI_SUFFIXES:
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    return re.sub(r"_\d{4}$", "", name)


@dataclass(frozen=True)
class Case:
    """One case: its image file(s) (one per channel, or one multi-channel file) and label."""

    name: str
    images: tuple[str, ...]
    label: str | None

    def as_dict(self) -> dict[str, Any]:
        """The MONAI dictionary form (``image`` is a list when there are several channel files)."""
        d: dict[str, Any] = {"image": list(self.images) if len(self.images) > 1 else self.images[0], "case": self.name}
        if self.label is not None:
            d["label"] = self.label
        return d


@dataclass(frozen=True)
class DatasetSpec:
    """What dataset.json declares, plus the cases found on disk."""

    root: Path
    channel_names: tuple[str, ...]  # modality per channel: "CT" gets windowing, anything else z-score
    labels: dict[str, int]  # name -> value, background first
    file_ending: str
    training: tuple[Case, ...]
    test: tuple[Case, ...]

    @property
    def class_names(self) -> list[str]:
        return [n for n, _ in sorted(self.labels.items(), key=lambda kv: kv[1])]

    @property
    def n_classes(self) -> int:
        return len(self.labels)


def _parse_labels(raw: Any, source: str) -> dict[str, int]:
    """nnU-Net v2 ``{"name": value}`` or MSD ``{"value": "name"}`` -> {name: value} with values 0..K-1."""
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{source}: 'labels' must be a non-empty mapping such as {{\"background\": 0, \"organ\": 1}}")
    out: dict[str, int] = {}
    for k, v in raw.items():
        if isinstance(v, int) and not isinstance(v, bool):
            out[str(k)] = v
        elif isinstance(v, str) and str(k).isdigit():
            out[v] = int(k)
        else:
            raise DataError(f"{source}: label entry {k!r}: {v!r} is neither name: int (nnU-Net v2) nor "
                            "\"int\": name (MSD); region-based labels (lists) are not supported")
    values = sorted(out.values())
    if values != list(range(len(values))):
        raise DataError(f"{source}: label values must be 0..K-1 with 0 the background; got {values}")
    return out


def _channel_names(meta: dict, source: str) -> tuple[str, ...]:
    raw = meta.get("channel_names", meta.get("modality"))
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{source}: needs 'channel_names' (nnU-Net v2) or 'modality' (MSD), e.g. {{\"0\": \"CT\"}}")
    try:
        keys = sorted(raw, key=int)
    except ValueError:
        raise DataError(f"{source}: channel keys must be \"0\", \"1\", ...; got {list(raw)}") from None
    if [int(k) for k in keys] != list(range(len(keys))):
        raise DataError(f"{source}: channel keys must be \"0\"..\"{len(keys) - 1}\"; got {keys}")
    return tuple(str(raw[k]) for k in keys)


def _resolve(root: Path, rel: str, source: str, what: str) -> str:
    p = (root / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
    if not is_nifti(p):
        raise DataError(f"{source}: {what} {rel!r} is not a NIfTI file; expected a .nii.gz or .nii file")
    if not p.is_file():
        raise DataError(f"{source}: {what} {str(p)!r} does not exist")
    return str(p)


def _cases_from_folder(root: Path, images: str, labels: str, n_channels: int, ending: str,
                       need_labels: bool) -> list[Case]:
    img_dir, lab_dir = root / images, root / labels
    if not img_dir.is_dir():
        if need_labels:
            raise DataError(f"dataset path {str(root)!r} has no {images}/ folder. Expected layout:\n{LAYOUT}")
        return []
    files = sorted(p for p in img_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    bad = [p.name for p in files if not is_nifti(p)]
    if bad:
        raise DataError(f"{str(img_dir)!r} holds files that are not NIfTI: {bad[:5]}; expected {ending} images only")
    groups: dict[str, list[Path]] = {}
    for p in files:
        groups.setdefault(case_name(p), []).append(p)
    cases = []
    for name, group in sorted(groups.items()):
        if len(group) != n_channels and not (len(group) == 1 and not re.search(r"_\d{4}\.nii", group[0].name)):
            raise DataError(f"{str(img_dir)!r}: case {name!r} has {len(group)} channel files "
                            f"({[g.name for g in group]}); dataset.json declares {n_channels} channel(s)")
        label = lab_dir / f"{name}{ending}"
        if not label.is_file():
            if need_labels:
                raise DataError(f"{str(group[0])!r} has no label {str(label)!r}. Expected layout:\n{LAYOUT}")
            label = None
        cases.append(Case(name, tuple(str(g) for g in group), None if label is None else str(label)))
    return cases


def read_dataset(root: str | Path) -> DatasetSpec:
    """Parse ``<root>/dataset.json`` and list the training and test cases (files checked to exist)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset path {str(root)!r} does not exist or is not a folder. Expected layout:\n{LAYOUT}")
    f = root / "dataset.json"
    if not f.is_file():
        raise DataError(f"{str(f)!r} is missing: every dataset needs a dataset.json. Expected layout:\n{LAYOUT}")
    try:
        meta = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{str(f)!r} is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{str(f)!r} must hold a JSON object. Expected layout:\n{LAYOUT}")
    channels = _channel_names(meta, str(f))
    labels = _parse_labels(meta.get("labels"), str(f))
    ending = str(meta.get("file_ending", ".nii.gz"))
    if ending not in NIFTI_SUFFIXES:
        raise DataError(f"{str(f)!r}: file_ending {ending!r} is not NIfTI; expected one of {list(NIFTI_SUFFIXES)}")
    if "training" in meta:
        entries = meta["training"]
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "image" in e and "label" in e
                                                    for e in entries):
            raise DataError(f"{str(f)!r}: 'training' must be a list of {{\"image\": ..., \"label\": ...}} entries")
        training = []
        for e in entries:
            imgs = e["image"] if isinstance(e["image"], list) else [e["image"]]
            paths = tuple(_resolve(root, str(i), str(f), "training image") for i in imgs)
            training.append(Case(case_name(paths[0]), paths, _resolve(root, str(e["label"]), str(f), "training label")))
    else:
        training = _cases_from_folder(root, "imagesTr", "labelsTr", len(channels), ending, need_labels=True)
    n = meta.get("numTraining")
    if n is not None and n != len(training):
        raise DataError(f"{str(f)!r}: numTraining={n} but {len(training)} training cases were found")
    if not training:
        raise DataError(f"dataset {str(root)!r} has no training cases. Expected layout:\n{LAYOUT}")
    test = _cases_from_folder(root, "imagesTs", "labelsTs", len(channels), ending, need_labels=False)
    return DatasetSpec(root, channels, labels, ending, tuple(training), tuple(test))


# ------------------------------------------------------------------------------ header checks


def load_header(path: str) -> Any:
    """The nibabel image (header only; the voxels are not read), or DataError naming the file."""
    import nibabel as nib

    if not is_nifti(path):
        raise DataError(f"{path!r} is not a NIfTI file; expected .nii.gz or .nii")
    try:
        return nib.load(path)
    except Exception as err:  # nibabel raises several types for damaged files
        raise DataError(f"{path!r} could not be read as NIfTI ({type(err).__name__}: {err})") from None


def check_case_headers(case: Case, n_channels: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Check one case's headers; returns (affine [4, 4], spatial shape). Raises DataError naming the file."""
    imgs = [load_header(p) for p in case.images]
    first = imgs[0]
    shape = tuple(int(s) for s in first.shape)
    if len(case.images) == 1:
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if n_channels == 1 and len(shape) != 3:
            raise DataError(f"{case.images[0]!r} is {len(shape)}D with shape {shape}; dataset.json declares one "
                            "channel, so a 3D volume [X, Y, Z] is expected")
        if n_channels > 1 and (len(shape) != 4 or shape[3] != n_channels):
            raise DataError(f"{case.images[0]!r} has shape {shape}; dataset.json declares {n_channels} channels, so "
                            f"a 4D volume [X, Y, Z, {n_channels}] or one 3D file per channel is expected")
        shape = shape[:3]
    else:
        for p, im in zip(case.images, imgs):
            s = tuple(int(v) for v in im.shape)
            if len(s) != 3:
                raise DataError(f"{p!r} is {len(s)}D with shape {s}; each channel file must be a 3D volume")
            if s != shape or not np.allclose(im.affine, first.affine, atol=1e-3):
                raise DataError(f"{p!r}: shape {s} or affine differs from the case's first channel {case.images[0]!r}")
    if case.label is not None:
        lab = load_header(case.label)
        ls = tuple(int(v) for v in lab.shape)
        if len(ls) == 4 and ls[3] == 1:
            ls = ls[:3]
        if ls != shape:
            raise DataError(f"label {case.label!r} has shape {ls} but its image {case.images[0]!r} has {shape}; "
                            "a label must lie on its image's voxel grid")
        if not np.allclose(lab.affine, first.affine, atol=1e-3):
            raise DataError(f"label {case.label!r} has affine\n{np.round(lab.affine, 4)}\nbut its image "
                            f"{case.images[0]!r} has\n{np.round(first.affine, 4)}; resample the label onto the image "
                            "grid")
    return np.asarray(first.affine, float), shape


def ras_spacing_and_shape(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Voxel spacing (mm) and shape in RAS axis order, i.e. as they are after ``Orientationd("RAS")``."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)  # [3, 2]: world axis of each voxel axis, and its sign
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    spacing, size = np.zeros(3), np.zeros(3)
    for vox_axis, (world_axis, _) in enumerate(ornt):
        spacing[int(world_axis)] = zooms[vox_axis]
        size[int(world_axis)] = shape[vox_axis]
    return spacing, size


def split_cases(cases: tuple[Case, ...] | list[Case], val_fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """(train, val): a seeded permutation of the cases, the last ceil(fraction * n) for validation.

    With a single case there is nothing to hold out: validation then reuses it (said in the card).
    """
    cases = list(cases)
    if len(cases) == 1:
        return cases, cases
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = min(len(cases) - 1, max(1, int(np.ceil(val_fraction * len(cases)))))
    val = sorted((cases[i] for i in order[-n_val:]), key=lambda c: c.name)
    train = sorted((cases[i] for i in order[:-n_val]), key=lambda c: c.name)
    return train, val


__all__ = ["LAYOUT", "Case", "DatasetSpec", "case_name", "check_case_headers", "is_nifti", "load_header",
           "ras_spacing_and_shape", "read_dataset", "split_cases"]
