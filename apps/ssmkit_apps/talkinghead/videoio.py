"""Files of the talking-head app: mp4 video (PyAV) with its audio track, wav (soundfile), control CSVs.

- :func:`write_mp4` encodes frames as H.264 (yuv420p) and, when given, muxes the speech as AAC
  into the same file. It writes through :func:`ssmkit.engine.files.atomic_path`, so an
  interrupted or failed encode never leaves a half-written mp4 under the final name.
- :func:`read_mp4` decodes frames as uint8 [T, H, W, 3] and the first audio track (if any) as
  float32 mono, resampled to 16 kHz.
- Control CSVs hold one row per video frame: ``frame`` then the columns of ``face.CONTROL_COLUMNS``
  (or only the expression columns for ``generate --motion``).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ssmkit.engine.files import atomic_path
from ssmkit.errors import DataError
from ssmkit_apps.talkinghead.audio import FPS, SAMPLE_RATE, resample


def write_mp4(path: str | Path, frames: np.ndarray, audio: np.ndarray | None = None, fps: int = FPS,
              sample_rate: int = SAMPLE_RATE, crf: int = 16) -> Path:
    """Write uint8 frames [T, H, W, 3] (H, W even) and optional mono audio [N] to ``path`` atomically."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_mp4 needs uint8 frames [T, H, W, 3]; got {frames.dtype} {list(frames.shape)}")
    if frames.shape[0] < 1 or frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"write_mp4 needs at least one frame with even height and width; got {list(frames.shape)}")
    final = Path(path)
    with atomic_path(final) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            vs = out.add_stream("libx264", rate=Fraction(fps))
            vs.width, vs.height = int(frames.shape[2]), int(frames.shape[1])
            vs.pix_fmt = "yuv420p"
            vs.options = {"crf": str(crf), "preset": "medium"}
            astream = None
            if audio is not None:
                astream = out.add_stream("aac", rate=sample_rate)
                astream.layout = "mono"
            for img in frames:
                for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                    out.mux(packet)
            for packet in vs.encode():
                out.mux(packet)
            if astream is not None:
                pcm = np.clip(np.asarray(audio, dtype=np.float32), -1, 1)
                step = 1024  # AAC frame size
                for start in range(0, len(pcm), step):
                    chunk = pcm[start:start + step]
                    af = av.AudioFrame.from_ndarray(chunk[None, :].astype(np.float32), format="fltp", layout="mono")
                    af.sample_rate = sample_rate
                    af.pts = start
                    af.time_base = Fraction(1, sample_rate)
                    for packet in astream.encode(af):
                        out.mux(packet)
                for packet in astream.encode():
                    out.mux(packet)
    return final


def read_mp4(path: str | Path, with_audio: bool = True) -> tuple[np.ndarray, float, np.ndarray | None]:
    """(frames uint8 [T, H, W, 3], fps, audio float32 [N] at 16 kHz or None) of a video file."""
    import av

    p = Path(path)
    if not p.is_file():
        raise DataError(f"video file {str(p)!r} does not exist")
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise DataError(f"{str(p)!r} holds no video stream; expected an mp4 with H.264 (or any FFmpeg) video")
            vstream = container.streams.video[0]
            rate = vstream.average_rate or vstream.guessed_rate or Fraction(FPS)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(vstream)]
        audio = None
        if with_audio:
            with av.open(str(p)) as container:
                if container.streams.audio:
                    astream = container.streams.audio[0]
                    chunks, sr = [], astream.rate or SAMPLE_RATE
                    for frame in container.decode(astream):
                        arr = frame.to_ndarray().astype(np.float32)
                        if frame.format.is_planar:
                            arr = arr.mean(0)  # [channels, n] -> mono
                        else:
                            arr = arr.reshape(-1, len(frame.layout.channels)).mean(1)
                        if np.issubdtype(frame.to_ndarray().dtype, np.integer):
                            arr = arr / float(np.iinfo(frame.to_ndarray().dtype).max)
                        chunks.append(arr)
                    if chunks:
                        pcm = np.concatenate(chunks)
                        if astream.duration and astream.time_base:
                            # The encoder pads its last frame; the stream's duration says where speech ends.
                            pcm = pcm[: int(round(float(astream.duration * astream.time_base) * sr))]
                        audio = resample(pcm, int(sr))
    except av.error.FFmpegError as err:
        raise DataError(f"{str(p)!r} cannot be decoded ({err}); expected an mp4 video") from None
    if not frames:
        raise DataError(f"{str(p)!r} holds no video frames")
    return np.stack(frames), float(rate), audio


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM wav through soundfile, written atomically."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(np.asarray(audio, dtype=np.float32), -1, 1), sample_rate, subtype="PCM_16")
    return Path(path)


def write_controls(path: str | Path, controls: dict[str, np.ndarray], columns: tuple[str, ...]) -> Path:
    """A CSV with ``frame`` and ``columns`` (one row per frame), written atomically."""
    n = len(controls[columns[0]])
    rows = ["frame," + ",".join(columns)]
    rows += [f"{i}," + ",".join(f"{float(controls[c][i]):.5f}" for c in columns) for i in range(n)]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(rows) + "\n")
    return Path(path)


def read_controls(path: str | Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read ``columns`` (float32 [T] each) from a control CSV; other columns are ignored.

    Missing columns, non-numeric or non-finite cells raise :class:`DataError` naming the file,
    column and row.
    """
    import csv

    p = Path(path)
    if not p.is_file():
        raise DataError(f"control file {str(p)!r} does not exist; expected a CSV with columns {', '.join(columns)}")
    with open(p, newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{str(p)!r} is empty; expected a header row with {', '.join(columns)}") from None
        body = [r for r in reader if any(c.strip() for c in r)]
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{str(p)!r} lacks column(s) {missing}; expected {', '.join(columns)} (got {header})")
    if not body:
        raise DataError(f"{str(p)!r} has a header but no rows; expected one row per video frame")
    out: dict[str, np.ndarray] = {}
    for c in columns:
        j = header.index(c)
        vals = np.empty(len(body), np.float32)
        for i, row in enumerate(body):
            try:
                vals[i] = float(row[j])
            except (ValueError, IndexError):
                cell = row[j] if j < len(row) else "<missing>"
                raise DataError(f"{str(p)!r} row {i + 2}, column {c!r}: {cell!r} is not a number") from None
            if not np.isfinite(vals[i]):
                raise DataError(f"{str(p)!r} row {i + 2}, column {c!r}: {row[j]!r} is not finite")
        out[c] = vals
    return out


__all__ = ["read_controls", "read_mp4", "write_controls", "write_mp4", "write_wav"]
