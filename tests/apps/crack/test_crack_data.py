"""The generator is deterministic and hard; every dataset layout is read from a tiny fixture
written in that format; bad files are skipped or refused with messages naming them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from ssmkit.errors import DataError
from ssmkit_apps.crack import data as D
from ssmkit_apps.crack import synth


def test_generator_is_deterministic_per_seed_and_splits_differ():
    a_img, a_mask = synth.generate(3, "train", seed=5, size=48)
    b_img, b_mask = synth.generate(3, "train", seed=5, size=48)
    assert a_img.dtype == np.uint8 and a_img.shape == (3, 48, 48, 3) and a_mask.shape == (3, 48, 48)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    # image i does not depend on how many images are drawn
    one_img, _ = synth.generate(1, "train", seed=5, size=48)
    assert np.array_equal(one_img[0], a_img[0])
    c_img, _ = synth.generate(3, "train", seed=6, size=48)
    v_img, _ = synth.generate(3, "val", seed=5, size=48)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_img, v_img)
    # every image holds a thin crack: a few percent of the pixels
    assert all(0 < m.mean() < 0.25 for m in a_mask)


def test_darkness_alone_does_not_find_the_cracks():
    """Shadows, stains and joints are as dark as cracks: even the best global darkness threshold
    (chosen on these very images) leaves most of its detections wrong."""
    from ssmkit_apps.crack.metrics import SweepMeter

    imgs, masks = synth.generate(12, "val", seed=0, size=64)
    meter = SweepMeter()
    meter.update(synth.darkness_scores(imgs), masks)
    m = meter.compute()
    assert m["ods"] < 0.5, m
    assert m["ap"] < 0.4, m


def test_backgrounds_folder_is_used(tmp_path):
    rng = np.random.default_rng(0)
    photo = (rng.random((40, 70, 3)) * 60 + 150).astype(np.uint8)  # a bright, plain surface
    Image.fromarray(photo).save(tmp_path / "wall.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = D.embedded_split("train", 2, 32, seed=1, backgrounds=str(tmp_path))
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y.shape == (1, 32, 32)
    assert float(x[:, y[0] == 0].mean()) > 0.45  # the bright photo, not a procedural grey surface
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no readable images"):
        D.read_backgrounds(tmp_path / "empty")


# ------------------------------------------------------------------------------- fixtures


def _sample(rng, h=20, w=24):
    img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 2, :] = 255
    return img, mask


def _write_pair(img_path: Path, mask_path: Path, rng, mask_values=(0, 255)):
    img, mask = _sample(rng)
    img_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(img_path)
    lo, hi = mask_values
    m = np.where(mask > 0, hi, lo).astype(np.uint8)
    if mask_path.suffix == ".bmp":
        Image.fromarray(m > 0).save(mask_path)  # 1-bit BMP, as CrackTree260 ships
    else:
        Image.fromarray(m).save(mask_path)


def _cfd_mat(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    seg = np.where(mask > 0, 2, 1).astype(np.uint16)
    scipy.io.savemat(str(path), {"groundTruth": {"Segmentation": seg, "Boundaries": mask > 0}})


def make_fixture(fmt: str, root: Path, n: int = 5) -> Path:
    rng = np.random.default_rng(0)
    if fmt == "crackscf":
        for split in ("train", "val", "test"):
            for i in range(n):
                _write_pair(root / f"{split}_img" / f"{split}{i}.jpg", root / f"{split}_lab" / f"{split}{i}.png", rng)
    elif fmt == "deepcrack":
        for split in ("train", "test"):
            for i in range(n):
                stem = f"{split}{i:03d}"
                _write_pair(root / f"{split}_img" / f"{stem}.jpg", root / f"{split}_lab" / f"{stem}.png", rng)
    elif fmt == "crack500":
        for split in ("train", "val", "test"):
            for i in range(n):
                d = root / f"{split}crop"
                _write_pair(d / f"2016{i}_{split}.jpg", d / f"2016{i}_{split}_mask.png", rng)
    elif fmt == "cracktree260":
        for i in range(n):
            _write_pair(root / "image" / f"6{i:03d}.jpg", root / "gt" / f"6{i:03d}.bmp", rng)
    elif fmt == "cfd":
        for i in range(n):
            img, mask = _sample(rng)
            (root / "image").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / "image" / f"{i + 1:03d}.jpg")
            _cfd_mat(root / "groundTruth" / f"{i + 1:03d}.mat", mask)
    return root


@pytest.mark.parametrize("fmt", ["crackscf", "deepcrack", "crack500", "cracktree260", "cfd"])
def test_every_layout_reads_its_fixture(tmp_path, fmt):
    root = make_fixture(fmt, tmp_path / fmt, n=10)
    sizes = {}
    for split in ("train", "val", "test"):
        ds = D.load_split(fmt, root, split, size=16, val_fraction=0.2, test_fraction=0.3)
        sizes[split] = len(ds)
        x, y = ds[0]
        assert x.shape == (3, 16, 16) and y.shape == (1, 16, 16)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert set(np.unique(y.numpy())) == {0.0, 1.0}
        # the horizontal crack line of the fixture survives the resize
        assert y[0].sum(1).max() >= 8
    names = [set(D.load_split(fmt, root, s, 16, val_fraction=0.2, test_fraction=0.3).names)
             for s in ("train", "val", "test")]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    if fmt in ("cracktree260", "cfd"):
        assert sizes == {"train": 5, "val": 2, "test": 3}
    elif fmt == "deepcrack":
        assert sizes == {"train": 8, "val": 2, "test": 10}
    else:
        assert sizes == {"train": 10, "val": 10, "test": 10}


def test_cfd_crack_label_is_segmentation_two(tmp_path):
    mask = np.zeros((20, 24), np.uint8)
    mask[3:5, 2:9] = 1
    _cfd_mat(tmp_path / "001.mat", mask)
    levels = D.read_mask_levels(tmp_path / "001.mat")
    crack, binary = D.binarise(levels, "cfd", "x")
    assert binary and np.array_equal(crack, mask > 0)


def test_bad_files_are_skipped_with_their_names(tmp_path):
    root = make_fixture("crackscf", tmp_path / "scf", n=3)
    (root / "train_img" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "train_lab" / "broken.png").write_bytes(b"\x89PNG garbage")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "train_img" / "nomask.png")
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(root / "train_img" / "wrongsize.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "train_lab" / "wrongsize.png")
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(root / "train_img" / "grey.png")
    Image.fromarray(np.full((20, 24), 128, np.uint8)).save(root / "train_lab" / "grey.png")
    with pytest.warns(UserWarning) as caught:
        ds = D.load_split("crackscf", root, "train", 16)
    text = " ".join(str(w.message) for w in caught)
    assert "skipped 3 of 7 images" in text
    assert "broken.jpg: unreadable image" in text and "nomask.png: no mask" in text
    assert "wrongsize.png: mask wrongsize.png is 10x10, image is 24x20" in text
    assert "1 masks are not binary (e.g. grey.png); binarised at > 127" in text
    assert len(ds) == 4 and "grey" in ds.names


def test_grayscale_rgba_and_16bit_images_are_converted(tmp_path):
    Image.fromarray(np.full((6, 7), 200, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.zeros((6, 7, 4), np.uint8) + 90).save(tmp_path / "a.png")
    Image.fromarray(np.full((6, 7), 4000, np.uint16)).save(tmp_path / "w.png")
    for name in ("g.png", "a.png", "w.png"):
        rgb = D.read_rgb(tmp_path / name)
        assert rgb.shape == (6, 7, 3) and rgb.dtype == np.uint8
    assert D.read_rgb(tmp_path / "w.png").max() == 255
    (tmp_path / "bad.png").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="bad.png' is not a readable image"):
        D.read_rgb(tmp_path / "bad.png")


def test_missing_and_empty_folders_name_the_layout(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        D.load_split("crackscf", tmp_path / "nope", "train", 16)
    (tmp_path / "e" / "image").mkdir(parents=True)
    with pytest.raises(DataError, match=r"(?s)holds no images.*Expected layout:.*image/\*\.jpg"):
        D.load_split("cfd", tmp_path / "e", "train", 16)
    root = tmp_path / "only_masks_missing"
    make_fixture("cracktree260", root, n=3)
    for p in (root / "gt").iterdir():
        p.unlink()
    with pytest.warns(UserWarning, match="no mask"), pytest.raises(DataError, match="no usable image/mask pairs"):
        D.load_split("cracktree260", root, "train", 16, val_fraction=0.1, test_fraction=0.1)
