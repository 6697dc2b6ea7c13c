"""Loaders for MIRFlickr-25K, NUS-WIDE and MS-COCO in the ``.mat`` layout cross-modal hashing
code uses, and the seeded query / train / retrieval split.

Layout (one folder per dataset; file names configurable)::

    <root>/
      index.mat     key 'index' (or 'imgs'): N image paths, relative to the image root
      caption.mat   key 'caption' (or 'tags', 'YAll'): N captions (a string, or a cell of
                    strings per item: several sentences, one picked at random each epoch);
                    a numeric [N, V] bag-of-tags matrix also works (item i's text becomes
                    the tag words "t<j>" for its non-zero columns j)
      label.mat     key 'category' (or 'LAll', 'labels', 'label'): [N, C] multi-hot 0/1
      <images>/     the image root (data.image_root, default <root>/images)

Paths must stay inside the image root: an absolute path or one with a ``..`` part is refused
(``data.basename_only=true`` keeps only each path's file name, for index files written with the
author's absolute paths). Items with an empty caption or no label are dropped and reported (the
MIRFlickr convention); listed images that do not exist, or whose file is not an image PIL can
open, are skipped and reported.

Split (:func:`split_indices`, fixed by the seed): a permutation of the N items; the first
``n_query`` are the test queries; the next ``n_train`` train the model; the next ``n_val``
are validation queries and the next ``n_val_db`` their database. The test retrieval set is

- ``protocol="disjoint"`` (default): everything else, so no training item is ever retrieved
  and a test query meets only items the model never saw;
- ``protocol="standard"``: every non-query item, the training items included (what the
  papers' code does; retrieving memorised training items inflates mAP).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from ssmkit.errors import DataError

LAYOUT = """<root>/
  index.mat     'index': N image paths relative to the image root
  caption.mat   'caption' (or 'tags'/'YAll'): N captions, or a cell of captions per item
  label.mat     'category' (or 'LAll'/'labels'/'label'): [N, C] multi-hot 0/1
  images/       the image root (data.image_root)"""
INDEX_KEYS = ("index", "imgs", "FAll")
CAPTION_KEYS = ("caption", "tags", "YAll")
LABEL_KEYS = ("category", "LAll", "labels", "label")
# The field's split sizes (query, train) per dataset.
PRESETS = {"mirflickr25k": (2000, 10000), "nuswide": (2100, 10500), "mscoco": (5000, 10000)}


@dataclass
class MatCorpus:
    """Image paths (relative to ``image_root``), captions (one or more per item), labels [N, C]."""

    paths: list[str]
    captions: list[list[str]]
    labels: np.ndarray
    image_root: Path
    source: str

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: np.ndarray) -> MatCorpus:
        idx = np.asarray(idx, dtype=np.int64)
        return MatCorpus([self.paths[i] for i in idx], [self.captions[i] for i in idx], self.labels[idx],
                         self.image_root, self.source)


def _loadmat(path: Path, keys: tuple[str, ...], what: str) -> np.ndarray:
    import scipy.io

    if not path.is_file():
        raise DataError(f"{what} file {str(path)!r} does not exist. Expected layout:\n{LAYOUT}")
    try:
        content = scipy.io.loadmat(str(path))
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        raise DataError(f"{str(path)!r} is a MATLAB v7.3 (HDF5) file; re-save it with `save(..., '-v7')`") from None
    except (ValueError, OSError, TypeError) as err:
        raise DataError(f"{str(path)!r} is not a readable .mat file ({err})") from None
    for k in keys:
        if k in content:
            return content[k]
    found = sorted(k for k in content if not k.startswith("__"))
    raise DataError(f"{str(path)!r} holds no {what} variable: expected one of {list(keys)}, found {found}")


def _strings(x: object) -> list[str]:
    """Every string inside a loadmat value (char array, cell array, nested), in order."""
    if isinstance(x, str):
        return [x]
    arr = np.asarray(x)
    if arr.dtype.kind == "U":
        return [str(s) for s in arr.ravel()]
    if arr.dtype.kind == "O":
        out: list[str] = []
        for item in arr.ravel():
            out.extend(_strings(item))
        return out
    if arr.size == 0:
        return []
    raise TypeError(f"expected text, got a {arr.dtype} array")


def _items(x: np.ndarray) -> list[np.ndarray]:
    """One entry per item: the rows of a char matrix / cell column, whichever way it is stored."""
    arr = np.asarray(x)
    if arr.dtype.kind == "U":
        return list(arr.ravel())
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    return list(arr)


def safe_relative(path: str, basename_only: bool = False) -> str:
    """``path`` as a relative POSIX path inside the image root; absolute paths and ``..`` raise."""
    raw = path.strip().replace("\\", "/")
    if basename_only:
        name = PurePosixPath(raw).name
        if not name or name in (".", ".."):
            raise ValueError(f"image path {path!r} has no file name")
        return name
    p = PurePosixPath(raw)
    if not raw or p.is_absolute() or PureWindowsPath(path.strip()).drive or raw.startswith("~"):
        raise ValueError(f"image path {path!r} is absolute; index.mat paths must be relative to the image root "
                         "(or set data.basename_only=true)")
    if any(part == ".." for part in p.parts):
        raise ValueError(f"image path {path!r} leaves the image root ('..'); refused")
    return str(p)


def inside_root(root: Path, rel: str) -> Path:
    """``root / rel`` resolved, refused (ValueError) when a symlink takes it outside ``root``."""
    full = (root / rel).resolve()
    base = root.resolve()
    if full != base and base not in full.parents:
        raise ValueError(f"image path {rel!r} resolves to {str(full)!r}, outside the image root {str(base)!r}")
    return full


def read_corpus(root: str | Path, image_root: str | Path | None = None, index_file: str = "index.mat",
                caption_file: str = "caption.mat", label_file: str = "label.mat", basename_only: bool = False,
                check_images: bool = True) -> MatCorpus:
    """Read a dataset in the ``.mat`` layout above; returns the cleaned corpus."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"dataset folder {str(base)!r} does not exist. Expected layout:\n{LAYOUT}")
    img_root = Path(image_root).expanduser() if image_root else base / "images"
    if not img_root.is_dir():
        raise DataError(f"image root {str(img_root)!r} does not exist (set data.image_root). "
                        f"Expected layout:\n{LAYOUT}")
    index_path, caption_path, label_path = base / index_file, base / caption_file, base / label_file
    raw_index = _loadmat(index_path, INDEX_KEYS, "image path")
    raw_caps = _loadmat(caption_path, CAPTION_KEYS, "caption")
    raw_labels = _loadmat(label_path, LABEL_KEYS, "label")

    if np.asarray(raw_index).dtype.kind not in "UO":
        raise DataError(f"{str(index_path)!r}: expected image paths (strings), got a numeric "
                        f"{np.asarray(raw_index).shape} array (pixel data is not supported; give paths and a root)")
    try:
        paths = [(_strings(item) or [""])[0] for item in _items(raw_index)]
    except TypeError as err:
        raise DataError(f"{str(index_path)!r}: {err}") from None

    caps_arr = np.asarray(raw_caps)
    if caps_arr.dtype.kind in "biuf":  # a bag-of-tags matrix [N, V]
        if caps_arr.ndim != 2:
            raise DataError(f"{str(caption_path)!r}: a numeric caption variable must be [N, V]; got {caps_arr.shape}")
        captions = [[" ".join(f"t{j}" for j in np.flatnonzero(row))] for row in caps_arr]
    else:
        try:
            captions = [[s.strip() for s in _strings(item)] for item in _items(raw_caps)]
        except TypeError as err:
            raise DataError(f"{str(caption_path)!r}: {err}") from None

    labels = np.asarray(raw_labels)
    if labels.dtype.kind not in "biuf" or labels.ndim != 2:
        raise DataError(f"{str(label_path)!r}: labels must be a numeric [N, C] matrix; "
                        f"got {labels.dtype} {labels.shape}")
    if labels.shape[0] != len(paths) and labels.shape[1] == len(paths):
        labels = labels.T  # stored [C, N]
    if not np.isin(labels, (0, 1)).all():
        bad = np.unique(labels[~np.isin(labels, (0, 1))])[:5]
        raise DataError(f"{str(label_path)!r}: labels must be multi-hot 0/1; found values {bad.tolist()}")
    n = len(paths)
    if len(captions) != n or labels.shape[0] != n:
        raise DataError(f"item counts differ: {index_path.name} lists {n} images, {caption_path.name} {len(captions)} "
                        f"captions, {label_path.name} {labels.shape[0]} label rows")

    rel: list[str] = []
    for i, p in enumerate(paths):
        try:
            r = safe_relative(p, basename_only)
            inside_root(img_root, r)
        except ValueError as err:
            raise DataError(f"{str(index_path)!r} item {i}: {err}") from None
        rel.append(r)

    keep = np.ones(n, dtype=bool)
    empty = [i for i, c in enumerate(captions) if not any(s for s in c)]
    unlabelled = np.flatnonzero(labels.sum(1) == 0).tolist()
    keep[empty] = False
    keep[unlabelled] = False
    missing: list[str] = []
    unreadable: list[str] = []
    if check_images:
        for i in np.flatnonzero(keep):
            f = img_root / rel[i]
            if not f.is_file():
                missing.append(rel[i])
                keep[i] = False
            elif not image_opens(f):
                unreadable.append(rel[i])
                keep[i] = False
    notes = []
    if empty:
        notes.append(f"{len(empty)} with an empty caption (items {empty[:5]})")
    if unlabelled:
        notes.append(f"{len(unlabelled)} without any label (items {unlabelled[:5]})")
    if missing:
        notes.append(f"{len(missing)} whose image is missing under {str(img_root)!r} (e.g. {missing[:3]})")
    if unreadable:
        notes.append(f"{len(unreadable)} whose image file cannot be read as an image (e.g. {unreadable[:3]})")
    if notes:
        warnings.warn(f"{base.name}: dropped " + "; ".join(notes) + f"; {int(keep.sum())} of {n} items kept",
                      stacklevel=2)
    if not keep.any():
        raise DataError(f"{str(base)!r}: no usable item (every item lacks a caption, a label or a readable image). "
                        f"Expected layout:\n{LAYOUT}")
    idx = np.flatnonzero(keep)
    return MatCorpus([rel[i] for i in idx], [[s for s in captions[i] if s] for i in idx],
                     labels[idx].astype(np.uint8), img_root, str(base))


def split_indices(n: int, seed: int, n_query: int, n_train: int, n_val: int, n_val_db: int,
                  protocol: str = "disjoint") -> dict[str, np.ndarray]:
    """Index arrays for train, val_query, val_db, test_query and test_db (see the module doc)."""
    if protocol not in ("disjoint", "standard"):
        raise ValueError(f"protocol must be 'disjoint' or 'standard'; got {protocol!r}")
    need = n_query + n_train + n_val + n_val_db
    if min(n_query, n_train, n_val, n_val_db) < 1 or need >= n:
        raise DataError(f"the split needs n_query + n_train + n_val + n_val_db = {need} items plus a retrieval set, "
                        f"but the dataset has {n} usable items; lower data.n_query / n_train / n_val / n_val_db")
    perm = np.random.default_rng([seed, 31337]).permutation(n)
    a, b, c, d = n_query, n_query + n_train, n_query + n_train + n_val, need
    out = {"test_query": perm[:a], "train": perm[a:b], "val_query": perm[b:c], "val_db": perm[c:d]}
    out["test_db"] = perm[d:] if protocol == "disjoint" else perm[a:]
    return {k: np.sort(v) for k, v in out.items()}


def image_opens(path: str | Path) -> bool:
    """Whether PIL recognises ``path`` as an image (its header only: cheap enough to check every
    listed file before training; a file damaged further in still fails when it is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size[0] > 0 and im.size[1] > 0
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return False


def read_image(path: str | Path, size: int) -> np.ndarray:
    """An image file as RGB uint8 [size, size, 3] (resized, aspect ratio not kept: the field's
    practice); unreadable files raise DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"image {os.fspath(path)!r} cannot be read ({type(err).__name__}: {err})") from None


__all__ = ["LAYOUT", "PRESETS", "MatCorpus", "image_opens", "inside_root", "read_corpus", "read_image", "safe_relative",
           "split_indices"]
