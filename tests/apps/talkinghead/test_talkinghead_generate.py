"""generate's input readers: references of every PIL mode, and expression CSVs of the wrong length."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ssmkit.errors import DataError
from ssmkit_apps.talkinghead import face as Fc
from ssmkit_apps.talkinghead import videoio as V
from ssmkit_apps.talkinghead.generate import read_motion, read_reference


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """One rendered face, uint8 [64, 64, 3]."""
    return Fc.render_clip(Fc.make_identity("drawn", 1), Fc.neutral_controls(1))[0]


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"), np.float64)


def _blocks(grey: np.ndarray) -> np.ndarray:
    """Means of 4x4 blocks [16, 16]: dithered palettes and black-and-white agree there."""
    return grey.reshape(16, 4, 16, 4).mean((1, 3))


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "LA", "RGBA", "I;16", "F", "F01"])
def test_reference_of_any_mode_becomes_the_same_rgb_face(tmp_path, face, mode):
    src = Image.fromarray(face)
    grey = _grey(face)
    if mode == "I;16":  # a 16-bit greyscale PNG: PIL's own convert() would clip it to white
        im, path, want = Image.fromarray((grey * 257).astype(np.uint16)), tmp_path / "r.png", grey
    elif mode in ("F", "F01"):  # float TIFFs in 0-255 and in 0-1
        scale = 1 / 255 if mode == "F01" else 1.0
        im, path, want = Image.fromarray((grey * scale).astype(np.float32)), tmp_path / "r.tiff", grey
    elif mode == "CMYK":
        im, path, want = src.convert("CMYK"), tmp_path / "r.jpg", grey
    else:
        im, path = src.convert(mode), tmp_path / "r.png"
        want = None if mode == "1" else grey
    im.save(path)
    arr, notes = read_reference(path)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    assert notes and "to RGB" in notes[0]
    if want is not None:  # the face, not a blank or clipped image (jpeg and palettes are lossy)
        assert np.abs(_blocks(_grey(arr)) - _blocks(want)).mean() < 6
    else:  # mode "1": dithered black and white, still the face's layout
        assert np.corrcoef(_blocks(_grey(arr)).ravel(), _blocks(grey).ravel())[0, 1] > 0.6


def test_transparent_reference_pixels_become_white_and_sizes_are_fixed(tmp_path, face):
    rgba = np.dstack([face, np.full((64, 64), 255, np.uint8)])
    rgba[:8, :, 3] = 0  # a transparent band on top
    Image.fromarray(rgba).resize((100, 120)).save(tmp_path / "t.png")
    arr, notes = read_reference(tmp_path / "t.png")
    assert any("from 100x120 to 64x64" in n for n in notes)
    assert arr[0].min() >= 250  # the transparent band is white
    (tmp_path / "not.png").write_text("not an image")
    with pytest.raises(DataError, match="cannot be read"):
        read_reference(tmp_path / "not.png")
    with pytest.raises(DataError, match="does not exist"):
        read_reference(tmp_path / "missing.png")


def test_motion_csv_length_must_match_the_audio(tmp_path):
    ctl = Fc.expression_signal(10, np.random.default_rng(0))
    V.write_controls(tmp_path / "m.csv", ctl, Fc.MOTION_COLUMNS)
    assert read_motion(tmp_path / "m.csv", 10, "speech.wav").shape == (10, 5)
    with pytest.raises(DataError, match=r"has 10 rows, but the audio 'speech.wav' lasts 12 frames \(0.48 s"):
        read_motion(tmp_path / "m.csv", 12, "speech.wav")
