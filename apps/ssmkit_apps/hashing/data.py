"""Image-text pairs for cross-modal hashing: the embedded digit scenes or a ``.mat`` benchmark,
split into train / validation / test parts, as one map-style dataset per split.

Every split's dataset yields dicts ``{"image": [3, H, W] float, "tokens": [L] int64, "label":
[C] float, "role": int, "index": int}``. ``role`` says what an item is for in retrieval: 0 a
training pair, 1 a query, 2 a database item. The validation and test datasets hold their
queries first, then their database; evaluation encodes every item in both modalities and ranks
the database for each query (image->text: query images against database texts; text->image:
query texts against database images).

Parts (see scenes.py and mat.py for how each source fills them):

- ``train``: training pairs;
- ``val_query`` / ``val_db``: validation queries and their database (checkpoint choice);
- ``test_query`` / ``test_db``: the reported evaluation. With ``data.protocol=standard`` the
  training pairs join the test database (the papers' protocol); by default they do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ssmkit.errors import DataError
from ssmkit_apps.hashing import mat, scenes
from ssmkit_apps.hashing.text import CaptionTokenizer

# CLIP's normalisation, so a CLIP-like image checkpoint sees the statistics it was trained on.
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
ROLES = {"train": 0, "query": 1, "db": 2}
PARTS = ("train", "val_query", "val_db", "test_query", "test_db")


@dataclass
class Part:
    """Items of one part: images in memory (uint8 [N, H, W, 3]) or as files under ``image_root``."""

    captions: list[list[str]]
    labels: np.ndarray
    images: np.ndarray | None = None
    paths: list[str] | None = None
    image_root: Path | None = None

    def __len__(self) -> int:
        return len(self.captions)

    def concat(self, other: Part) -> Part:
        if (self.images is None) != (other.images is None):
            raise ValueError("cannot join in-memory and on-disk parts")
        images = None if self.images is None else np.concatenate([self.images, other.images])
        paths = None if self.paths is None else [*self.paths, *other.paths]
        return Part([*self.captions, *other.captions], np.concatenate([self.labels, other.labels]), images, paths,
                    self.image_root)


def digit_parts(n_train: int, n_val: int, n_val_db: int, n_query: int, n_db: int, seed: int = 0,
                canvas: int = 48, noise: float = 0.06, protocol: str = "disjoint") -> dict[str, Part]:
    """The embedded scenes: each split composes its scenes from its own pool of source digits."""

    def part(split: str, n: int, role: str) -> Part:
        s = scenes.make_split_scenes(split, n, seed, canvas, noise, role)
        return Part([[c] for c in s.captions], s.labels, images=s.images)

    parts = {"train": part("train", n_train, "scenes"), "val_query": part("val", n_val, "query"),
             "val_db": part("val", n_val_db, "database"), "test_query": part("test", n_query, "query"),
             "test_db": part("test", n_db, "database")}
    if protocol == "standard":
        parts["test_db"] = parts["test_db"].concat(parts["train"])
    return parts


def mat_parts(corpus: mat.MatCorpus, seed: int, n_query: int, n_train: int, n_val: int, n_val_db: int,
              protocol: str = "disjoint") -> dict[str, Part]:
    idx = mat.split_indices(len(corpus), seed, n_query, n_train, n_val, n_val_db, protocol)
    out = {}
    for name in PARTS:
        sub = corpus.subset(idx[name])
        out[name] = Part(sub.captions, sub.labels, paths=sub.paths, image_root=corpus.image_root)
    return out


def train_tokenizer(train: Part, vocab_size: int, min_frequency: int, max_len: int) -> CaptionTokenizer:
    texts = [c for caps in train.captions for c in caps]
    if not texts:
        raise DataError("the training split has no captions to build a vocabulary from")
    return CaptionTokenizer.train(texts, vocab_size=vocab_size, min_frequency=min_frequency, max_len=max_len)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] or [H, W, 3] -> normalised float32 [N, 3, H, W] or [3, H, W]."""
    x = (np.asarray(images, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, -3)))


class PairDataset(Dataset):
    """Image-caption pairs of one split (see the module docstring for the items)."""

    def __init__(self, parts: list[tuple[Part, int]], tokenizer: CaptionTokenizer, image_size: int,
                 train: bool = False, hflip: bool = False, composer: scenes.SceneComposer | None = None):
        self.parts, self.image_size, self.train, self.hflip = parts, image_size, train, hflip
        # Embedded training scenes: a composer recomposes every item each time it is drawn (new
        # layouts of the same training digits), so a from-scratch CNN cannot memorise backgrounds.
        self.composer, self.tokenizer = composer, tokenizer
        self.offsets = np.cumsum([0] + [len(p) for p, _ in parts])
        self.roles = np.concatenate([np.full(len(p), r, dtype=np.int64) for p, r in parts]) if parts else np.zeros(0)
        self.labels = np.concatenate([p.labels for p, _ in parts]).astype(np.float32)
        # Pre-tokenise every caption once; items with several captions keep all of them.
        self.tokens: list[np.ndarray] = []
        for p, _ in parts:
            flat = [c for caps in p.captions for c in caps]
            ids, _unk = tokenizer.encode(flat) if flat else (np.zeros((0, tokenizer.max_len), np.int64), None)
            at = 0
            for caps in p.captions:
                self.tokens.append(ids[at:at + max(1, len(caps))] if caps else tokenizer.encode([""])[0])
                at += len(caps)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, i: int) -> tuple[Part, int]:
        j = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[j][0], i - int(self.offsets[j])

    def image(self, i: int) -> np.ndarray:
        part, k = self._locate(i)
        if part.images is not None:
            img = part.images[k]
            if img.shape[0] != self.image_size or img.shape[1] != self.image_size:
                from PIL import Image

                img = np.asarray(Image.fromarray(img).resize((self.image_size, self.image_size), Image.BICUBIC))
            return img
        return mat.read_image(mat.inside_root(part.image_root, part.paths[k]), self.image_size)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        if self.composer is not None:
            # The scene's seed comes from torch's RNG, which the engine checkpoints: resumes replay it.
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
            img, labels, caption, _ = self.composer.one(rng)
            return {"image": to_tensor(img), "tokens": torch.from_numpy(self.tokenizer.encode([caption])[0][0]),
                    "label": torch.from_numpy(labels.astype(np.float32)), "role": int(self.roles[i]), "index": i}
        img = self.image(i)
        caps = self.tokens[i]
        c = 0
        if self.train:
            if len(caps) > 1:  # several captions: a different one each time (torch's RNG: resumable)
                c = int(torch.randint(len(caps), (1,)))
            if self.hflip and bool(torch.rand(()) < 0.5):
                img = img[:, ::-1]
        return {"image": to_tensor(img), "tokens": torch.from_numpy(caps[c]), "label": torch.from_numpy(self.labels[i]),
                "role": int(self.roles[i]), "index": i}


def split_dataset(parts: dict[str, Part], split: str, tokenizer: CaptionTokenizer, image_size: int,
                  hflip: bool = False, composer: scenes.SceneComposer | None = None) -> PairDataset:
    """The dataset of ``split``; ``composer`` (embedded data) recomposes the training scenes."""
    if split == "train":
        return PairDataset([(parts["train"], ROLES["train"])], tokenizer, image_size, train=True, hflip=hflip,
                           composer=composer)
    if split in ("val", "test"):
        return PairDataset([(parts[f"{split}_query"], ROLES["query"]), (parts[f"{split}_db"], ROLES["db"])],
                           tokenizer, image_size)
    raise DataError(f"unknown split {split!r}; expected train, val or test")


__all__ = ["MEAN", "PARTS", "ROLES", "STD", "PairDataset", "Part", "digit_parts", "mat_parts", "split_dataset",
           "to_tensor", "train_tokenizer"]
