"""The search index file (``.ssmh``): packed binary codes plus JSON metadata, never pickled.

Layout: an uncompressed NumPy ``.npz`` archive (a zip of ``.npy`` files) holding exactly

- ``codes``: uint64 [N, W], the packed codes of the N indexed images (see hamming.py);
- ``meta``: uint8 [M], UTF-8 JSON with ``format`` ("ssmkit-hashing-index"), ``version``,
  ``bits``, ``n``, ``modality``, ``model`` (name, code lengths, SHA-256 of the weights, run
  folder), ``image_root`` and ``paths`` (each item's path relative to the root).

It is read with ``numpy.load(allow_pickle=False)``: an archive carrying Python objects is
refused, never executed. It is written to a temporary name and renamed into place, so a crash
never leaves a truncated index under the final name.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssmkit.engine.files import atomic_path
from ssmkit.errors import DataError
from ssmkit_apps.hashing.hamming import n_words

INDEX_FORMAT = "ssmkit-hashing-index"
INDEX_VERSION = 1


@dataclass
class HashIndex:
    """Packed codes [N, W] and what produced them."""

    codes: np.ndarray
    bits: int
    paths: list[str]
    image_root: str = ""
    modality: str = "image"
    model: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = np.asarray(self.codes)
        if c.dtype != np.uint64 or c.ndim != 2 or c.shape[1] != n_words(self.bits):
            raise ValueError(f"codes must be uint64 [N, {n_words(self.bits)}] for {self.bits} bits; "
                             f"got {c.dtype} {c.shape}")
        if len(self.paths) != c.shape[0]:
            raise ValueError(f"{c.shape[0]} codes but {len(self.paths)} paths")

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def meta(self) -> dict[str, Any]:
        return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "bits": self.bits, "n": len(self),
                "words": int(self.codes.shape[1]), "modality": self.modality, "model": self.model,
                "image_root": self.image_root, "paths": list(self.paths), **self.extra}


def save_index(index: HashIndex, path: str | Path) -> Path:
    """Write ``index`` to ``path`` atomically (the name is kept as given, e.g. ``index.ssmh``)."""
    p = Path(path)
    meta = np.frombuffer(json.dumps(index.meta(), ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    with atomic_path(p) as tmp, open(tmp, "wb") as f:
        # A file object keeps numpy from appending ".npz" to the name.
        np.savez(f, codes=np.ascontiguousarray(index.codes), meta=meta)
    return p


def load_index(path: str | Path) -> HashIndex:
    """Read an index written by :func:`save_index`; a damaged, foreign or newer file raises
    DataError naming it and what was expected."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"index file {str(p)!r} does not exist; build one with `ssmkit hashing index IMAGES_DIR "
                        "--run RUN --out index.ssmh`")
    try:
        with np.load(p, allow_pickle=False) as z:
            names = set(z.files)
            if names != {"codes", "meta"}:
                raise DataError(f"{str(p)!r} is not a ssmkit hashing index: it holds arrays {sorted(names)}, "
                                "expected exactly 'codes' and 'meta'")
            codes, raw = z["codes"], z["meta"]
    except DataError:
        raise
    except ValueError as err:  # object arrays need pickle, which is refused
        raise DataError(f"{str(p)!r} holds arrays that need unpickling to read; refused ({err})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{str(p)!r} is not a readable index (truncated or not an .npz archive: {err})") from None
    try:
        meta = json.loads(raw.astype(np.uint8).tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{str(p)!r}: its metadata is not valid UTF-8 JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(f"{str(p)!r} is not a ssmkit hashing index (format {fmt!r}, expected {INDEX_FORMAT!r})")
    version = meta.get("version")
    if version != INDEX_VERSION:
        raise DataError(f"{str(p)!r} is index format version {version!r}; this ssmkit reads version {INDEX_VERSION}. "
                        "Rebuild it with `ssmkit hashing index`")
    bits = meta.get("bits")
    if not isinstance(bits, int) or bits < 1:
        raise DataError(f"{str(p)!r}: metadata 'bits' must be a positive integer; got {bits!r}")
    paths = meta.get("paths")
    if codes.dtype != np.uint64 or codes.ndim != 2 or codes.shape[1] != n_words(bits) \
            or not isinstance(paths, list) or len(paths) != codes.shape[0] or meta.get("n") != codes.shape[0]:
        raise DataError(f"{str(p)!r} is inconsistent: codes {codes.dtype} {codes.shape}, {bits} bits, "
                        f"n={meta.get('n')!r}, {len(paths) if isinstance(paths, list) else 'no'} paths")
    known = {"format", "version", "bits", "n", "words", "modality", "model", "image_root", "paths"}
    return HashIndex(codes=codes, bits=bits, paths=[str(s) for s in paths], image_root=str(meta.get("image_root", "")),
                     modality=str(meta.get("modality", "image")), model=dict(meta.get("model") or {}),
                     extra={k: v for k, v in meta.items() if k not in known})


__all__ = ["INDEX_FORMAT", "INDEX_VERSION", "HashIndex", "load_index", "save_index"]
