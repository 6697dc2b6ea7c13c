"""Inference on photos of any size: tiled prediction with overlap, masks and overlays as PNG.

An image that fits in one tile is predicted whole. A larger one is cut into ``tile`` x ``tile``
windows that overlap by ``overlap`` of a tile (the last window of a row or column is aligned to
the border), and the tiles' crack probabilities are blended with weights that fall linearly
toward each tile's inner borders, where a tile sees the least context. Where all tiles agree
(any model whose receptive field is inside the tile), the blend equals whole-image inference.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

from ssmkit.engine.files import atomic_path
from ssmkit.errors import DataError

OVERLAY_COLOUR = np.array([255, 40, 40], dtype=np.float32)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Window starts covering [0, length): every ``stride``, the last one flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(n: int, fade: int) -> torch.Tensor:
    """[n] weights rising linearly over ``fade`` pixels from each end (never 0, so a pixel
    covered by one tile only keeps that tile's value)."""
    i = torch.arange(n, dtype=torch.float32)
    edge = torch.minimum(i + 1, n - i)
    return (edge / max(fade, 1)).clamp(1e-3, 1.0)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, image: torch.Tensor, tile: int, overlap: float = 0.25,
                  batch: int = 4, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Crack probabilities [H, W] (float32, CPU) for one image [3, H, W] in [0, 1].

    Args:
        tile: window side in pixels; an image with both sides <= tile is predicted whole.
        overlap: fraction of a tile shared by neighbouring windows, in [0, 1).
        batch: windows per forward pass.
        amp_dtype: autocast dtype (bf16 on CUDA), or None for full precision.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected one RGB image [3, H, W]; got {list(image.shape)}")
    if tile < 8:
        raise ValueError(f"tile must be >= 8 pixels; got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1); got {overlap}")
    device = next(model.parameters()).device
    _, h, w = image.shape
    ctx = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext())

    def run(x: torch.Tensor) -> torch.Tensor:
        with ctx:
            return torch.sigmoid(model(x.to(device)).float()).cpu()

    if h <= tile and w <= tile:
        return run(image[None])[0, 0]
    th, tw = min(tile, h), min(tile, w)
    stride = max(1, int(round(tile * (1.0 - overlap))))
    fade = max(1, tile - stride)
    weight = _ramp(th, fade)[:, None] * _ramp(tw, fade)[None, :]
    acc = torch.zeros(h, w)
    norm = torch.zeros(h, w)
    spots = [(y, x) for y in tile_starts(h, th, stride) for x in tile_starts(w, tw, stride)]
    for k in range(0, len(spots), batch):
        chunk = spots[k:k + batch]
        probs = run(torch.stack([image[:, y:y + th, x:x + tw] for y, x in chunk]))
        for (y, x), p in zip(chunk, probs):
            acc[y:y + th, x:x + tw] += p[0] * weight
            norm[y:y + th, x:x + tw] += weight
    return acc / norm


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The photo [H, W, 3] uint8 with crack pixels tinted red, slightly dimmed elsewhere."""
    out = image.astype(np.float32) * 0.85
    m = mask.astype(bool)
    out[m] = (1 - alpha) * image[m].astype(np.float32) + alpha * OVERLAY_COLOUR
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def write_png(path: Path, array: np.ndarray) -> None:
    """Write uint8 [H, W] or [H, W, 3] as PNG through a temporary file (never half-written)."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def list_inputs(path: str | Path, suffixes: tuple[str, ...]) -> tuple[list[Path], int]:
    """(the image files to process, how many other files were ignored) for a file or folder."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"input {str(p)!r} does not exist; expected an image file or a folder of images")
    if p.is_file():
        return [p], 0
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
    images = [f for f in files if f.suffix.lower() in suffixes]
    if not images:
        raise DataError(f"input folder {str(p)!r} holds no images ({', '.join(suffixes)}); "
                        f"{len(files)} other files were found")
    return images, len(files) - len(images)


def output_stem(path: Path, used: set[str]) -> str:
    """A unique output name for ``path`` (``a.jpg`` and ``a.png`` in one folder become ``a`` and ``a_png``)."""
    stem = path.stem
    if stem in used:
        stem = f"{path.stem}_{path.suffix.lstrip('.').lower()}"
    n = 2
    base = stem
    while stem in used:
        stem, n = f"{base}_{n}", n + 1
    used.add(stem)
    return stem


def run_infer(model: torch.nn.Module, files: list[Path], out_dir: Path, tile: int, overlap: float,
              threshold: float, amp_dtype: torch.dtype | None = None, save_probs: bool = False,
              log=None) -> tuple[int, list[str]]:
    """Predict every file; write ``<stem>_mask.png`` (0/255), ``<stem>_overlay.png`` and, with
    ``save_probs``, ``<stem>_prob.png`` into ``out_dir``. Returns (images written, skip messages)."""
    from ssmkit.engine.inputs import require_finite
    from ssmkit_apps.crack.data import read_rgb

    log = sys.stderr if log is None else log  # looked up per call: the stream may have been replaced
    done, skipped, used = 0, [], set()
    for f in files:
        try:
            rgb = read_rgb(f)
        except DataError as err:
            skipped.append(str(err))
            print(f"skipped: {err}", file=log, flush=True)
            continue
        x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
        prob = predict_probs(model, x, tile, overlap, amp_dtype=amp_dtype)
        require_finite(prob, "crack probabilities", str(f), hint="the weights may be damaged")
        mask = (prob > threshold).numpy()
        stem = output_stem(f, used)
        write_png(out_dir / f"{stem}_mask.png", mask.astype(np.uint8) * 255)
        write_png(out_dir / f"{stem}_overlay.png", overlay(rgb, mask))
        if save_probs:
            write_png(out_dir / f"{stem}_prob.png", (prob.numpy() * 255 + 0.5).astype(np.uint8))
        done += 1
        print(f"{f.name}: {rgb.shape[1]}x{rgb.shape[0]}, crack pixels {100 * mask.mean():.2f}%", file=log, flush=True)
    return done, skipped


__all__ = ["list_inputs", "output_stem", "overlay", "predict_probs", "run_infer", "tile_starts", "write_png"]
