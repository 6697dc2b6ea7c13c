"""Synthetic CT-like abdominal phantoms in the nnU-Net / Medical Segmentation Decathlon layout.

Each case is a small volume (64 x 64 x 40 voxels by default, 1.0 x 1.0 x 1.6 mm: anisotropic,
like thick-slice CT) in Hounsfield units, with six labels:

    0 background   air, fat rim and soft tissue of the body
    1 organ_a      a large ellipsoid (liver-like), 60 HU
    2 organ_b      an ellipsoid that touches organ_a, 68 HU: its intensity overlaps organ_a's,
                   so only shape and position separate the two
    3 organ_c      a third ellipsoid touching organ_b, 45 HU, close to the 30 HU soft tissue
    4 vessel       a branching tubular tree (0.8 to 2.8 mm radius), contrast-enhanced, 160 HU
    5 lesion       one or two small hypodense spheres inside organ_a, 35 HU (the rare class)

On top of the piecewise-constant anatomy: smooth per-organ texture, partial-volume blur
(stronger along the thick-slice axis), a multiplicative bias field and Gaussian noise. The
affine is LPS-like (negative x and y steps, as many CT converters write), so the loader's
reorientation to RAS has work to do.

    >>> from ssmkit_apps.medseg.phantoms import make_phantom
    >>> img, lab = make_phantom(0, shape=(32, 32, 20))
    >>> img.shape, lab.dtype.name, int(lab.max()) <= 5
    ((32, 32, 20), 'uint8', True)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

CLASSES = ("background", "organ_a", "organ_b", "organ_c", "vessel", "lesion")
HU = {"air": -1000.0, "fat": -90.0, "tissue": 30.0, "organ_a": 60.0, "organ_b": 68.0, "organ_c": 45.0,
      "vessel": 160.0, "lesion": 35.0}
DEFAULT_SHAPE = (64, 64, 40)
DEFAULT_SPACING = (1.0, 1.0, 1.6)


def phantom_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """LPS-like voxel-to-world matrix [4, 4] centred on the volume (x and y steps negative)."""
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = [(shape[0] - 1) * spacing[0] / 2, (shape[1] - 1) * spacing[1] / 2, -(shape[2] - 1) * spacing[2] / 2]
    return aff


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random rotation matrix [3, 3] with each Euler angle within +-max_deg."""
    a, b, c = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ellipsoid(coords: np.ndarray, centre: np.ndarray, radii: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Normalised radius of every voxel [X, Y, Z] w.r.t. an ellipsoid (< 1 inside). coords [X, Y, Z, 3] in mm."""
    local = (coords - centre) @ rot  # rows of rot are the ellipsoid axes in world coordinates
    return np.sqrt(((local / radii) ** 2).sum(-1))


def _touching_centre(centre: np.ndarray, radii: np.ndarray, rot: np.ndarray, other_radii: np.ndarray,
                     direction: np.ndarray, overlap: float = 0.9) -> np.ndarray:
    """Centre of a second ellipsoid placed along ``direction`` so the two surfaces meet."""
    d = direction / np.linalg.norm(direction)
    # Distance from the centre to the first surface along d, then out by the second's mean radius.
    reach = 1.0 / np.sqrt((((d @ rot) / radii) ** 2).sum())
    return centre + d * overlap * (reach + float(np.mean(other_radii)))


def _segment_distance(coords: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance [..] of each point in coords [.., 3] to the segment a-b."""
    ab = b - a
    t = np.clip(((coords - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.linalg.norm(coords - (a + t[..., None] * ab), axis=-1)


def _vessel_tree(coords: np.ndarray, rng: np.random.Generator, extent: np.ndarray) -> np.ndarray:
    """Boolean mask of a branching tube tree entering from one side of the field of view."""
    mask = np.zeros(coords.shape[:3], bool)
    start = np.array([rng.uniform(0.3, 0.7) * extent[0], 0.02 * extent[1], rng.uniform(0.3, 0.7) * extent[2]])
    stack = [(start, np.array([rng.normal(0, 0.3), 1.0, rng.normal(0, 0.2)]), 2.8, 0)]
    while stack:
        p, d, r, depth = stack.pop()
        d = d / np.linalg.norm(d)
        length = rng.uniform(0.18, 0.32) * extent[1]
        q = np.clip(p + d * length, 0, extent)
        # Rasterise only inside the segment's bounding box (plus the radius): most voxels are far.
        lo = np.maximum(np.minimum(p, q) - r - 1, 0)
        hi = np.minimum(np.maximum(p, q) + r + 1, extent)
        sl = tuple(slice(int(lo[i] / extent[i] * mask.shape[i]), int(np.ceil(hi[i] / extent[i] * mask.shape[i])) + 1)
                   for i in range(3))
        mask[sl] |= _segment_distance(coords[sl], p, q) <= r
        if depth < 3 and r > 0.9:
            for sign in (-1.0, 1.0):
                turn = rng.normal(0, 0.25, 3)
                turn[0] += sign * rng.uniform(0.5, 0.9)
                stack.append((q, d + turn, r * rng.uniform(0.65, 0.8), depth + 1))
    return mask


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (Gaussian-filtered white noise)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return f / max(float(f.std()), 1e-9)


def make_phantom(seed: int, shape: tuple[int, int, int] = DEFAULT_SHAPE,
                 spacing: tuple[float, float, float] = DEFAULT_SPACING, noise_hu: float = 12.0,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One case: (image [X, Y, Z] int16 in HU, label [X, Y, Z] uint8 in 0..5), a pure function of seed."""
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"phantom shape must be 3 sizes >= 8; got {shape}")
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, float)
    extent = (np.asarray(shape) - 1) * sp
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, sp)], indexing="ij")
    coords = np.stack(grid, -1)  # [X, Y, Z, 3] in mm
    mid = extent / 2

    label = np.zeros(shape, np.uint8)
    image = np.full(shape, HU["air"])
    body = _ellipsoid(coords, mid, extent * np.array([0.5, 0.46, 0.7]), np.eye(3))
    image[body < 1.0] = HU["fat"]
    image[body < 0.9] = HU["tissue"]

    scale = extent.min()
    ra = scale * rng.uniform([0.30, 0.24, 0.26], [0.36, 0.30, 0.32])
    rot_a = _rotation(rng, 25)
    ca = mid + np.array([-0.1, rng.uniform(-0.06, 0.06), 0.0]) * extent
    rb = scale * rng.uniform([0.15, 0.13, 0.16], [0.20, 0.17, 0.21])
    rot_b = _rotation(rng, 40)
    cb = _touching_centre(ca, ra, rot_a, rb, np.array([1.0, rng.uniform(-0.6, 0.6), rng.uniform(-0.3, 0.3)]))
    rc = scale * rng.uniform([0.11, 0.10, 0.13], [0.14, 0.13, 0.17])
    rot_c = _rotation(rng, 40)
    body_c, body_r = mid, extent * np.array([0.5, 0.46, 0.7])
    for _ in range(20):  # organ_c must land well inside the body; retry directions until it does
        side = np.array([rng.uniform(-0.2, 0.6), rng.choice([-1.0, 1.0]), rng.uniform(-0.4, 0.4)])
        cc = _touching_centre(cb, rb, rot_b, rc, side)
        if np.sqrt((((cc - body_c) / body_r) ** 2).sum()) < 0.6:
            break

    inside = body < 0.88  # organs stay inside the soft tissue
    # Where two ellipsoids overlap, the one the voxel is deeper inside wins: surfaces touch.
    dist = np.stack([np.full(shape, np.inf), _ellipsoid(coords, ca, ra, rot_a), _ellipsoid(coords, cb, rb, rot_b),
                     _ellipsoid(coords, cc, rc, rot_c)])
    organ = dist.argmin(0)
    organ[(dist.min(0) >= 1.0) | ~inside] = 0
    for k, name in ((1, "organ_a"), (2, "organ_b"), (3, "organ_c")):
        m = organ == k
        label[m] = k
        image[m] = HU[name] + 8.0 * _smooth_noise(rng, shape, 1.5)[m]

    vessels = _vessel_tree(coords, rng, extent) & inside
    label[vessels] = 4
    image[vessels] = HU["vessel"]

    organ_a = np.argwhere(label == 1)
    for _ in range(int(rng.integers(1, 3))):
        if len(organ_a) == 0:
            break
        centre = organ_a[rng.integers(len(organ_a))] * sp
        radius = rng.uniform(2.5, 4.5)
        lesion = (np.linalg.norm(coords - centre, axis=-1) < radius) & (label == 1)
        label[lesion] = 5
        image[lesion] = HU["lesion"]

    # Partial-volume blur: the thick-slice axis (z) integrates over more tissue.
    image = ndimage.gaussian_filter(image, sigma=(0.6, 0.6, 0.9))
    bias = 1.0 + 0.015 * _smooth_noise(rng, shape, max(shape) / 4)  # on attenuation, not on HU
    image = (image + 1000.0) * bias - 1000.0
    image += noise_hu * rng.standard_normal(shape)
    return np.clip(np.round(image), -1024, 3071).astype(np.int16), label


def dataset_json(n_train: int, n_test: int, name: str = "ssmkit_phantoms") -> dict:
    """dataset.json in the nnU-Net v2 form, plus the MSD ``training``/``test`` lists."""
    return {
        "name": name,
        "description": "Synthetic CT-like phantoms (touching organs, vessel tree, small lesions), written by ssmkit",
        "reference": "ssmkit_apps.medseg.phantoms",
        "licence": "CC0-1.0",
        "tensorImageSize": "3D",
        "channel_names": {"0": "CT"},
        "labels": {c: i for i, c in enumerate(CLASSES)},
        "numTraining": n_train,
        "numTest": n_test,
        "file_ending": ".nii.gz",
        "training": [{"image": f"./imagesTr/phantom_{i:03d}_0000.nii.gz", "label": f"./labelsTr/phantom_{i:03d}.nii.gz"}
                     for i in range(n_train)],
        "test": [f"./imagesTs/phantom_{n_train + i:03d}_0000.nii.gz" for i in range(n_test)],
    }


def write_phantom_dataset(root: str | Path, n_train: int = 24, n_test: int = 8, seed: int = 0,
                          shape: tuple[int, int, int] = DEFAULT_SHAPE,
                          spacing: tuple[float, float, float] = DEFAULT_SPACING) -> Path:
    """Write imagesTr/, labelsTr/, imagesTs/, labelsTs/ and dataset.json under ``root``.

    Case ``i`` is ``make_phantom(seed * 100_003 + i)``: the test cases (i >= n_train) never
    repeat a training case. Test labels go to labelsTs/ so the test split can be scored.
    """
    import nibabel as nib

    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0; got {n_train}, {n_test}")
    root = Path(root)
    folders = {k: root / k for k in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    aff = phantom_affine(shape, spacing)
    for i in range(n_train + n_test):
        img, lab = make_phantom(seed * 100_003 + i, shape, spacing)
        kind = "Tr" if i < n_train else "Ts"
        for arr, folder, name in ((img, f"images{kind}", f"phantom_{i:03d}_0000.nii.gz"),
                                  (lab, f"labels{kind}", f"phantom_{i:03d}.nii.gz")):
            im = nib.Nifti1Image(arr, aff)
            im.header.set_xyzt_units("mm", "sec")
            im.header.set_qform(aff, code=1)
            im.header.set_sform(aff, code=1)
            nib.save(im, folders[folder] / name)
    (root / "dataset.json").write_text(json.dumps(dataset_json(n_train, n_test), indent=2) + "\n")
    return root


__all__ = ["CLASSES", "DEFAULT_SHAPE", "DEFAULT_SPACING", "dataset_json", "make_phantom", "phantom_affine",
           "write_phantom_dataset"]
