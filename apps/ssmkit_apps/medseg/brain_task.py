"""The real-data task: coarse brain regions, trained on Colin27 and tested on the MNI152 template.

Sources (nothing is downloaded):
- Colin27 T1 ``ch2.nii.gz`` (and its brain-extracted copy ``ch2bet.nii.gz``, the default here) and
  the AAL atlas ``aal.nii.gz`` on the same 1 mm grid, with the region names in ``aal.nii.txt``
  (Debian package ``mricron-data``, /usr/share/mricron/templates/);
- the MNI152 2009c symmetric T1 template shipped inside the ``nilearn`` wheel
  (``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``).

Both are in MNI space, so the AAL labels are resampled onto the MNI152 grid through the two
affines (no registration). The 116 AAL labels are grouped into seven regions (REGIONS, also in
data/medseg.md). Volumes are resampled to ``spacing`` mm (3 mm by default, CPU-sized); labels
are resampled as per-region fractions and the largest fraction wins (background included), so
thin cortical ribbons are not lost to nearest-neighbour sampling.

imagesTr holds Colin27 plus ``variants`` copies of it with a smooth random deformation, a bias
field and a gamma change (so the validation split can hold one out); imagesTs holds MNI152.

    python -m ssmkit_apps.medseg.brain_task OUT_DIR [--spacing 3] [--variants 3]
    ssmkit medseg make-brain-data OUT_DIR            (the same, through the app)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from ssmkit.errors import DataError

TEMPLATES = Path("/usr/share/mricron/templates")
AAL, AAL_NAMES = TEMPLATES / "aal.nii.gz", TEMPLATES / "aal.nii.txt"
# ch2: the Colin27 T1 with scalp and skull; ch2bet: the same volume brain-extracted. The nilearn
# MNI152 template is brain-only, so ch2bet is the default: with ch2 the test measures mostly the
# missing skull (and what it does to the z-score), not the anatomy.
COLIN = {"ch2bet": TEMPLATES / "ch2bet.nii.gz", "ch2": TEMPLATES / "ch2.nii.gz"}
MNI152_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"

# AAL name prefixes per region; every AAL label falls in exactly one (checked by the tests).
REGIONS: dict[str, tuple[str, ...]] = {
    "frontal": ("Precentral", "Frontal_", "Rolandic_Oper", "Supp_Motor_Area", "Olfactory", "Rectus",
                "Paracentral_Lobule"),
    "parietal": ("Postcentral", "Parietal_", "SupraMarginal", "Angular", "Precuneus"),
    "temporal": ("Heschl", "Temporal_", "Fusiform"),
    "occipital": ("Calcarine", "Cuneus", "Lingual", "Occipital_"),
    "limbic_insula": ("Insula", "Cingulum_", "Hippocampus", "ParaHippocampal", "Amygdala"),
    "deep_grey": ("Caudate", "Putamen", "Pallidum", "Thalamus"),
    "cerebellum": ("Cerebelum_", "Vermis_"),
}
CLASSES = ("background", *REGIONS)


def mni152_path() -> Path:
    """The MNI152 T1 template inside the installed nilearn package (never fetched)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the MNI152 template comes with the 'nilearn' package; install it with "
                        "pip install 'ssmkit[medseg]'")
    p = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / MNI152_FILE
    if not p.is_file():
        raise DataError(f"{str(p)!r} is missing from the installed nilearn package")
    return p


def region_lut(names_file: Path = AAL_NAMES) -> tuple[np.ndarray, dict[int, str]]:
    """(lookup [max AAL value + 1] AAL value -> region index 1..7, {AAL value: AAL name})."""
    if not names_file.is_file():
        raise DataError(f"{str(names_file)!r} is missing; install the Debian package mricron-data")
    names: dict[int, str] = {}
    for line in names_file.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    lut = np.zeros(max(names) + 1, np.uint8)
    for value, name in names.items():
        hits = [i for i, prefixes in enumerate(REGIONS.values(), start=1) if name.startswith(prefixes)]
        if len(hits) != 1:
            raise DataError(f"AAL label {value} {name!r} matches {len(hits)} regions; the grouping must be a partition")
        lut[value] = hits[0]
    return lut, names


def _load(path: Path):
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"{str(path)!r} is missing; install the Debian package mricron-data (Colin27, AAL) and "
                        "the nilearn wheel (MNI152)")
    return nib.load(str(path))


def resample_regions(regions, target, n_regions: int) -> np.ndarray:
    """Region map [X, Y, Z] on ``target``'s grid: per-region fractions resampled trilinearly,
    the largest fraction (background = 1 - sum) wins."""
    from nibabel.processing import resample_from_to

    lab = np.asarray(regions.dataobj)
    fractions = [np.zeros(target.shape[:3], np.float32)]
    for r in range(1, n_regions + 1):
        mask = type(regions)((lab == r).astype(np.float32), regions.affine)
        fractions.append(np.asarray(resample_from_to(mask, (target.shape[:3], target.affine), order=1).dataobj,
                                    np.float32))
    stack = np.stack(fractions)
    stack[0] = 1.0 - stack[1:].sum(0)
    return stack.argmax(0).astype(np.uint8)


def _deform(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, spacing: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random displacement (about 3 mm), a bias field and a gamma change."""
    shape = image.shape
    sigma = 20.0 / spacing  # displacement correlated over about 2 cm
    disp = []
    for _ in range(3):
        f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
        disp.append(f / max(float(np.abs(f).max()), 1e-9) * (3.0 / spacing))
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    coords = [g + d for g, d in zip(grid, disp)]
    img = ndimage.map_coordinates(image.astype(np.float32), coords, order=1, mode="nearest")
    lab = ndimage.map_coordinates(label, coords, order=0, mode="nearest")
    bias = np.exp(0.15 * ndimage.gaussian_filter(rng.standard_normal(shape), 30.0 / spacing) /
                  max(float(ndimage.gaussian_filter(rng.standard_normal(shape), 30.0 / spacing).std()), 1e-9))
    hi = float(np.percentile(img, 99.9)) or 1.0
    img = hi * (np.clip(img / hi, 0, None) ** rng.uniform(0.8, 1.25)) * bias
    return img.astype(np.float32), lab.astype(np.uint8)


def write_brain_task(out: str | Path, spacing: float = 3.0, variants: int = 3, seed: int = 0,
                     colin: str = "ch2bet") -> Path:
    """Write the task in the nnU-Net layout under ``out`` (see the module docstring)."""
    if colin not in COLIN:
        raise DataError(f"colin must be one of {list(COLIN)}; got {colin!r}")
    import nibabel as nib
    from nibabel.processing import resample_to_output

    if not 0.5 <= spacing <= 8:
        raise DataError(f"--spacing must be in 0.5..8 mm; got {spacing}")
    if variants < 0:
        raise DataError(f"--variants must be >= 0; got {variants}")
    out = Path(out)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    lut, _ = region_lut()
    aal = _load(AAL)
    aal_values = np.asarray(aal.dataobj).astype(np.int64)
    if aal_values.max() >= len(lut):
        raise DataError(f"{str(AAL)!r} holds value {aal_values.max()}, not listed in {str(AAL_NAMES)!r}")
    regions = nib.Nifti1Image(lut[aal_values], aal.affine)
    n = len(REGIONS)

    def save(arr: np.ndarray, affine: np.ndarray, path: Path, dtype) -> None:
        img = nib.Nifti1Image(arr.astype(dtype), affine)
        img.header.set_xyzt_units("mm", "sec")
        img.header.set_qform(affine, code=4)  # 4: MNI152 space
        img.header.set_sform(affine, code=4)
        nib.save(img, str(path))

    # colin_vol, not colin: the name of the source ("ch2bet") goes into dataset.json below
    colin_vol = resample_to_output(_load(COLIN[colin]), voxel_sizes=(spacing,) * 3, order=1)
    colin_lab = resample_regions(regions, colin_vol, n)
    colin_img = np.asarray(colin_vol.dataobj, np.float32)
    save(colin_img, colin_vol.affine, out / "imagesTr" / "colin27_0000.nii.gz", np.float32)
    save(colin_lab, colin_vol.affine, out / "labelsTr" / "colin27.nii.gz", np.uint8)
    rng = np.random.default_rng(seed)
    for v in range(variants):
        img, lab = _deform(colin_img, colin_lab, rng, spacing)
        save(img, colin_vol.affine, out / "imagesTr" / f"colin27v{v + 1}_0000.nii.gz", np.float32)
        save(lab, colin_vol.affine, out / "labelsTr" / f"colin27v{v + 1}.nii.gz", np.uint8)

    mni = resample_to_output(_load(mni152_path()), voxel_sizes=(spacing,) * 3, order=1)
    save(np.asarray(mni.dataobj, np.float32), mni.affine, out / "imagesTs" / "mni152_0000.nii.gz", np.float32)
    save(resample_regions(regions, mni, n), mni.affine, out / "labelsTs" / "mni152.nii.gz", np.uint8)

    names = ["colin27"] + [f"colin27v{v + 1}" for v in range(variants)]
    meta = {
        "name": "colin27_to_mni152_regions",
        "description": f"Seven coarse AAL brain regions at {spacing:g} mm: train on Colin27 ({colin}, +{variants} "
                       "deformed copies), test on the MNI152 2009c template; see data/medseg.md",
        "reference": "Colin27 and AAL from Debian mricron-data; MNI152 2009c from the nilearn package",
        "tensorImageSize": "3D",
        "channel_names": {"0": "T1"},
        "labels": {c: i for i, c in enumerate(CLASSES)},
        "regions": {k: list(v) for k, v in REGIONS.items()},
        "numTraining": len(names),
        "file_ending": ".nii.gz",
        "training": [{"image": f"./imagesTr/{c}_0000.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in names],
        "test": ["./imagesTs/mni152_0000.nii.gz"],
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ssmkit_apps.medseg.brain_task", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder (nnU-Net layout)")
    p.add_argument("--spacing", type=float, default=3.0, help="voxel size in mm (default 3)")
    p.add_argument("--variants", type=int, default=3, help="deformed copies of Colin27 in imagesTr (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--colin", choices=list(COLIN), default="ch2bet",
                   help="ch2bet: brain-extracted Colin27 (default, like the MNI152 template); ch2: with scalp")
    args = p.parse_args(argv)
    write_brain_task(args.out, args.spacing, args.variants, args.seed, args.colin)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["CLASSES", "REGIONS", "mni152_path", "region_lut", "resample_regions", "write_brain_task"]
