"""The phantom generator, the nnU-Net/MSD reader, the MONAI pipeline, and every bad-input error."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImaged

from ssmkit.errors import DataError
from ssmkit_apps.medseg.dataset import check_case_headers, ras_spacing_and_shape, read_dataset, split_cases
from ssmkit_apps.medseg.phantoms import CLASSES, HU, make_phantom, phantom_affine, write_phantom_dataset
from ssmkit_apps.medseg.plan import Plan
from ssmkit_apps.medseg.transforms import TrainPatches, Volumes, cached, preprocess

SHAPE = (24, 24, 16)
SPACING = (1.0, 1.0, 1.6)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("ph") / "ds", n_train=3, n_test=1, seed=0, shape=SHAPE,
                                 spacing=SPACING)


@pytest.fixture
def root(tiny_root, tmp_path):
    """A private copy to corrupt."""
    return shutil.copytree(tiny_root, tmp_path / "ds")


def _plan(**kw) -> Plan:
    base = dict(spacing=list(SPACING), patch_size=[16, 16, 8], strides=[[1, 1, 1], [2, 2, 2]], kernels=[[3, 3, 3]] * 2,
                class_names=list(CLASSES), modalities=["CT"], windows=[[-150.0, 250.0]])
    return Plan(**{**base, **kw})


def test_phantom_is_deterministic_and_holds_every_class():
    a_img, a_lab = make_phantom(3)
    b_img, b_lab = make_phantom(3)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(make_phantom(4)[1], a_lab)
    for seed in range(3):
        img, lab = make_phantom(seed, (48, 48, 30))
        counts = np.bincount(lab.ravel(), minlength=len(CLASSES))
        assert (counts > 0).all(), f"seed {seed}: class counts {counts}"
        assert counts[5] < counts[1] / 10  # the lesion is the rare class
        # organ_a and organ_b overlap in intensity: many organ_b voxels lie inside organ_a's 5-95% range
        a, b = img[lab == 1].astype(float), img[lab == 2].astype(float)
        lo, hi = np.percentile(a, [5, 95])
        assert ((b >= lo) & (b <= hi)).mean() > 0.3
        assert abs(HU["organ_b"] - HU["organ_a"]) < 10
    # organ_a and organ_b touch: some organ_a voxel has an organ_b neighbour
    from scipy import ndimage

    assert (ndimage.binary_dilation(lab == 1) & (lab == 2)).any()


def test_written_nifti_reads_back_through_monai_with_the_same_affine(tiny_root):
    meta = json.loads((tiny_root / "dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["channel_names"] == {"0": "CT"} and meta["labels"]["lesion"] == 5
    f = tiny_root / "imagesTr" / "phantom_000_0000.nii.gz"
    img = nib.load(f)
    assert img.shape == SHAPE and img.header.get_zooms() == pytest.approx(SPACING)
    d = LoadImaged(["image"], image_only=True)({"image": str(f)})
    expected = phantom_affine(SHAPE, SPACING)
    assert np.allclose(np.asarray(d["image"].affine), expected)
    assert np.allclose(img.affine, expected)
    assert np.array_equal(np.asarray(d["image"]), make_phantom(0, SHAPE, SPACING)[0])
    spacing, shape = ras_spacing_and_shape(img.affine, img.shape)
    assert spacing.tolist() == pytest.approx(list(SPACING)) and shape.tolist() == list(SHAPE)


def test_reader_and_split(tiny_root):
    spec = read_dataset(tiny_root)
    assert [c.name for c in spec.training] == ["phantom_000", "phantom_001", "phantom_002"]
    assert spec.class_names == list(CLASSES) and spec.channel_names == ("CT",)
    assert len(spec.test) == 1 and spec.test[0].label is not None
    train, val = split_cases(spec.training, 0.2, seed=0)
    assert len(val) == 1 and len(train) == 2 and not set(c.name for c in train) & set(c.name for c in val)
    assert split_cases(spec.training, 0.2, seed=0) == (train, val)


def test_msd_layout_without_a_training_list(root):
    meta = json.loads((root / "dataset.json").read_text())
    del meta["training"]
    meta["labels"] = {str(i): c for i, c in enumerate(CLASSES)}  # MSD form
    meta["modality"] = meta.pop("channel_names")
    (root / "dataset.json").write_text(json.dumps(meta))
    for p in (root / "imagesTr").iterdir():  # MSD names: no _0000 suffix
        p.rename(p.with_name(p.name.replace("_0000", "")))
    spec = read_dataset(root)
    assert [c.name for c in spec.training] == ["phantom_000", "phantom_001", "phantom_002"]
    assert spec.labels["vessel"] == 4


def test_pipeline_reorients_resamples_and_normalises(tiny_root):
    spec = read_dataset(tiny_root)
    d = preprocess(_plan())(spec.training[0].as_dict())
    img, lab = d["image"], d["label"]
    assert img.shape == (1, *SHAPE) and lab.shape == (1, *SHAPE)
    aff = np.asarray(img.affine)
    assert (np.diag(aff)[:3] > 0).all()  # RAS: the LPS-like file was flipped along x and y
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0  # CT window -> [0, 1]
    raw = make_phantom(0, SHAPE, SPACING)[1]
    assert np.array_equal(np.asarray(lab[0]), raw[::-1, ::-1, :])
    # an MR-style channel gets a z-score over its non-zero voxels instead
    z = preprocess(_plan(modalities=["T1"], windows=[None]))(spec.training[0].as_dict())["image"]
    nz = np.asarray(z)[np.asarray(z) != 0]
    assert abs(nz.mean()) < 0.05 and abs(nz.std() - 1) < 0.05


def test_train_patches_are_foreground_biased_and_reproducible(tiny_root):
    spec = read_dataset(tiny_root)
    ds = TrainPatches(list(spec.training), _plan(), length=6, pos=1.0, neg=0.0)
    torch.manual_seed(0)
    first = [ds[i] for i in range(6)]
    for x, y in first:
        assert x.shape == (1, 16, 16, 8) and y.shape == (1, 16, 16, 8) and y.dtype == torch.int64
        assert (y > 0).any()  # pos=1, neg=0: every crop is centred on foreground
    torch.manual_seed(0)
    again = [ds[i] for i in range(6)]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    vol = Volumes(list(spec.test), _plan())[0]
    assert vol["case"] == "phantom_003" and vol["image"].shape == (1, *SHAPE) and vol["spacing"] == list(SPACING)


# ------------------------------------------------------------------------------------ bad input


def test_missing_dataset_json(root):
    (root / "dataset.json").unlink()
    with pytest.raises(DataError, match=r"dataset\.json' is missing"):
        read_dataset(root)
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(root / "nowhere")


def test_non_nifti_files(root):
    (root / "imagesTr" / "notes.txt").write_text("x")
    meta = json.loads((root / "dataset.json").read_text())
    del meta["training"]
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"not NIfTI: \['notes.txt'\]"):
        read_dataset(root)
    meta["training"] = [{"image": "./imagesTr/notes.txt", "label": "./labelsTr/phantom_000.nii.gz"}]
    meta["numTraining"] = 1
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"notes.txt' is not a NIfTI file"):
        read_dataset(root)


def _save(path, arr, affine):
    nib.save(nib.Nifti1Image(arr, affine), str(path))


def test_label_with_another_shape_or_affine(root):
    aff = phantom_affine(SHAPE, SPACING)
    lab = root / "labelsTr" / "phantom_001.nii.gz"
    _save(lab, np.zeros((24, 24, 15), np.uint8), aff)
    spec = read_dataset(root)
    with pytest.raises(DataError, match=r"phantom_001.nii.gz' has shape \(24, 24, 15\) but its image"):
        check_case_headers(spec.training[1], 1)
    moved = aff.copy()
    moved[0, 3] += 5.0
    _save(lab, np.zeros(SHAPE, np.uint8), moved)
    with pytest.raises(DataError, match=r"phantom_001.nii.gz' has affine"):
        check_case_headers(spec.training[1], 1)


def test_test_split_label_off_its_image_grid_is_refused_before_scoring(root):
    from ssmkit.engine.config import load_config
    from ssmkit_apps.medseg.app import MedsegApp, MedsegConfig

    _save(root / "labelsTs" / "phantom_003.nii.gz", np.zeros((24, 24, 15), np.uint8), phantom_affine(SHAPE, SPACING))
    app = MedsegApp(load_config(MedsegConfig, overrides=[f"data.root={root}", "data.patch_size=[16,16,8]",
                                                         "data.max_stages=2"]))
    with pytest.raises(DataError, match=r"label '.*labelsTs/phantom_003.nii.gz' has shape \(24, 24, 15\)"):
        app.build_dataset("test")


def test_4d_image_where_3d_is_expected(root):
    img = root / "imagesTr" / "phantom_002_0000.nii.gz"
    _save(img, np.zeros((*SHAPE, 2), np.int16), phantom_affine(SHAPE, SPACING))
    spec = read_dataset(root)
    with pytest.raises(DataError, match=r"phantom_002_0000.nii.gz' is 4D with shape \(24, 24, 16, 2\); "
                                        r"dataset.json declares one channel"):
        check_case_headers(spec.training[2], 1)
    with pytest.raises(DataError, match=r"phantom_002_0000.nii.gz' has shape \(24, 24, 16\) with 2 channel"):
        cached([spec.training[2]], preprocess(_plan()))


def test_nan_voxels_and_undeclared_labels(root):
    aff = phantom_affine(SHAPE, SPACING)
    arr = np.zeros(SHAPE, np.float32)
    arr[3, 4, 5] = np.nan
    _save(root / "imagesTr" / "phantom_000_0000.nii.gz", arr, aff)
    lab = make_phantom(1, SHAPE, SPACING)[1]
    lab[0, 0, 0] = 9
    _save(root / "labelsTr" / "phantom_001.nii.gz", lab, aff)
    spec = read_dataset(root)
    with pytest.raises(DataError, match=r"phantom_000_0000.nii.gz' holds 1 NaN/inf voxel\(s\) \(first at voxel "):
        cached([spec.training[0]], preprocess(_plan()))
    with pytest.raises(DataError, match=r"phantom_001.nii.gz' holds values \[9\] that dataset.json does not "
                                        r"declare; declared labels are 0..5"):
        cached([spec.training[1]], preprocess(_plan()))


def test_truncated_training_file_names_the_case(root):
    f = root / "imagesTr" / "phantom_000_0000.nii.gz"
    f.write_bytes(f.read_bytes()[:400])
    spec = read_dataset(root)
    with pytest.raises(DataError, match=r"case 'phantom_000' .*could not be loaded"):
        cached([spec.training[0]], preprocess(_plan()))


def test_undeclared_label_layouts_in_dataset_json(root):
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "organ": 2}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"label values must be 0..K-1 .* got \[0, 2\]"):
        read_dataset(root)
    meta["labels"] = {"background": 0}
    meta["numTraining"] = 7
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="numTraining=7 but 3 training cases"):
        read_dataset(root)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        read_dataset(root)
