"""The embedded crack data: a procedural generator of surface photos with pixel crack masks.

Every image is a pure function of (seed, split, index), so the train/val/test splits are fixed
and never share an image. What it draws, and why:

- **Surfaces.** Concrete (multi-octave noise, fine grain, pores and aggregate speckle), asphalt
  (a dark matrix packed with bright and dark stones) and masonry (bricks with per-brick tone and
  mortar joints). Lighting gradients, colour casts, sensor noise, blur and JPEG artefacts on top.
- **Cracks.** One to three crack systems: a tortuous random walk with persistent direction,
  1-6 px wide at the root and tapering to about one pixel, spawning thinner branches. The depth
  (how much darker than the surface) varies along the crack, and faint cracks are common.
- **Hard negatives, labelled background.** Saw-cut joints and mortar joints (straight, dark,
  often wider than cracks), scratches (thin straight lines), dark stains and oil spots, cast
  shadows with sharp or soft edges, and surface edges (a step between two tones).

Shadows and stains are as dark as cracks, so a per-pixel darkness threshold cannot separate
them; joints and scratches are as thin and dark as cracks, so only shape (tortuous, tapering,
branching versus straight and uniform) does. ``darkness_scores`` is that baseline.

``backgrounds``: a list of the user's own crack-free surface photos; each sample then crops
one of them (chosen per image) instead of drawing a procedural surface, and the cracks and
hard negatives are composed onto it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

SPLIT_ID = {"train": 0, "val": 1, "test": 2}
SURFACES = ("concrete", "asphalt", "masonry")


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLIT_ID:
        raise ValueError(f"split must be one of {list(SPLIT_ID)}; got {split!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, SPLIT_ID[split], int(index)]))


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Smooth random field [size, size] with unit standard deviation and correlation length
    about ``sigma`` pixels. Coarse fields are drawn on a small grid and upsampled (bicubic),
    which costs the same at every scale; fine ones are Gaussian-filtered white noise."""
    if sigma < 3:
        n = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    else:
        cells = int(math.ceil(size / sigma)) + 1
        coarse = torch.from_numpy(rng.standard_normal((1, 1, cells, cells)))
        n = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0].numpy()
    n = n - n.mean()
    return n / (n.std() + 1e-8)


def _fractal(rng: np.random.Generator, size: int, octaves: Sequence[float], falloff: float = 0.6) -> np.ndarray:
    out, amp = np.zeros((size, size)), 1.0
    for sigma in octaves:
        out += amp * _smooth_noise(rng, size, sigma)
        amp *= falloff
    return out / (out.std() + 1e-8)


def _discs(shape: tuple[int, int], cy: np.ndarray, cx: np.ndarray, r: np.ndarray,
           value: np.ndarray | float = 1.0, mode: str = "max") -> np.ndarray:
    """Anti-aliased discs (coverage ``clip(r + 0.5 - distance, 0, 1) * value``) at centres
    (cy, cx) with radii r, composited by ``max`` or ``add`` into a zero [H, W] map. Vectorised:
    one window of offsets around every centre, scattered with ``np.maximum.at``/``np.add.at``."""
    out = np.zeros(shape)
    cy, cx, r = (np.asarray(a, dtype=float).ravel() for a in (cy, cx, r))
    if cy.size == 0:
        return out
    value = np.broadcast_to(np.asarray(value, dtype=float), cy.shape)
    half = int(math.ceil(r.max())) + 2
    off = np.arange(-half, half + 1)
    iy = np.floor(cy)[:, None, None].astype(int) + off[None, :, None]
    ix = np.floor(cx)[:, None, None].astype(int) + off[None, None, :]
    iy, ix = np.broadcast_arrays(iy, ix)
    d = np.hypot(iy + 0.5 - cy[:, None, None], ix + 0.5 - cx[:, None, None])
    cov = np.clip(r[:, None, None] + 0.5 - d, 0.0, 1.0) * value[:, None, None]
    keep = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1]) & (cov != 0)
    (np.maximum if mode == "max" else np.add).at(out, (iy[keep], ix[keep]), cov[keep])
    return out


def _blobs(rng: np.random.Generator, size: int, count: int, rmin: float, rmax: float) -> np.ndarray:
    """``count`` random soft discs, each with its own signed amplitude, summed: [size, size]."""
    cy, cx = rng.uniform(0, size, (2, count))
    r = rng.uniform(rmin, rmax, count)
    a = rng.choice([-1.0, 1.0], count) * rng.uniform(0.3, 1.0, count)
    return _discs((size, size), cy, cx, r, a, mode="add")


def _concrete(rng, size):
    base = rng.uniform(0.45, 0.75)
    tex = 0.05 * _fractal(rng, size, (24, 10, 4, 1.5)) + 0.025 * rng.standard_normal((size, size))
    speck = _blobs(rng, size, int(size * size / 260 * rng.uniform(0.5, 1.5)), 0.6, 2.2)
    pores = -np.clip(_blobs(rng, size, int(size * size / 900 * rng.uniform(0, 1.5)), 0.5, 1.6), 0, None)
    return base + tex + 0.07 * speck + 0.25 * pores


def _asphalt(rng, size):
    base = rng.uniform(0.28, 0.5)
    tex = 0.04 * _fractal(rng, size, (16, 5, 1.5)) + 0.035 * rng.standard_normal((size, size))
    stones = _blobs(rng, size, int(size * size / 45 * rng.uniform(0.7, 1.3)), 0.8, 2.8)
    return base + tex + 0.12 * stones


def _masonry(rng, size):
    """Bricks with per-brick tone and mortar joints; also returns the joint mask (a hard negative)."""
    bh = int(rng.integers(max(size // 8, 10), max(size // 4, 14)))
    bw = int(bh * rng.uniform(1.8, 2.6))
    joint = int(rng.integers(2, 5))
    mortar_dark = rng.random() < 0.6
    yy, xx = np.mgrid[0:size, 0:size]
    oy, ox = rng.integers(0, bh), rng.integers(0, bw)
    row = (yy + oy) // bh
    shift = (row % 2) * (bw // 2)
    col = (xx + ox + shift) // bw
    in_row, in_col = (yy + oy) % bh, (xx + ox + shift) % bw
    joints = (in_row < joint) | (in_col < joint)
    tone = rng.uniform(-0.08, 0.08, size=(row.max() + 2, col.max() + 2))
    base = rng.uniform(0.4, 0.7) + tone[row, col]
    tex = 0.04 * _fractal(rng, size, (8, 3, 1)) + 0.02 * rng.standard_normal((size, size))
    mortar = rng.uniform(-0.22, -0.1) if mortar_dark else rng.uniform(0.08, 0.18)
    surface = base + tex + mortar * joints
    return surface, joints


def _lighting(rng, size):
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5))
    return 1.0 + rng.uniform(0.0, 0.45) * ramp + 0.06 * _smooth_noise(rng, size, size / 4)


# ----------------------------------------------------------------------------- strokes


def _crack_path(rng, size, start, heading, length, tortuosity):
    """Points [n, 2] (y, x) of a tortuous walk: persistent heading with random turns, 0.7 px steps."""
    steps = int(length / 0.7)
    turns = rng.normal(0, tortuosity, steps) + rng.normal(0, 0.01)
    # Occasional kinks: cracks follow aggregate boundaries and change direction abruptly.
    turns += (rng.random(steps) < 0.01) * rng.normal(0, 0.6, steps)
    h = heading + np.cumsum(turns)
    pts = np.asarray(start, dtype=float) + 0.7 * np.cumsum(np.stack([np.sin(h), np.cos(h)], 1), axis=0)
    pts = np.concatenate([np.asarray(start, dtype=float)[None], pts])
    outside = (pts < -4).any(1) | (pts > size + 4).any(1)
    if outside.any():  # stop where the walk leaves the frame
        pts = pts[: int(np.argmax(outside))]
    return pts


def _crack_points(rng, size, start, heading, length, width, depth, level=0, out=None):
    """Stroke points of one crack and, recursively, its branches: a list of [n, 4] arrays
    (y, x, radius, depth)."""
    out = [] if out is None else out
    pts = _crack_path(rng, size, start, heading, length, rng.uniform(0.04, 0.16))
    n = len(pts)
    if n < 4:
        return out
    taper = rng.uniform(0.6, 1.6)
    t = np.arange(n) / (n - 1)
    # Depth wanders along the crack: weathered or filled parts are faint.
    along = ndimage.gaussian_filter1d(rng.standard_normal(n), max(n / 12, 1.0), mode="nearest")
    along = np.clip(depth * (1.0 + 0.45 * along / (np.abs(along).max() + 1e-8)), 0.08, 0.9)
    wiggle = ndimage.gaussian_filter1d(rng.standard_normal(n), 3.0, mode="nearest")
    r = 0.5 * np.maximum(0.9, width * (1.0 - t) ** taper + 0.9 * t) * (1.0 + 0.15 * wiggle)
    out.append(np.stack([pts[:, 0], pts[:, 1], r, along], 1))
    if level < 2:
        for _ in range(rng.poisson(1.3 if level == 0 else 0.5)):
            i = int(rng.integers(n // 8, max(n // 8 + 1, 7 * n // 8)))
            seg = pts[min(i + 1, n - 1)] - pts[max(i - 1, 0)]
            h0 = math.atan2(seg[0], seg[1]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.2)
            w_here = width * (1.0 - i / (n - 1)) ** taper
            _crack_points(rng, size, pts[i], h0, length * rng.uniform(0.2, 0.55),
                          max(1.0, w_here * rng.uniform(0.4, 0.8)), depth * rng.uniform(0.7, 1.0), level + 1, out)
    return out


def _line(size, p0, p1, r):
    """Coverage [size, size] of a straight stroke of radius ``r`` from p0 to p1 (y, x)."""
    d = float(np.hypot(*(p1 - p0)))
    t = np.linspace(0, 1, max(int(d / 0.7), 2))[:, None]
    p = p0[None] + t * (p1 - p0)[None]
    return _discs((size, size), p[:, 0], p[:, 1], np.full(len(p), r))


def _edge_point(rng, size):
    side = rng.integers(0, 4)
    u = rng.uniform(0, size)
    return np.array([(0.0, u), (size, u), (u, 0.0), (u, size)][side])


def _hard_negatives(rng, size, darkening, surface_kind):
    """Darken ``darkening`` (a multiplicative [size, size] factor, 1 = unchanged) in place with
    joints, scratches, stains and shadows. Returns nothing: none of them is a crack."""
    # Saw-cut joints: long, straight, dark, uniform width (concrete and asphalt slabs).
    if surface_kind != "masonry" and rng.random() < 0.45:
        canvas = ndimage.gaussian_filter(_line(size, _edge_point(rng, size), _edge_point(rng, size),
                                               rng.uniform(1.0, 3.5)), 0.5)
        darkening *= 1 - rng.uniform(0.3, 0.6) * canvas
    # Scratches: thin, straight or gently curved, shorter, low contrast; sometimes lighter.
    for _ in range(rng.poisson(1.5)):
        p0 = rng.uniform(0, size, 2)
        ang = rng.uniform(0, 2 * math.pi)
        p1 = p0 + rng.uniform(0.15, 0.6) * size * np.array([math.sin(ang), math.cos(ang)])
        canvas = _line(size, p0, p1, rng.uniform(0.5, 1.0))
        sign = 1 if rng.random() < 0.75 else -0.6
        darkening *= 1 - sign * rng.uniform(0.15, 0.45) * canvas
    # Stains and oil spots: dark blobs with fractal outlines and soft edges.
    for _ in range(rng.poisson(1.2)):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(0.06, 0.25) * size
        yy, xx = np.mgrid[0:size, 0:size]
        field = (np.hypot(yy - cy, xx - cx) / r) + 0.35 * _smooth_noise(rng, size, size / 16)
        blob = np.clip((1.0 - field) * rng.uniform(2, 8), 0, 1)
        darkening *= 1 - rng.uniform(0.2, 0.55) * blob
    # Dark pits in a row or a small cluster: crack-dark, but dots rather than a line.
    if rng.random() < 0.4:
        k = int(rng.integers(3, 12))
        p = rng.uniform(0, size, 2)[None] + rng.normal(0, size / 10, (k, 2))
        canvas = _discs((size, size), p[:, 0], p[:, 1], rng.uniform(0.8, 2.2, k))
        darkening *= 1 - rng.uniform(0.3, 0.6) * canvas
    # Cast shadows: a half-plane (sharp or soft edge) that darkens everything beyond it.
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:size, 0:size]
        ang = rng.uniform(0, 2 * math.pi)
        off = rng.uniform(-0.3, 0.3) * size
        dist = (np.cos(ang) * (xx - size / 2) + np.sin(ang) * (yy - size / 2)) - off
        soft = rng.choice([0.7, 2.0, 8.0])
        darkening *= 1 - rng.uniform(0.25, 0.55) / (1 + np.exp(-dist / soft))
    # A surface edge: the frame shows a second, darker surface across a straight step.
    if rng.random() < 0.2:
        yy, xx = np.mgrid[0:size, 0:size]
        ang = rng.uniform(0, 2 * math.pi)
        dist = np.cos(ang) * (xx - size / 2) + np.sin(ang) * (yy - size / 2) - rng.uniform(0.25, 0.45) * size
        darkening *= np.where(dist > 0, rng.uniform(0.6, 0.85), 1.0)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB")).copy()


def render(seed: int, split: str, index: int, size: int = 128,
           background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One sample: (image uint8 [size, size, 3], crack mask bool [size, size]).

    ``background``: an RGB uint8 photo [h, w, 3] with h, w >= size to crop instead of drawing a
    procedural surface (see :func:`crop_background`).
    """
    if size < 16:
        raise ValueError(f"image size must be >= 16 pixels; got {size}")
    rng = _rng(seed, split, index)
    kind = SURFACES[int(rng.integers(0, len(SURFACES)))]
    if background is not None:
        surface = crop_background(rng, background, size)
        gray = None
    else:
        if kind == "concrete":
            gray = _concrete(rng, size)
        elif kind == "asphalt":
            gray = _asphalt(rng, size)
        else:
            gray, _ = _masonry(rng, size)
        tint = 1.0 + rng.normal(0, 0.04, 3)
        surface = np.clip(gray, 0.02, 1.0)[..., None] * tint[None, None, :]
        surface = surface + rng.normal(0, 0.01, (size, size, 3))
    darkening = np.ones((size, size))
    _hard_negatives(rng, size, darkening, kind)

    strokes: list[np.ndarray] = []
    for k in range(int(rng.integers(1, 4))):
        start = _edge_point(rng, size) if rng.random() < 0.6 or k == 0 else rng.uniform(0.2, 0.8, 2) * size
        heading = math.atan2(size / 2 - start[0], size / 2 - start[1]) + rng.normal(0, 0.6)
        width = rng.uniform(1.2, 6.0)
        depth = rng.uniform(0.2, 0.75)
        _crack_points(rng, size, start, heading, rng.uniform(0.5, 1.4) * size, width, depth, out=strokes)
    pts = np.concatenate(strokes) if strokes else np.zeros((0, 4))
    cover = _discs((size, size), pts[:, 0], pts[:, 1], pts[:, 2])
    depth_map = _discs((size, size), pts[:, 0], pts[:, 1], pts[:, 2] + 0.4, pts[:, 3])
    # The crack interior is dark where the crack is open; a slight lighter rim (spalled edges)
    # appears on some surfaces. Both scale with the local surface brightness.
    rim = np.clip(ndimage.gaussian_filter(cover, 1.2) - cover, 0, None) * rng.uniform(0.0, 0.25)
    crack_factor = (1 - depth_map * np.clip(cover * 1.5, 0, 1)) * (1 + rim)
    img = surface * (darkening * crack_factor)[..., None]
    img *= _lighting(rng, size)[..., None]
    if rng.random() < 0.6:
        img = ndimage.gaussian_filter(img, (rng.uniform(0.3, 1.1),) * 2 + (0,))
    img += rng.normal(0, rng.uniform(0.005, 0.035), img.shape)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        out = _jpeg(out, int(rng.integers(35, 95)))
    mask = cover >= 0.5
    if not mask.any():  # a crack that left the frame at once: keep at least its clipped root
        mask = cover > 0
    return out, mask


def crop_background(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray:
    """A random ``size`` x ``size`` crop of an RGB uint8 photo as float [size, size, 3] in [0, 1];
    photos smaller than ``size`` are upscaled first (bilinear), flips add variety."""
    h, w = photo.shape[:2]
    if min(h, w) < size:
        z = size / min(h, w)
        photo = ndimage.zoom(photo, (z, z, 1), order=1)
        h, w = photo.shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    crop = photo[y:y + size, x:x + size].astype(np.float64) / 255.0
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    return crop


def generate(n: int, split: str, seed: int = 0, size: int = 128,
             backgrounds: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of ``split``: (images uint8 [n, size, size, 3], masks bool [n, size, size]).

    With ``backgrounds``, sample i crops photo ``i mod len(backgrounds)`` shuffled by the seed.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    imgs = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    order = None
    if backgrounds:
        order = _rng(seed, split, -1 & 0x7FFFFFFF).permutation(max(n, len(backgrounds))) % len(backgrounds)
    for i in range(n):
        bg = backgrounds[int(order[i])] if order is not None else None
        imgs[i], masks[i] = render(seed, split, i, size, bg)
    return imgs, masks


def darkness_scores(images: np.ndarray) -> np.ndarray:
    """The darkness baseline's crack score, 1 - luminance in [0, 1]: [..., H, W, 3] uint8 -> [..., H, W]."""
    rgb = images.astype(np.float32) / 255.0
    return 1.0 - (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])


__all__ = ["SURFACES", "crop_background", "darkness_scores", "generate", "render"]
