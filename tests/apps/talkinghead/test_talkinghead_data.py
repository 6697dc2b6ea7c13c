"""mp4/wav/CSV files, the folder (HDTF/VoxCeleb-style) loader on generated fixture clips, splits."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import soundfile as sf

from ssmkit.errors import DataError
from ssmkit_apps.talkinghead import audio as A
from ssmkit_apps.talkinghead import data as D
from ssmkit_apps.talkinghead import face as Fc
from ssmkit_apps.talkinghead import videoio as V


def _face_frames(n: int, seed: int = 3) -> tuple[np.ndarray, dict]:
    ctl = Fc.neutral_controls(n)
    ctl["mouth"] = (0.5 + 0.5 * np.sin(np.arange(n) / 2)).astype(np.float32)
    ctl["jaw"] = 0.8 * ctl["mouth"]
    return Fc.render_clip(Fc.make_identity("drawn", seed), ctl), ctl


def test_mp4_round_trip_frame_count_and_audio_length(tmp_path):
    frames, _ = _face_frames(20)
    speech = A.speech_corpus("pocketsphinx")[0].samples[: 20 * A.SAMPLES_PER_FRAME]
    out = V.write_mp4(tmp_path / "clip.mp4", frames, speech)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temporary left behind
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.audio[0].codec_context.name == "aac"
    back, fps, audio = V.read_mp4(out)
    assert back.shape == frames.shape and fps == 25.0
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 4  # H.264 at crf 16 is close to lossless
    assert abs(len(audio) - len(speech)) < 64  # 0.8 s of speech, within 4 ms
    lag = np.argmax(np.correlate(audio[:8000], speech[:8000], "full")) - 7999
    assert abs(lag) <= 2  # the track starts with the video


def test_failed_write_leaves_no_mp4(tmp_path, monkeypatch):
    frames, _ = _face_frames(6)

    def broken(*args, **kwargs):
        raise RuntimeError("encoder crashed")

    real = av.VideoFrame.from_ndarray
    calls = {"n": 0}

    def crash_late(arr, format):
        calls["n"] += 1
        if calls["n"] == 4:  # the container exists and holds packets by now
            broken()
        return real(arr, format=format)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", crash_late)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        V.write_mp4(tmp_path / "out.mp4", frames)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="even height and width"):
        V.write_mp4(tmp_path / "odd.mp4", frames[:, :63])


def test_control_csv_round_trip_and_errors(tmp_path):
    _, ctl = _face_frames(5)
    ctl.update(Fc.expression_signal(5, np.random.default_rng(0)))
    V.write_controls(tmp_path / "c.csv", ctl, Fc.CONTROL_COLUMNS)
    back = V.read_controls(tmp_path / "c.csv", Fc.MOTION_COLUMNS)
    np.testing.assert_allclose(back["head_roll"], ctl["head_roll"], atol=1e-5)
    (tmp_path / "bad.csv").write_text("frame,blink,brow,head_dx,head_dy,head_roll\n0,0,0,0,x,0\n")
    with pytest.raises(DataError, match=r"row 2, column 'head_dy': 'x' is not a number"):
        V.read_controls(tmp_path / "bad.csv", Fc.MOTION_COLUMNS)
    (tmp_path / "cols.csv").write_text("frame,blink\n0,0\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['brow'"):
        V.read_controls(tmp_path / "cols.csv", Fc.MOTION_COLUMNS)


def _fixture_video(path, n_src: int, fps: int, size: tuple[int, int], with_track: bool) -> np.ndarray:
    """A talking face pasted into a larger frame at another frame rate, as a camera would record it."""
    h, w = size
    face, _ = _face_frames(n_src)
    big = np.full((n_src, h, w, 3), 90, np.uint8)
    y0, x0 = (h - 64) // 2, (w - 64) // 2
    big[:, y0:y0 + 64, x0:x0 + 64] = face
    speech = A.speech_corpus("pocketsphinx")[1].samples[: int(n_src / fps * A.SAMPLE_RATE)]
    V.write_mp4(path, big, speech if with_track else None, fps=fps)
    return speech


def test_folder_loader_resamples_crops_and_reads_both_audio_layouts(tmp_path):
    root = tmp_path / "hdtf"
    root.mkdir()
    speech = _fixture_video(root / "WRA_a.mp4", 45, 30, (80, 96), with_track=True)  # audio track inside
    _fixture_video(root / "WRA_b.mp4", 45, 30, (80, 96), with_track=False)
    sf.write(root / "WRA_b.wav", np.stack([speech, speech], 1), 44_100)  # a stereo wav beside it
    (root / "WRA_b.json").write_text(json.dumps({"box": [16, 8, 80, 72]}))  # exactly the pasted face
    a = D.load_video(root / "WRA_a.mp4")
    assert a.frames.shape == (37, 64, 64, 3)  # 45 frames at 30 fps = 1.5 s = 37 whole frames at 25 fps
    assert len(a.audio) == 37 * A.SAMPLES_PER_FRAME and a.controls is None
    b = D.load_video(root / "WRA_b.mp4")
    assert b.speech.endswith("WRA_b.wav")
    face, _ = _face_frames(45)
    assert np.abs(b.frames[0].astype(int) - face[0].astype(int)).mean() < 6  # the box crops the face back
    clips = D.cut(a, 16, 8)
    assert [c.n_frames for c in clips] == [16, 16, 16] and len(clips[1].audio) == 16 * A.SAMPLES_PER_FRAME
    # the seeded split keeps whole videos apart
    for i in range(3):
        _fixture_video(root / f"extra_{i}.mp4", 20, 25, (64, 64), with_track=True)
    parts = {s: D.folder_videos(root, s, 0, 0.2, 0.2) for s in D.SPLITS}
    names = [p.name for s in D.SPLITS for p in parts[s]]
    assert len(names) == len(set(names)) == 5 and all(parts.values())
    (root / "train").mkdir()
    with pytest.raises(DataError, match="holds no .mp4 files"):
        D.folder_videos(root, "train", 0, 0.2, 0.2)


def test_embedded_split_holds_out_utterances_and_renders_consistent_clips():
    corpus = A.speech_corpus("pocketsphinx")
    parts = D.split_utterances(corpus, seed=0, val_fraction=0.15, test_fraction=0.2)
    names = {s: {u.name for u in parts[s]} for s in parts}
    assert not (names["test"] & names["train"]) and not (names["val"] & names["train"])
    assert names == {s: {u.name for u in D.split_utterances(corpus, 0, 0.15, 0.2)[s]} for s in parts}  # seeded
    total = sum(u.seconds for u in corpus)
    assert sum(u.seconds for u in parts["test"]) >= 0.2 * total  # fractions of the speech's duration
    assert sum(u.seconds for u in parts["val"]) >= 0.15 * total and len(parts["train"]) >= 5
    clips = D.generate_clips(parts["test"][:1], "test", clip_frames=16, hop=16, identities=1, portrait_fraction=0.5,
                             lead_frames=1, seed=0, max_clips=2)
    assert len(clips) == 2
    for c in clips:
        assert c.frames.shape == (16, 64, 64, 3) and len(c.audio) == 16 * A.SAMPLES_PER_FRAME
        assert set(c.controls) == set(Fc.CONTROL_COLUMNS) and all(len(v) == 16 for v in c.controls.values())
    mel = A.MelFrames(40)
    ds = D.ClipDataset(clips, mel, *D.audio_stats(clips, mel), crop_frames=8)
    item = ds[0]
    assert item["frames"].shape == (8, 3, 64, 64) and item["audio"].shape == (8, 160)
    assert item["motion"].shape == (8, 5) and float(item["has_motion"]) == 1.0
    assert -1 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1
