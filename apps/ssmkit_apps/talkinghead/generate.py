"""``ssmkit talkinghead generate``: a reference face + speech (+ expression CSV) -> an mp4 with sound.

Input problems get a clear error or a stated fix (printed), and the mp4 is written atomically
(never half-written under its final name):

- speech at another sample rate is resampled to 16 kHz with torchaudio; stereo is downmixed;
- empty speech (or shorter than one 40 ms frame) is an error; silent speech is generated with a
  note that the mouth stays closed;
- a reference image that is not RGB (grey, palette, RGBA, CMYK) is converted, and one that is
  not 64x64 is centre-cropped and resized;
- an expression CSV whose row count differs from the speech's frame count is an error naming
  both counts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ssmkit.engine.app import EvalContext
from ssmkit.engine.files import check_output
from ssmkit.errors import DataError, OutputError
from ssmkit_apps.talkinghead import audio as A
from ssmkit_apps.talkinghead import data as D
from ssmkit_apps.talkinghead import diffusion as Df
from ssmkit_apps.talkinghead import face as Fc
from ssmkit_apps.talkinghead import videoio as V

MAX_SECONDS = 120.0


def read_reference(path: str | Path, size: int = Fc.SIZE) -> tuple[np.ndarray, list[str]]:
    """uint8 [size, size, 3] from any image PIL reads, with notes on each conversion."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"reference image {str(p)!r} does not exist; expected a png/jpg face, aligned like the "
                        "training faces (eyes at 42 % and mouth at 72 % of the height, centred)")
    notes = []
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode != "RGB":
                notes.append(f"converted the reference from mode {im.mode} to RGB")
                if im.mode.startswith(("I", "F")):
                    # 16-bit and float greyscale: PIL's convert() clips them at 255 (a white face).
                    im = Image.fromarray(_grey_to_uint8(np.asarray(im)))
                elif im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    im = im.convert("RGBA")
                    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(bg, im)  # transparent pixels become white
                im = im.convert("RGB")
            arr = np.array(im)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"reference image {str(p)!r} cannot be read ({err}); expected png or jpg") from None
    h, w = arr.shape[:2]
    if (h, w) != (size, size):
        notes.append(f"centre-cropped and resized the reference from {w}x{h} to {size}x{size}")
        arr = D.crop_resize(arr[None], size)[0]
    return arr, notes


def _grey_to_uint8(a: np.ndarray) -> np.ndarray:
    """uint8 [H, W] from a 16/32-bit integer or float greyscale image [H, W].

    Integers above 255 are read as 16-bit (0-65535), floats up to 1 as the range 0-1; anything
    else is taken as 0-255 already.
    """
    is_float = np.issubdtype(a.dtype, np.floating)
    a = np.nan_to_num(a.astype(np.float64))
    if is_float and a.size and a.max() <= 1.0:
        a = a * 255.0
    elif a.size and a.max() > 255:
        a = a / 257.0  # 65535 -> 255
    return np.clip(a, 0, 255).round().astype(np.uint8)


def read_motion(path: str | Path, n_frames: int, audio_path: str) -> np.ndarray:
    """float32 [T, 5] expression controls; the row count must equal the audio's frame count."""
    ctl = V.read_controls(path, Fc.MOTION_COLUMNS)
    rows = len(ctl[Fc.MOTION_COLUMNS[0]])
    if rows != n_frames:
        raise DataError(f"{str(path)!r} has {rows} rows, but the audio {str(audio_path)!r} lasts {n_frames} frames "
                        f"({n_frames / A.FPS:.2f} s at {A.FPS} fps); expected one row per frame")
    return np.stack([ctl[c] for c in Fc.MOTION_COLUMNS], -1).astype(np.float32)


def generate_command(app, model, args: argparse.Namespace, ctx: EvalContext) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise OutputError(f"--out {str(out)!r} must end in .mp4")
    inputs = [args.ref, args.audio] + ([args.motion] if args.motion else [])
    out = check_output(out, inputs=inputs, overwrite=args.overwrite)
    if app._stats is None:
        raise DataError("generate needs --run RUN_DIR: the run's app_state.json holds the audio normalisation")
    mode = args.mode or ("both" if args.motion else "audio")
    if mode in ("motion", "both") and not args.motion:
        raise DataError(f"--mode {mode} needs --motion CSV (columns {', '.join(Fc.MOTION_COLUMNS)}, one row per frame)")
    notes: list[str] = []
    speech = A.load_audio(args.audio, allow_silent=True)
    notes += speech.notes
    n = A.frame_count(len(speech.samples))
    if n / A.FPS > MAX_SECONDS:
        raise DataError(f"{args.audio!r} lasts {n / A.FPS:.1f} s; generate takes at most {MAX_SECONDS:.0f} s at a time")
    if args.motion and mode == "audio":
        notes.append(f"--mode audio: ignored the expression CSV {args.motion!r}")
    motion = read_motion(args.motion, n, args.audio) if args.motion and mode != "audio" else \
        np.zeros((n, len(Fc.MOTION_COLUMNS)), np.float32)
    ref, ref_notes = read_reference(args.ref)
    notes += ref_notes
    # The model hears level-normalised speech (as in training); the mp4 keeps the speech as given.
    level = A.normalize_level(speech.samples[: n * A.SAMPLES_PER_FRAME])
    mean, std = (torch.from_numpy(v) for v in app._stats)
    feats = D.pad_context(((app.mel(level, n) - mean) / std).float(), app.cfg.model.audio_margin)
    for note in notes:
        print(f"note: {note}")
    dev = ctx.device
    batch = {"ref": torch.from_numpy(ref).permute(2, 0, 1).float().div(127.5).sub(1)[None].to(dev),
             "audio": feats[None].to(dev), "motion": torch.from_numpy(motion)[None].to(dev),
             "has_motion": torch.tensor([1.0 if mode != "audio" else 0.0], device=dev)}
    gen = torch.Generator().manual_seed(int(args.seed))
    with torch.no_grad():
        clip = app.generate_batch(model, batch, mode, ctx, gen, args.steps)
    frames = Df.to_uint8(clip[0]).cpu().numpy()
    V.write_mp4(out, frames, speech.samples[: n * A.SAMPLES_PER_FRAME])
    print(f"wrote {out}: {n} frames at {A.FPS} fps ({n / A.FPS:.2f} s), {Fc.SIZE}x{Fc.SIZE}, mode {mode}, "
          f"{args.steps or app.cfg.eval.steps} DDIM steps, audio muxed")
    if args.strip:
        from ssmkit_apps.talkinghead.report import frame_strip

        strip = check_output(args.strip, inputs=inputs, overwrite=args.overwrite)
        frame_strip(strip, {"generated": frames}, ref=ref)
        print(f"wrote {strip}")
    return 0


__all__ = ["generate_command", "read_motion", "read_reference"]
