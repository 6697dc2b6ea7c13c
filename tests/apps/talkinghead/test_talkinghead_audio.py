"""Speech sources, reading (downmix, resampling, empty/silent/NaN audio), articulation and mel features."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ssmkit.errors import DataError
from ssmkit_apps.talkinghead import audio as A


def _tone(seconds: float, sr: int, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_44k_is_downmixed_and_resampled_with_notes(tmp_path):
    left, right = _tone(0.5, 44_100), _tone(0.5, 44_100, 330.0)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 44_100)
    speech = A.load_audio(tmp_path / "s.wav")
    assert speech.samples.dtype == np.float32 and speech.samples.ndim == 1
    assert abs(len(speech.samples) - 8000) <= 1  # 0.5 s at 16 kHz
    assert any("downmixed 2 channels" in n for n in speech.notes)
    assert any("resampled from 44100 Hz to 16000 Hz" in n for n in speech.notes)
    # the downmix is the channel mean: a 220 Hz + 330 Hz mixture, not one channel
    spec = np.abs(np.fft.rfft(speech.samples))
    freqs = np.fft.rfftfreq(len(speech.samples), 1 / 16_000)
    top = sorted(freqs[np.argsort(spec)[-2:]])
    assert abs(top[0] - 220) < 5 and abs(top[1] - 330) < 5


def test_empty_short_silent_and_nan_audio(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros((0,), np.float32), 16_000)
    with pytest.raises(DataError, match=r"empty.wav' is empty \(0 samples\)"):
        A.load_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "short.wav", np.full(100, 0.1, np.float32), 16_000)
    with pytest.raises(DataError, match="lasts 6.2 ms; expected at least 40 ms"):
        A.load_audio(tmp_path / "short.wav")
    sf.write(tmp_path / "silent.wav", np.zeros(16_000, np.float32), 16_000)
    assert "stays closed" in A.load_audio(tmp_path / "silent.wav").notes[0]
    with pytest.raises(DataError, match="is silent"):
        A.load_audio(tmp_path / "silent.wav", allow_silent=False)
    x = _tone(0.2, 16_000)
    x[50] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16_000, subtype="FLOAT")
    with pytest.raises(DataError, match="NaN/inf samples .first at sample 50"):
        A.load_audio(tmp_path / "nan.wav")
    with pytest.raises(DataError, match="does not exist"):
        A.load_audio(tmp_path / "missing.wav")


def test_espeak_synthesises_speech():
    speech = A.espeak_speech(2, seed=3)
    assert len(speech) == 2
    for s in speech:
        assert s.source.startswith("espeak-ng:") and 1.0 < s.seconds < 6.0
        assert np.abs(s.samples).max() > 0.05  # real sound, not silence


def test_pocketsphinx_corpus_is_real_speech():
    corpus = A.speech_corpus("pocketsphinx")
    assert len(corpus) >= 10
    assert sum(s.seconds for s in corpus) > 30
    assert all(s.source.startswith("pocketsphinx-testdata:") for s in corpus)


def test_mouth_follows_energy_with_lead_and_closes_in_silence():
    sr = A.SAMPLE_RATE
    x = np.zeros(sr, np.float32)  # 1 s: silence, then a vowel-like burst from 0.4 s to 0.6 s
    x[int(0.4 * sr):int(0.6 * sr)] = A.normalize_level(_tone(0.2, sr, 300.0))[: int(0.2 * sr)] * 0.5
    d0 = A.mouth_drive(x, lead_frames=0)
    d2 = A.mouth_drive(x, lead_frames=2)
    m = d0["mouth"]
    assert len(m) == 25 and m[:8].max() < 0.05 and m[11:14].min() > 0.3
    # the articulators have mass: the mouth is still closing after the sound stops
    assert m[15] > 0.02 and m[15] < m[14]
    # a lead of two frames moves the same curve two frames earlier
    np.testing.assert_allclose(d2["mouth"][:20], m[2:22], atol=1e-6)
    assert set(d0) == {"mouth", "jaw", "lip_spread", "energy_db"}
    assert (d0["jaw"] <= 1).all() and (d0["lip_spread"] >= 0).all()


def test_mel_features_are_aligned_to_frames():
    mel = A.MelFrames(40)
    x = np.zeros(10 * A.SAMPLES_PER_FRAME, np.float32)
    x[7 * A.SAMPLES_PER_FRAME:8 * A.SAMPLES_PER_FRAME] = 0.5 * np.sin(np.arange(A.SAMPLES_PER_FRAME) * 0.3)
    f = mel(x)
    assert f.shape == (10, 160)
    energy = f.mean(1)
    assert int(energy.argmax()) == 7  # the loud frame is frame 7
    assert mel(x[:-5], n_frames=10).shape == (10, 160)  # short input is padded to the frame count
