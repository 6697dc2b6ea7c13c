"""Talking-head clips: the embedded generator, the folder loader (HDTF/VoxCeleb style) and datasets.

A :class:`Clip` is ``clip_frames`` video frames at 25 fps (uint8 [T, 64, 64, 3]), its reference
identity frame, its speech (float32 [T * 640] at 16 kHz, level-normalised) and, when known, its
per-frame controls (``face.CONTROL_COLUMNS``).

Embedded data (``data.root: ""``): speech from :func:`audio.speech_corpus` is split **by
utterance** with ``data.data_seed`` (the test clips speak audio no training clip contains),
cut into clips, and each clip is rendered by :mod:`face` with its own identity (drawn faces
and warped portraits; test identities are new faces too) and expression signal.

Folder data (``data.root: DIR``; ``make-demo-data`` writes this layout, and HDTF or VoxCeleb
videos go in the same way)::

    DIR/[train|val|test/]**/NAME.mp4   video (any size and frame rate) with an audio track
                         **/NAME.wav   optional: the speech, used instead of the mp4's track
                         **/NAME.csv   optional: per-frame controls at 25 fps (frame, blink, brow,
                                       head_dx, head_dy, head_roll [, mouth, jaw, lip_spread])
                         **/NAME.json  optional: {"box": [x0, y0, x1, y1]} face crop in pixels
                         **/NAME.png   optional: the reference identity frame

Without split folders the videos are split by seed, whole videos at a time. Frames are resampled
to 25 fps, cropped (the box, else a centred square scaled by ``data.crop_scale``) and resized to
64x64; long videos are cut into clips of ``clip_frames``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ssmkit.engine.app import check_data_dir
from ssmkit.errors import DataError
from ssmkit_apps.talkinghead import audio as A
from ssmkit_apps.talkinghead import face as Fc
from ssmkit_apps.talkinghead import videoio as V

SPLITS = ("train", "val", "test")
LAYOUT = """DIR/[train|val|test/]**/NAME.mp4   video with an audio track (any size, any frame rate)
                     **/NAME.wav   optional speech beside it (used instead of the mp4's track)
                     **/NAME.csv   optional per-frame controls: frame,blink,brow,head_dx,head_dy,head_roll
                     **/NAME.json  optional {"box": [x0, y0, x1, y1]} face crop in source pixels
                     **/NAME.png   optional reference identity frame (else the clip's first frame)"""
# Each split draws identities from its own seed stream, so test faces are new faces.
_IDENTITY_STREAM = {"train": 0, "val": 500_009, "test": 900_007}


@dataclass
class Clip:
    name: str
    frames: np.ndarray  # uint8 [T, H, W, 3]
    ref: np.ndarray  # uint8 [H, W, 3]
    audio: np.ndarray  # float32 [T * 640], level-normalised
    controls: dict[str, np.ndarray] | None  # [T] each, or None when unknown
    speech: str = ""
    identity: str = ""

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


# ------------------------------------------------------------------------------ embedded data


def split_utterances(corpus: list[A.Speech], seed: int, val_fraction: float, test_fraction: float
                     ) -> dict[str, list[A.Speech]]:
    """Whole utterances per split, by a seeded shuffle: held-out audio for validation and test.

    Utterances are dealt in shuffled order to test until it holds ``test_fraction`` of the
    corpus's duration, then to validation until ``val_fraction``; the rest train. Fractions of
    duration, not of counts: a few short utterances would otherwise make a test split of seconds.
    """
    if len(corpus) < 3:
        raise DataError(f"the speech corpus has {len(corpus)} utterances; at least 3 are needed for train/val/test")
    order = np.random.default_rng(seed).permutation(len(corpus))
    total = sum(u.seconds for u in corpus)
    parts: dict[str, list[A.Speech]] = {"test": [], "val": [], "train": []}
    have = {"test": 0.0, "val": 0.0}
    for k, i in enumerate(order):
        left = len(order) - k
        u = corpus[i]
        if have["test"] < test_fraction * total and left > 2:
            split = "test"
        elif have["val"] < val_fraction * total and (left > 1 or not parts["val"]):
            split = "val"
        else:
            split = "train"
        parts[split].append(u)
        if split in have:
            have[split] += u.seconds
    return parts


def generate_clips(utterances: list[A.Speech], split: str, *, clip_frames: int, hop: int, identities: int,
                   portrait_fraction: float, lead_frames: int, seed: int, max_clips: int = 0) -> list[Clip]:
    """Render talking-face clips for ``utterances``: every ``hop`` frames a window of ``clip_frames``,
    spoken by ``identities`` different faces with their own expression signals."""
    rng = np.random.default_rng(seed * 7_919 + _IDENTITY_STREAM[split])
    clips: list[Clip] = []
    k = 0
    for utt in utterances:
        drive = A.mouth_drive(utt.samples, lead_frames)
        total = len(drive["mouth"])
        starts = list(range(0, total - clip_frames + 1, hop))
        for s in starts:
            for _ in range(identities):
                if max_clips and len(clips) >= max_clips:
                    return clips
                kind = "portrait" if rng.random() < portrait_fraction else "drawn"
                ident_seed = int(rng.integers(1 << 31))
                ident = Fc.make_identity(kind, ident_seed)
                ctl = {c: drive[c][s:s + clip_frames] for c in Fc.AUDIO_COLUMNS}
                ctl.update(Fc.expression_signal(clip_frames, rng))
                frames = Fc.render_clip(ident, ctl)
                audio = utt.samples[s * A.SAMPLES_PER_FRAME:(s + clip_frames) * A.SAMPLES_PER_FRAME]
                clips.append(Clip(f"{split}_{k:04d}", frames, Fc.reference_frame(ident), audio.copy(), ctl,
                                  speech=utt.source, identity=f"{kind}:{ident_seed}"))
                k += 1
    return clips


def embedded_clips(cfg, split: str) -> list[Clip]:
    """The embedded clips of ``split`` for a data config (see app.TalkingHeadData)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    corpus = A.speech_corpus(cfg.speech, n_synth=cfg.n_synth, seed=cfg.data_seed)
    parts = split_utterances(corpus, cfg.data_seed, cfg.val_fraction, cfg.test_fraction)
    train = split == "train"
    return generate_clips(parts[split], split, clip_frames=cfg.clip_frames,
                          hop=cfg.train_hop if train else cfg.clip_frames,
                          identities=cfg.identities if train else 1, portrait_fraction=cfg.portrait_fraction,
                          lead_frames=cfg.lead_frames, seed=cfg.data_seed,
                          max_clips=cfg.max_clips if train else cfg.max_eval_clips)


def write_clips(root: str | Path, split: str, clips: list[Clip]) -> list[Path]:
    """Write clips in the folder layout: NAME.mp4 (audio muxed), NAME.wav, NAME.csv, NAME.png."""
    from PIL import Image

    out = Path(root) / split
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for c in clips:
        V.write_mp4(out / f"{c.name}.mp4", c.frames, c.audio)
        V.write_wav(out / f"{c.name}.wav", c.audio)
        if c.controls is not None:
            V.write_controls(out / f"{c.name}.csv", c.controls, Fc.CONTROL_COLUMNS)
        Image.fromarray(c.ref).save(out / f"{c.name}.png")
        written.append(out / f"{c.name}.mp4")
    return written


# ------------------------------------------------------------------------------ folder data


def crop_resize(frames: np.ndarray, size: int, box: tuple[float, float, float, float] | None = None,
                scale: float = 1.0) -> np.ndarray:
    """uint8 [T, H, W, 3] -> uint8 [T, size, size, 3]: crop ``box`` (x0, y0, x1, y1), else a centred
    square of side ``scale`` x the short side, made square and resized with antialiasing."""
    t, h, w, _ = frames.shape
    if box is None:
        side = min(h, w) * scale
        cx, cy = w / 2, h / 2
    else:
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise DataError(f"face box {list(box)} is not x0 < x1, y0 < y1 with non-negative values")
        side = max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x0i, y0i = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(2, int(round(side)))
    # Pad with edge pixels where the square leaves the frame (a face near the border).
    pad = [max(0, -y0i), max(0, y0i + s - h), max(0, -x0i), max(0, x0i + s - w)]
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    if any(pad):
        x = F.pad(x, (pad[2], pad[3], pad[0], pad[1]), mode="replicate")
    x = x[:, :, y0i + pad[0]:y0i + pad[0] + s, x0i + pad[2]:x0i + pad[2] + s]
    if s != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=s > size, align_corners=False)
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _to_fps(frames: np.ndarray, fps: float, n_out: int) -> np.ndarray:
    """Nearest-frame resampling of a video at ``fps`` to ``n_out`` frames at 25 fps."""
    idx = np.minimum((np.arange(n_out) * fps / A.FPS + 1e-6).astype(int), len(frames) - 1)
    return frames[idx]


def _read_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.array(im.convert("RGB"))
    return crop_resize(arr[None], size)[0]


def load_video(path: str | Path, size: int = Fc.SIZE, crop_scale: float = 1.0) -> Clip:
    """One video of the folder layout as a single (long) clip at 25 fps, 16 kHz and size x size."""
    p = Path(path)
    frames, fps, track = V.read_mp4(p, with_audio=not p.with_suffix(".wav").is_file())
    if p.with_suffix(".wav").is_file():
        speech = A.load_audio(p.with_suffix(".wav"))
        audio, source = speech.samples, str(p.with_suffix(".wav"))
    elif track is not None:
        audio, source = track, f"{p} (audio track)"
    else:
        raise DataError(f"{str(p)!r} has no audio track and no {p.with_suffix('.wav').name} beside it; "
                        f"expected:\n{LAYOUT}")
    n = min(int(math.floor(len(frames) * A.FPS / fps + 1e-6)), A.frame_count(len(audio)))
    if n < 1:
        raise DataError(f"{str(p)!r}: less than one frame of video with audio")
    box = None
    if p.with_suffix(".json").is_file():
        try:
            box = tuple(float(v) for v in json.loads(p.with_suffix(".json").read_text())["box"])
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{str(p.with_suffix('.json'))!r}: expected {{\"box\": [x0, y0, x1, y1]}} "
                            f"({err})") from None
        if len(box) != 4:
            raise DataError(f"{str(p.with_suffix('.json'))!r}: the box needs 4 numbers, got {len(box)}")
    frames = crop_resize(_to_fps(frames, fps, n), size, box, crop_scale)
    audio = A.normalize_level(audio[: n * A.SAMPLES_PER_FRAME])
    controls = None
    if p.with_suffix(".csv").is_file():
        ctl = V.read_controls(p.with_suffix(".csv"), Fc.MOTION_COLUMNS)
        extra = {}
        try:
            extra = V.read_controls(p.with_suffix(".csv"), Fc.AUDIO_COLUMNS)
        except DataError:
            pass
        if len(ctl["blink"]) < n:
            raise DataError(f"{str(p.with_suffix('.csv'))!r} has {len(ctl['blink'])} rows; the video has {n} frames "
                            f"at {A.FPS} fps (one row per frame expected)")
        controls = {k: v[:n] for k, v in {**ctl, **extra}.items()}
    ref = _read_image(p.with_suffix(".png"), size) if p.with_suffix(".png").is_file() else frames[0]
    return Clip(p.stem, frames, ref, audio, controls, speech=source, identity=p.stem)


def cut(clip: Clip, clip_frames: int, hop: int) -> list[Clip]:
    """Windows of ``clip_frames`` frames every ``hop`` frames (a shorter video gives none)."""
    out = []
    for k, s in enumerate(range(0, clip.n_frames - clip_frames + 1, hop)):
        ctl = None if clip.controls is None else {c: v[s:s + clip_frames] for c, v in clip.controls.items()}
        out.append(Clip(f"{clip.name}_{k:03d}", clip.frames[s:s + clip_frames], clip.ref,
                        clip.audio[s * A.SAMPLES_PER_FRAME:(s + clip_frames) * A.SAMPLES_PER_FRAME], ctl,
                        clip.speech, clip.identity))
    return out


def folder_videos(root: str | Path, split: str, seed: int, val_fraction: float, test_fraction: float) -> list[Path]:
    """The mp4 files of ``split``: its folder when ``root`` has split folders, else a seeded split
    of all videos (whole videos, so test speech is never heard in training)."""
    base = check_data_dir(root, LAYOUT, "*.mp4")
    if not base.is_dir():
        raise DataError(f"dataset path {str(base)!r} is not a folder. Expected layout:\n{LAYOUT}")
    if any((base / s).is_dir() for s in SPLITS):
        d = base / split
        vids = sorted(d.rglob("*.mp4")) if d.is_dir() else []
        if not vids:
            raise DataError(f"{str(d)!r} holds no .mp4 files; with split folders each of train/, val/, test/ "
                            f"needs videos. Expected layout:\n{LAYOUT}")
        return vids
    vids = sorted(base.rglob("*.mp4"))
    if len(vids) < 3:
        raise DataError(f"{str(base)!r} holds {len(vids)} videos; a seeded train/val/test split needs at least 3 "
                        "(or make train/, val/ and test/ folders)")
    order = np.random.default_rng(seed).permutation(len(vids))
    n_test = max(1, round(test_fraction * len(vids)))
    n_val = max(1, round(val_fraction * len(vids)))
    pick = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}[split]
    return [vids[i] for i in sorted(pick)]


def folder_clips(cfg, split: str) -> list[Clip]:
    videos = folder_videos(cfg.root, split, cfg.data_seed, cfg.val_fraction, cfg.test_fraction)
    hop = cfg.train_hop if split == "train" else cfg.clip_frames
    clips: list[Clip] = []
    for v in videos:
        clips += cut(load_video(v, Fc.SIZE, cfg.crop_scale), cfg.clip_frames, hop)
        limit = cfg.max_clips if split == "train" else cfg.max_eval_clips
        if limit and len(clips) >= limit:
            clips = clips[:limit]
            break
    if not clips:
        raise DataError(f"the {split} videos under {str(cfg.root)!r} give no clip of {cfg.clip_frames} frames "
                        f"({cfg.clip_frames / A.FPS:.2f} s); lower data.clip_frames or add longer videos")
    return clips


# ------------------------------------------------------------------------------ datasets


def mouth_signal(clip: Clip, lead_frames: int = 1) -> np.ndarray:
    """The driving mouth signal of a clip [T]: its ``mouth`` control, else derived from its speech."""
    if clip.controls is not None and "mouth" in clip.controls:
        return clip.controls["mouth"]
    return A.mouth_drive(clip.audio, lead_frames)["mouth"][: clip.n_frames]


class ClipDataset(Dataset):
    """Model-ready clips. Items are dicts of tensors:

    frames [T, 3, H, W] in [-1, 1]; ref [3, H, W]; audio [T + 2 m, F] normalised log-mel with
    ``audio_margin`` m frames of context on each side (edge frames repeated at the clip's ends); motion
    [T, 5]; has_motion (0/1); mouth [T] (the driving mouth signal, for evaluation); index.
    With ``crop_frames`` each item is a random window of that length (training), drawn from
    torch's global RNG so that resumed runs see the same windows.
    """

    def __init__(self, clips: list[Clip], mel: A.MelFrames, audio_mean: np.ndarray, audio_std: np.ndarray,
                 crop_frames: int = 0, lead_frames: int = 1, audio_margin: int = 0):
        if not clips:
            raise DataError("no clips to build a dataset from")
        self.clips, self.crop, self.margin = clips, int(crop_frames), int(audio_margin)
        mean = torch.as_tensor(np.asarray(audio_mean, np.float32))
        std = torch.as_tensor(np.asarray(audio_std, np.float32))
        self.audio = [pad_context(((mel(c.audio, c.n_frames) - mean) / std).float(), self.margin) for c in clips]
        self.motion = [torch.from_numpy(np.stack([c.controls[k] for k in Fc.MOTION_COLUMNS], -1).astype(np.float32))
                       if c.controls is not None and all(k in c.controls for k in Fc.MOTION_COLUMNS)
                       else torch.zeros(c.n_frames, len(Fc.MOTION_COLUMNS)) for c in clips]
        self.mouth = [torch.from_numpy(mouth_signal(c, lead_frames).astype(np.float32)) for c in clips]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c = self.clips[i]
        s, t = 0, c.n_frames
        if self.crop and self.crop < c.n_frames:
            s = int(torch.randint(0, c.n_frames - self.crop + 1, ()).item())
            t = self.crop
        frames = torch.from_numpy(c.frames[s:s + t]).permute(0, 3, 1, 2).float() / 127.5 - 1
        return {"frames": frames, "ref": torch.from_numpy(c.ref).permute(2, 0, 1).float() / 127.5 - 1,
                "audio": self.audio[i][s:s + t + 2 * self.margin], "motion": self.motion[i][s:s + t],
                "has_motion": torch.tensor(float(c.controls is not None)), "mouth": self.mouth[i][s:s + t],
                "index": torch.tensor(i)}


def pad_context(feats: torch.Tensor, margin: int) -> torch.Tensor:
    """[T, F] -> [T + 2 margin, F], repeating the first and last frame (the model's speech context)."""
    if margin <= 0:
        return feats
    return torch.cat([feats[:1].expand(margin, -1), feats, feats[-1:].expand(margin, -1)])


def audio_stats(clips: list[Clip], mel: A.MelFrames) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the log-mel features over training clips."""
    feats = torch.cat([mel(c.audio, c.n_frames) for c in clips])
    return feats.mean(0).numpy(), feats.std(0).clamp_min(1e-3).numpy()


__all__ = ["Clip", "ClipDataset", "LAYOUT", "SPLITS", "audio_stats", "crop_resize", "cut", "embedded_clips",
           "folder_clips", "folder_videos", "generate_clips", "load_video", "mouth_signal", "pad_context",
           "split_utterances", "write_clips"]
