"""Crack datasets: the embedded generator (synth.py) and the public datasets' on-disk layouts.

Items are ``(image [3, S, S] float32 in [0, 1], mask [1, S, S] float32 in {0, 1})``. Real
images are resized to S x S (bilinear), as SCSegamba's loaders do; masks are binarised at their
native size by the dataset's own rule and then resized with nearest neighbour, so a thin crack
never turns grey. Layouts (``data.format``; see data/crack.md for sources and licences):

- ``crackscf`` (SCSegamba's CrackSCF and TUT): ``{train,val,test}_img/*`` with same-stem masks in
  ``{train,val,test}_lab/*.png``; masks > 127 are crack.
- ``deepcrack``: ``train_img/``, ``train_lab/``, ``test_img/``, ``test_lab/`` (no validation
  split: ``data.val_fraction`` of train, chosen by a fixed seed); masks > 127 are crack.
- ``crack500``: ``{traincrop,valcrop,testcrop}/<name>.jpg`` beside ``<name>_mask.png``; > 127.
- ``cracktree260``: ``image/*.jpg`` and ``gt/*.bmp`` (one pool, split by fixed seed); > 127
  (1-bit BMPs read as 0/255).
- ``cfd`` (CrackForest): ``image/*.jpg`` and ``groundTruth/*.mat`` whose ``groundTruth``
  struct holds ``Segmentation`` (1 background, 2 crack); read with scipy.io, no pickle.

A mask already in {0, 1} is taken as is. Bad files are skipped with one warning that names
them: an unreadable image or mask, an image without a mask, a mask whose size differs from its
image. Masks with other values than two levels are binarised with a warning.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ssmkit.engine.app import DataError
from ssmkit_apps.crack import synth

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FORMATS = ("embedded", "crackscf", "deepcrack", "crack500", "cracktree260", "cfd")
LAYOUTS = {
    "crackscf": "<root>/\n  train_img/*.jpg|png   train_lab/<same stem>.png\n  val_img/  val_lab/\n"
                "  test_img/ test_lab/",
    "deepcrack": "<root>/\n  train_img/*.jpg   train_lab/<same stem>.png\n  test_img/*.jpg    test_lab/<same stem>.png",
    "crack500": "<root>/\n  traincrop/<name>.jpg + <name>_mask.png\n  valcrop/   testcrop/  (same pattern)",
    "cracktree260": "<root>/\n  image/*.jpg\n  gt/<same stem>.bmp",
    "cfd": "<root>/\n  image/*.jpg\n  groundTruth/<same stem>.mat   (struct groundTruth.Segmentation: 1 bg, 2 crack)",
}


# ----------------------------------------------------------------------------------- reading


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 [H, W, 3]: grayscale, palette, 16-bit and RGBA inputs are
    converted (alpha dropped). Raises DataError naming the file when it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit grayscale: rescale to 8 bits
                a = np.asarray(im, dtype=np.float64)
                a = a / max(float(a.max()), 1.0) * 255.0
                rgb = np.repeat(a.round().astype(np.uint8)[..., None], 3, -1)
            else:
                rgb = np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{str(p)!r} is not a readable image ({type(err).__name__}: {err}); expected an RGB, "
                        "grayscale or RGBA picture (png, jpg, bmp, tif)") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise DataError(f"{str(p)!r}: decoded to shape {rgb.shape}; expected an image [H, W, 3]")
    return np.ascontiguousarray(rgb)


def read_mask_levels(path: str | Path) -> np.ndarray:
    """The raw label map of a mask file as a 2-D array (PNG/BMP/JPEG as 8-bit gray; CFD .mat as
    its Segmentation map)."""
    p = Path(path)
    if p.suffix.lower() == ".mat":
        return _read_cfd_mat(p)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            im.load()
            if im.mode.startswith("I") or im.mode == "F":
                return np.asarray(im, dtype=np.float64)
            return np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"mask {str(p)!r} is not a readable image ({type(err).__name__}: {err})") from None


def _read_cfd_mat(p: Path) -> np.ndarray:
    import scipy.io

    try:
        m = scipy.io.loadmat(str(p), squeeze_me=True, struct_as_record=False)
    except (ValueError, OSError, TypeError, NotImplementedError) as err:
        raise DataError(f"mask {str(p)!r} is not a readable MATLAB file ({err}); expected CFD's groundTruth "
                        "struct with a Segmentation field") from None
    gt = m.get("groundTruth")
    if isinstance(gt, np.ndarray) and gt.dtype == object and gt.size:
        gt = gt.flat[0]
    seg = getattr(gt, "Segmentation", None)
    if seg is None:
        raise DataError(f"mask {str(p)!r} has no groundTruth.Segmentation; keys: "
                        f"{sorted(k for k in m if not k.startswith('__'))}")
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise DataError(f"mask {str(p)!r}: groundTruth.Segmentation has shape {seg.shape}; expected [H, W]")
    return seg


def binarise(levels: np.ndarray, rule: str, source: str) -> tuple[np.ndarray, bool]:
    """(crack mask bool [H, W], was_binary) by the dataset's ``rule``: "gt127" (8-bit masks:
    > 127; a {0, 1} mask is taken as is) or "cfd" (Segmentation == 2, i.e. > 1)."""
    values = np.unique(levels)
    if rule == "cfd":
        return levels > 1, bool(set(values.tolist()) <= {0, 1, 2})
    if rule != "gt127":
        raise ValueError(f"unknown binarisation rule {rule!r} for {source}")
    if values.size and values.max() <= 1:
        return levels > 0, True
    return levels > 127, bool(set(values.tolist()) <= {0, 255})


# ---------------------------------------------------------------------------------- datasets


def _augment(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and 90-degree turns from torch's global RNG (checkpointed by the engine)."""
    r = torch.randint(0, 8, (1,)).item()
    if r & 1:
        x, y = x.flip(-1), y.flip(-1)
    if r & 2:
        x, y = x.flip(-2), y.flip(-2)
    if r & 4 and x.shape[-1] == x.shape[-2]:
        x, y = x.transpose(-1, -2), y.transpose(-1, -2)
    return x.contiguous(), y.contiguous()


class ArrayCracks(Dataset):
    """Images uint8 [N, H, W, 3] and masks bool [N, H, W] held in memory (the generator's output)."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, names: Sequence[str] | None = None,
                 augment: bool = False, source: str = "embedded data"):
        if images.ndim != 4 or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
            raise ValueError(f"expected images [N, H, W, 3] and masks [N, H, W]; got {images.shape}, {masks.shape}")
        self.images, self.masks, self.augment, self.source = images, masks.astype(bool), augment, source
        self.names = list(names) if names is not None else [f"{i:05d}" for i in range(len(images))]

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> np.ndarray:
        return self.images[i]

    def mask(self, i: int) -> np.ndarray:
        return self.masks[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float() / 255.0
        y = torch.from_numpy(self.masks[i])[None].float()
        return _augment(x, y) if self.augment else (x, y)


class FileCracks(Dataset):
    """Image/mask file pairs, decoded on access and resized to ``size`` x ``size``."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], rule: str, size: int, augment: bool = False,
                 source: str = ""):
        self.pairs, self.rule, self.size, self.augment, self.source = list(pairs), rule, size, augment, source
        self.names = [p[0].stem for p in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def image(self, i: int) -> np.ndarray:
        from PIL import Image

        img = read_rgb(self.pairs[i][0])
        if img.shape[:2] != (self.size, self.size):
            img = np.array(Image.fromarray(img).resize((self.size, self.size), Image.BILINEAR))
        return img

    def mask(self, i: int) -> np.ndarray:
        from PIL import Image

        m, _ = binarise(read_mask_levels(self.pairs[i][1]), self.rule, str(self.pairs[i][1]))
        if m.shape != (self.size, self.size):
            small = Image.fromarray(m.astype(np.uint8) * 255).resize((self.size, self.size), Image.NEAREST)
            m = np.array(small) > 127
        return m

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(self.image(i)).permute(2, 0, 1).float() / 255.0
        y = torch.from_numpy(self.mask(i))[None].float()
        return _augment(x, y) if self.augment else (x, y)


# ------------------------------------------------------------------------------ file layouts


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _image_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from the file header, or None when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def check_pairs(pairs: Sequence[tuple[Path, Path | None]], rule: str, source: str) -> list[tuple[Path, Path]]:
    """Keep the usable (image, mask) pairs; skip the rest with one warning naming them.

    Skipped: an image without a mask, an image or mask that cannot be read, a mask whose size
    differs from its image. Masks that are not two-level are kept and binarised, with a warning.
    """
    good: list[tuple[Path, Path]] = []
    skipped: list[str] = []
    not_binary: list[str] = []
    for img, msk in pairs:
        if msk is None:
            skipped.append(f"{img.name}: no mask")
            continue
        size = _image_size(img)
        if size is None:
            skipped.append(f"{img.name}: unreadable image")
            continue
        try:
            levels = read_mask_levels(msk)
        except DataError:
            skipped.append(f"{msk.name}: unreadable mask")
            continue
        if levels.shape != size:
            skipped.append(f"{img.name}: mask {msk.name} is {levels.shape[1]}x{levels.shape[0]}, image is "
                           f"{size[1]}x{size[0]}")
            continue
        if not binarise(levels, rule, str(msk))[1]:
            not_binary.append(msk.name)
        good.append((img, msk))
    if skipped:
        shown = "; ".join(skipped[:8]) + (f"; and {len(skipped) - 8} more" if len(skipped) > 8 else "")
        warnings.warn(f"{source}: skipped {len(skipped)} of {len(pairs)} images ({shown})", stacklevel=2)
    if not_binary:
        rule_text = "Segmentation == 2" if rule == "cfd" else "> 127"
        warnings.warn(f"{source}: {len(not_binary)} masks are not binary (e.g. {', '.join(not_binary[:3])}); "
                      f"binarised at {rule_text}", stacklevel=2)
    return good


def _pair_by_stem(img_dir: Path, lab_dir: Path, lab_suffixes: Sequence[str]) -> list[tuple[Path, Path | None]]:
    labs = {}
    if lab_dir.is_dir():
        for p in lab_dir.iterdir():
            if p.is_file() and p.suffix.lower() in lab_suffixes:
                labs.setdefault(p.stem, p)
    return [(img, labs.get(img.stem)) for img in _images_in(img_dir)]


def _need_dir(root: Path, sub: str, fmt: str) -> Path:
    d = root / sub
    if not d.is_dir():
        raise DataError(f"data.format={fmt}: {str(d)!r} does not exist. Expected layout:\n{LAYOUTS[fmt]}")
    if not _images_in(d):
        raise DataError(f"data.format={fmt}: {str(d)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}). "
                        f"Expected layout:\n{LAYOUTS[fmt]}")
    return d


def _split_pool(items: list, split: str, val_fraction: float, test_fraction: float, seed: int) -> list:
    """A fixed-seed train/val/test split of one pool (sorted input, so it is reproducible)."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n = len(items)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    idx = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}[split]
    return [items[i] for i in sorted(idx)]


def file_pairs(fmt: str, root: str | Path, split: str, val_fraction: float = 0.1, test_fraction: float = 0.2,
               seed: int = 0) -> list[tuple[Path, Path | None]]:
    """The (image, mask) pairs of ``split`` in a dataset folder of layout ``fmt`` (unchecked)."""
    if fmt not in LAYOUTS:
        raise DataError(f"unknown data.format {fmt!r}; expected one of {list(FORMATS)}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test; got {split!r}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"data.root {str(base)!r} is not a folder. Expected layout for data.format={fmt}:\n"
                        f"{LAYOUTS[fmt]}")
    if fmt in ("crackscf", "deepcrack"):
        has_val = (base / "val_img").is_dir() and fmt == "crackscf"
        if split == "test" or (split == "val" and has_val) or (split == "train" and has_val):
            img_dir = _need_dir(base, f"{split}_img", fmt)
            return _pair_by_stem(img_dir, base / f"{split}_lab", (".png", ".bmp", ".jpg", ".tif"))
        pool = _pair_by_stem(_need_dir(base, "train_img", fmt), base / "train_lab", (".png", ".bmp", ".jpg", ".tif"))
        return _split_pool(pool, split, val_fraction, 0.0, seed)
    if fmt == "crack500":
        def crop_pairs(d: Path) -> list[tuple[Path, Path | None]]:
            imgs = [p for p in _images_in(d) if not p.stem.endswith("_mask")]
            return [(p, (d / f"{p.stem}_mask.png") if (d / f"{p.stem}_mask.png").is_file() else None) for p in imgs]

        has_val = (base / "valcrop").is_dir()
        if split == "test" or has_val:
            return crop_pairs(_need_dir(base, f"{split}crop", fmt))
        return _split_pool(crop_pairs(_need_dir(base, "traincrop", fmt)), split, val_fraction, 0.0, seed)
    if fmt == "cracktree260":
        pool = _pair_by_stem(_need_dir(base, "image", fmt), base / "gt", (".bmp", ".png"))
    else:  # cfd
        pool = _pair_by_stem(_need_dir(base, "image", fmt), base / "groundTruth", (".mat",))
    return _split_pool(pool, split, val_fraction, test_fraction, seed)


def load_split(fmt: str, root: str | Path, split: str, size: int, augment: bool = False, val_fraction: float = 0.1,
               test_fraction: float = 0.2, seed: int = 0) -> FileCracks:
    """A checked :class:`FileCracks` for ``split`` of the dataset at ``root`` in layout ``fmt``."""
    rule = "cfd" if fmt == "cfd" else "gt127"
    source = f"{fmt} {split} split at {str(root)!r}"
    pairs = check_pairs(file_pairs(fmt, root, split, val_fraction, test_fraction, seed), rule, source)
    if not pairs:
        raise DataError(f"{source}: no usable image/mask pairs. Expected layout:\n{LAYOUTS[fmt]}")
    return FileCracks(pairs, rule, size, augment, source)


# ---------------------------------------------------------------------------- embedded data

_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def read_backgrounds(folder: str | Path) -> list[np.ndarray]:
    """The user's crack-free surface photos (every image in ``folder``), RGB uint8; unreadable
    files are skipped with a warning."""
    d = Path(folder).expanduser()
    if not d.is_dir():
        raise DataError(f"data.backgrounds {str(d)!r} is not a folder; expected a folder of crack-free surface photos")
    photos, bad = [], []
    for p in _images_in(d):
        try:
            photos.append(read_rgb(p))
        except DataError:
            bad.append(p.name)
    if bad:
        warnings.warn(f"data.backgrounds: skipped {len(bad)} unreadable files ({', '.join(bad[:5])})", stacklevel=2)
    if not photos:
        raise DataError(f"data.backgrounds {str(d)!r} holds no readable images ({', '.join(IMAGE_SUFFIXES)})")
    return photos


def embedded_split(split: str, n: int, size: int, seed: int = 0, backgrounds: str = "",
                   augment: bool = False) -> ArrayCracks:
    """``n`` generated images of ``split`` (cached per process: train, val and test are each
    drawn once even when the engine and the darkness baseline both ask for them)."""
    key = (split, n, size, seed, str(backgrounds))
    if key not in _CACHE:
        photos = read_backgrounds(backgrounds) if backgrounds else None
        if len(_CACHE) > 6:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = synth.generate(n, split, seed, size, photos)
    imgs, masks = _CACHE[key]
    return ArrayCracks(imgs, masks, [f"{split}_{i:05d}" for i in range(n)], augment,
                       source=f"embedded {split} split")


__all__ = ["FORMATS", "IMAGE_SUFFIXES", "LAYOUTS", "ArrayCracks", "FileCracks", "binarise", "check_pairs",
           "embedded_split", "file_pairs", "load_split", "read_backgrounds", "read_mask_levels", "read_rgb"]
