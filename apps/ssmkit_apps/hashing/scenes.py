"""The embedded default: multi-label scenes composed from scikit-learn's real handwritten digits.

scikit-learn ships 1,797 scanned 8x8 digits (``load_digits``, 16 grey levels). A scene places 1 to
4 of them, each rescaled to 11-22 px, slightly rotated and tinted, on a ``canvas`` x ``canvas``
RGB background with a colour gradient, Gaussian noise and stroke-like clutter. Its caption names
the digits through varied templates ("a three next to two sevens", "digits: 1, 4", "handwritten
7, 7 and 3"); a small fraction of captions omit one digit, as real tags and sentences do. Its
labels are multi-hot over the 10 digit classes (presence, not counts). Digit classes are drawn
with a mild, seed-fixed imbalance.

Source images are split into disjoint train / validation / test pools first (stratified by
class), and each split's scenes use only its own pool: no test scene reuses a digit image seen
in training. Everything is a pure function of the seed.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

N_CLASSES = 10
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PLURALS = ("zeros", "ones", "twos", "threes", "fours", "fives", "sixes", "sevens", "eights", "nines")
COUNT_WORDS = ("", "a", "two", "three", "four")
POOLS = ("train", "val", "test")
# Fractions of every class's source images that go to the train / val / test pools.
POOL_FRACTIONS = (0.6, 0.15, 0.25)
# Scene sizes 1..4 digits; multi-digit scenes dominate, as multi-label benchmarks do.
N_DIGITS_P = (0.3, 0.3, 0.25, 0.15)
# Seed offsets: each pool and role (train scenes, query, database) draws from its own stream.
STREAM = {"train": 11, "val": 23, "test": 37}


@dataclass
class Scenes:
    """Composed scenes: images [N, H, W, 3] uint8, labels [N, 10] uint8 (multi-hot), captions [N],
    and the source digit images each scene used, digit_ids [N, 4] (-1 where unused)."""

    images: np.ndarray
    labels: np.ndarray
    captions: list[str]
    digit_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, idx: np.ndarray) -> Scenes:
        idx = np.asarray(idx, dtype=np.int64)
        return Scenes(self.images[idx], self.labels[idx], [self.captions[i] for i in idx], self.digit_ids[idx])


@functools.lru_cache(maxsize=1)
def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images [1797, 8, 8] float32 in [0, 1] and classes [1797] int64.

    Read straight from the CSV inside the scikit-learn wheel (what ``load_digits`` reads), which
    spares importing scikit-learn's dataset machinery on every run.
    """
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)
    raw = np.loadtxt(csv, delimiter=",", dtype=np.float32)
    images, classes = raw[:, :64].reshape(-1, 8, 8) / 16.0, raw[:, 64].astype(np.int64)
    images.setflags(write=False)
    classes.setflags(write=False)
    return images, classes


def digit_pools(classes: np.ndarray, seed: int = 0,
                fractions: tuple[float, float, float] = POOL_FRACTIONS) -> dict[str, np.ndarray]:
    """Disjoint train / val / test pools of source-image indices, stratified by class."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three positive numbers summing to 1; got {fractions}")
    rng = np.random.default_rng([seed, 7919])
    pools: dict[str, list[np.ndarray]] = {p: [] for p in POOLS}
    for c in range(N_CLASSES):
        idx = rng.permutation(np.flatnonzero(classes == c))
        a = int(round(fractions[0] * len(idx)))
        b = a + int(round(fractions[1] * len(idx)))
        for name, part in zip(POOLS, (idx[:a], idx[a:b], idx[b:])):
            pools[name].append(part)
    return {p: np.sort(np.concatenate(v)) for p, v in pools.items()}


def _class_weights(seed: int) -> np.ndarray:
    # A mild imbalance (the most frequent class about 2.4x the rarest), fixed by the seed.
    rng = np.random.default_rng([seed, 104729])
    w = 1.0 / (1.0 + 0.15 * rng.permutation(N_CLASSES))
    return w / w.sum()


@functools.lru_cache(maxsize=64)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (size - 1) / 2.0
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    return u - c, v - c


def _glyph(padded: np.ndarray, size: int, angle: float) -> np.ndarray:
    """A digit (given zero-padded, [10, 10]) rescaled to [size, size] and rotated by ``angle``
    degrees, bilinear: one vectorised inverse mapping instead of an image library round trip."""
    u, v = _pixel_grid(size)
    a = np.deg2rad(angle)
    scale = 8.0 / size
    # +4.5: the source centre (3.5) shifted by the one-pixel zero border.
    xs = (np.cos(a) * u + np.sin(a) * v) * scale + 4.5
    ys = (-np.sin(a) * u + np.cos(a) * v) * scale + 4.5
    np.clip(xs, 0.0, 8.999, out=xs)
    np.clip(ys, 0.0, 8.999, out=ys)
    x0, y0 = xs.astype(np.int64), ys.astype(np.int64)
    fx, fy = xs - x0, ys - y0
    top = padded[y0, x0] * (1 - fx) + padded[y0, x0 + 1] * fx
    bottom = padded[y0 + 1, x0] * (1 - fx) + padded[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


@functools.lru_cache(maxsize=4)
def _grid(canvas: int) -> np.ndarray:
    return np.mgrid[0:canvas, 0:canvas] / max(1, canvas - 1)


def _background(rng: np.random.Generator, canvas: int) -> np.ndarray:
    """[canvas, canvas, 3] float in [0, 1]: a two-colour gradient, noise and stroke clutter."""
    c0, c1 = rng.uniform(0.0, 0.4, 3), rng.uniform(0.0, 0.4, 3)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = _grid(canvas)
    t = (np.cos(theta) * xx + np.sin(theta) * yy)
    t = (t - t.min()) / max(1e-6, t.max() - t.min())
    bg = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]).astype(np.float32)
    # Clutter: short bright strokes that look a little like digit parts (hard negatives for
    # an encoder that only detects "ink").
    for _ in range(rng.integers(0, 3)):
        x0, y0 = rng.uniform(0, canvas, 2)
        ang, length = rng.uniform(0, np.pi), rng.uniform(3, canvas / 4)
        steps = np.linspace(0, length, int(length * 2) + 2)
        xs = np.clip((x0 + np.cos(ang) * steps).astype(int), 0, canvas - 1)
        ys = np.clip((y0 + np.sin(ang) * steps).astype(int), 0, canvas - 1)
        bg[ys, xs] = rng.uniform(0.3, 0.8, 3)
    return bg


def _caption(rng: np.random.Generator, order: list[int]) -> str:
    """A caption for digits in scene order ``order`` (classes, repeats allowed)."""
    mention = list(order)
    if len(mention) > 1 and rng.random() < 0.08:  # weak annotation: one digit goes unmentioned
        mention.pop(int(rng.integers(len(mention))))
    counts: dict[int, int] = {}
    for c in mention:
        counts[c] = counts.get(c, 0) + 1
    groups = list(counts.items())
    if rng.random() < 0.5:
        rng.shuffle(groups)
    words = rng.random() < 0.6
    if words:
        parts = [f"{'an' if c == 8 else 'a'} {CLASS_NAMES[c]}" if n == 1 else f"{COUNT_WORDS[n]} {PLURALS[c]}"
                 for c, n in groups]
    else:
        parts = [f"{'an' if c == 8 else 'a'} {c}" if n == 1 else f"{COUNT_WORDS[n]} {c}s" for c, n in groups]
    joiners = (" and ", " next to ", " beside ", " with ", " above ")
    if len(parts) == 1:
        phrase = parts[0]
    elif rng.random() < 0.5:
        phrase = ", ".join(parts[:-1]) + " and " + parts[-1]
    else:
        phrase = parts[0]
        for p in parts[1:]:
            phrase += joiners[int(rng.integers(len(joiners)))] + p
    numerals = ", ".join(str(c) for c in (sorted(mention) if rng.random() < 0.5 else mention))
    names = " ".join(CLASS_NAMES[c] for c in mention)
    templates = (
        lambda: phrase,
        lambda: f"digits: {numerals}",
        lambda: f"a picture of {phrase}",
        lambda: f"{phrase} on a noisy background",
        lambda: f"handwritten {numerals.replace(', ', ' ')}",
        lambda: f"there {'is' if len(mention) == 1 else 'are'} {phrase}",
        lambda: f"numbers {' and '.join(str(c) for c, _ in groups)}",
        lambda: f"{names} handwritten digits",
        lambda: f"scan showing {phrase}",
    )
    return templates[int(rng.integers(len(templates)))]()


class SceneComposer:
    """Composes scenes from the source digits in ``pool`` (indices into ``digits``/``classes``).

    Args:
        digits: [M, 8, 8] float in [0, 1]; classes: [M] int.
        seed: the data seed; it fixes the class imbalance, shared by every split.
        canvas: side in pixels (48-64 keeps 1-4 digits legible).
        noise: standard deviation of the additive Gaussian pixel noise.
    """

    def __init__(self, pool: np.ndarray, digits: np.ndarray, classes: np.ndarray, seed: int = 0, canvas: int = 48,
                 noise: float = 0.06):
        if canvas < 24:
            raise ValueError(f"the canvas must be >= 24 px; got {canvas}")
        self.by_class = [pool[classes[pool] == c] for c in range(N_CLASSES)]
        present = np.array([len(b) > 0 for b in self.by_class])
        if not present.any():
            raise ValueError("the digit pool is empty")
        weights = _class_weights(seed) * present
        self.class_cdf = np.cumsum(weights / weights.sum())
        self.size_cdf = np.cumsum(N_DIGITS_P)
        self.padded = np.pad(digits, ((0, 0), (1, 1), (1, 1)))  # zero border: samples past the edge fade out
        self.canvas, self.noise = canvas, noise
        self.lo, self.hi = max(10, canvas * 14 // 48), max(14, canvas * 24 // 48)

    def one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
        """One scene: (image [canvas, canvas, 3] uint8, labels [10] uint8, caption, digit ids [4])."""
        canvas = self.canvas
        labels = np.zeros(N_CLASSES, dtype=np.uint8)
        ids = np.full(4, -1, dtype=np.int64)
        k = min(int(np.searchsorted(self.size_cdf, rng.random(), side="right")), 3) + 1
        img = _background(rng, canvas)
        boxes: list[tuple[int, int, int]] = []
        order: list[int] = []
        for j in range(k):
            c = min(int(np.searchsorted(self.class_cdf, rng.random(), side="right")), N_CLASSES - 1)
            src = int(self.by_class[c][rng.integers(len(self.by_class[c]))])
            size = int(rng.integers(self.lo, self.hi + 1))
            glyph = _glyph(self.padded[src], size, float(rng.uniform(-15, 15)))
            # Rejection sampling keeps overlaps small, so every labelled digit stays visible.
            for _ in range(30):
                y, x = (int(v) for v in rng.integers(0, canvas - size + 1, 2))
                if all(abs(x - bx) >= 0.7 * max(size, bs) or abs(y - by) >= 0.7 * max(size, bs)
                       for by, bx, bs in boxes):
                    break
            boxes.append((y, x, size))
            color = rng.uniform(0.7, 1.0, 3)
            color[int(rng.integers(3))] *= rng.uniform(0.2, 0.8)  # tinted ink, not always white
            alpha = np.clip(glyph * rng.uniform(0.8, 1.2), 0, 1)[..., None]
            patch = img[y:y + size, x:x + size]
            img[y:y + size, x:x + size] = patch * (1 - alpha) + color[None, None] * alpha
            ids[j] = src
            labels[c] = 1
            order.append(c)
        img += self.noise * rng.standard_normal(img.shape, dtype=np.float32)
        image = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
        return image, labels, _caption(rng, order), ids

    def compose(self, n: int, stream: int) -> Scenes:
        """``n`` scenes from random stream ``stream``: the same arguments give the same scenes."""
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        rng = np.random.default_rng([stream, 15485863])
        images = np.empty((n, self.canvas, self.canvas, 3), dtype=np.uint8)
        labels = np.zeros((n, N_CLASSES), dtype=np.uint8)
        ids = np.full((n, 4), -1, dtype=np.int64)
        captions: list[str] = []
        for i in range(n):
            images[i], labels[i], caption, ids[i] = self.one(rng)
            captions.append(caption)
        return Scenes(images, labels, captions, ids)


def compose_scenes(n: int, pool: np.ndarray, digits: np.ndarray, classes: np.ndarray, seed: int,
                   canvas: int = 48, noise: float = 0.06, stream: int | None = None) -> Scenes:
    """``n`` scenes drawing source digits only from ``pool``; ``seed`` fixes the class imbalance and
    ``stream`` (default: ``seed``) the scenes."""
    return SceneComposer(pool, digits, classes, seed, canvas, noise).compose(n, seed if stream is None else stream)


def split_composer(split: str, seed: int = 0, canvas: int = 48, noise: float = 0.06) -> SceneComposer:
    """The composer of ``split`` ("train" | "val" | "test"): its own pool of source digits."""
    if split not in POOLS:
        raise ValueError(f"split must be one of {list(POOLS)}; got {split!r}")
    digits, classes = load_digit_images()
    return SceneComposer(digit_pools(classes, seed)[split], digits, classes, seed, canvas, noise)


def make_split_scenes(split: str, n: int, seed: int = 0, canvas: int = 48, noise: float = 0.06,
                      role: str = "scenes") -> Scenes:
    """``n`` scenes of ``split`` ("train" | "val" | "test") for ``role`` ("scenes", "query" or
    "database": separate streams, so a split's query and database scenes differ)."""
    roles = {"scenes": 0, "query": 1, "database": 2}
    if role not in roles:
        raise ValueError(f"role must be one of {list(roles)}; got {role!r}")
    composer = split_composer(split, seed, canvas, noise)
    return composer.compose(n, seed * 1000 + STREAM[split] * 10 + roles[role])


__all__ = ["CLASS_NAMES", "N_CLASSES", "POOLS", "SceneComposer", "Scenes", "compose_scenes", "digit_pools",
           "load_digit_images", "make_split_scenes", "split_composer"]
