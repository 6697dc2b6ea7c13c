"""Speech for the talking-head app: where it comes from, how it is read, and what it drives.

Sources (nothing is downloaded):

- Debian's ``pocketsphinx-testdata`` ships recorded English speech, 16 kHz mono, under
  ``/usr/share/pocketsphinx/test/data/`` (``*.wav`` and headerless 16-bit ``*.raw``).
- Where that package is missing, eSpeak NG (the library inside the ``espeakng-loader`` wheel)
  synthesises sentences through its C API (``ctypes``), with several voices, rates and pitches.

Every waveform is float32 mono at :data:`SAMPLE_RATE`. Video runs at :data:`FPS`, so one video
frame spans :data:`SAMPLES_PER_FRAME` samples; frame ``t`` is samples ``[640 t, 640 (t + 1))``.

:func:`mouth_drive` turns speech into the articulation the demo faces follow (mouth opening,
jaw, lip spread), and :class:`MelFrames` turns it into the model's audio features, four 10 ms
log-mel frames per video frame.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ssmkit.errors import DataError

SAMPLE_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
HOP = 160  # 10 ms analysis hop: four hops per video frame
HOPS_PER_FRAME = SAMPLES_PER_FRAME // HOP
POCKETSPHINX_DIR = Path("/usr/share/pocketsphinx/test/data")
LEVEL_DBFS = -20.0  # active-speech RMS every waveform is brought to before it drives anything
SILENCE_PEAK = 1e-4  # a waveform whose peak stays below this is silent


@dataclass
class Speech:
    """One utterance: ``samples`` float32 [N] at SAMPLE_RATE, and where it came from."""

    name: str
    samples: np.ndarray
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def frame_count(n_samples: int) -> int:
    """Video frames covered by ``n_samples`` audio samples (whole frames only)."""
    return int(n_samples) // SAMPLES_PER_FRAME


# ------------------------------------------------------------------------------ reading audio


def resample(x: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """[N] float32 at ``sr`` -> [M] at ``target`` with torchaudio's band-limited resampler."""
    if sr == target:
        return x.astype(np.float32, copy=False)
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(sr), int(target)).numpy()


def load_audio(path: str | Path, *, allow_silent: bool = True) -> Speech:
    """Read a speech file with soundfile as float32 mono at SAMPLE_RATE.

    Stereo (or more channels) is averaged to mono and another sample rate is resampled with
    torchaudio; each fix is recorded in ``notes`` so commands can say what they did. An empty
    file, one shorter than a video frame, or one with NaN/inf samples raises :class:`DataError`;
    a silent one too unless ``allow_silent`` (then a note says the mouth will stay closed).
    """
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise DataError(f"audio file {str(p)!r} does not exist; expected a wav/flac/ogg speech file")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise DataError(f"audio file {str(p)!r} cannot be read by soundfile ({err}); "
                        "expected wav, flac or ogg") from None
    notes: list[str] = []
    if data.shape[0] == 0:
        raise DataError(f"audio file {str(p)!r} is empty (0 samples); expected speech of at least "
                        f"{1000 // FPS} ms (one video frame)")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataError(f"audio file {str(p)!r} holds {bad} NaN/inf samples (first at sample "
                        f"{int(np.argwhere(~np.isfinite(data))[0, 0])}); expected finite samples")
    if data.shape[1] > 1:
        notes.append(f"downmixed {data.shape[1]} channels to mono")
        data = data.mean(axis=1, keepdims=True)
    x = data[:, 0]
    if sr != SAMPLE_RATE:
        notes.append(f"resampled from {sr} Hz to {SAMPLE_RATE} Hz with torchaudio")
        x = resample(x, sr)
    if frame_count(len(x)) < 1:
        raise DataError(f"audio file {str(p)!r} lasts {1000 * len(x) / SAMPLE_RATE:.1f} ms; expected at least "
                        f"{1000 // FPS} ms (one video frame at {FPS} fps)")
    peak = float(np.abs(x).max())
    if peak < SILENCE_PEAK:
        if not allow_silent:
            raise DataError(f"audio file {str(p)!r} is silent (peak {peak:.2g} < {SILENCE_PEAK:g}); expected speech")
        notes.append(f"the audio is silent (peak {peak:.2g}); the mouth is driven by silence and stays closed")
    return Speech(p.stem, x.astype(np.float32), str(p), notes)


def normalize_level(x: np.ndarray, target_dbfs: float = LEVEL_DBFS) -> np.ndarray:
    """Scale ``x`` so its active-speech RMS (the loudest 50 % of 10 ms hops) is ``target_dbfs``.

    Recordings differ in gain; speech level is normalised first so that loudness means the
    same to the face generator and to the model. Silence is returned unchanged, and the
    result is clipped to [-1, 1].
    """
    if len(x) < HOP or float(np.abs(x).max()) < SILENCE_PEAK:
        return x.astype(np.float32, copy=True)
    n = len(x) // HOP
    rms = np.sqrt(np.mean(x[: n * HOP].reshape(n, HOP).astype(np.float64) ** 2, axis=1) + 1e-12)
    active = np.sort(rms)[n // 2:]
    level = float(np.sqrt(np.mean(active**2)))
    gain = 10 ** (target_dbfs / 20) / max(level, 1e-9)
    return np.clip(x * gain, -1.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------ speech sources


def pocketsphinx_speech(root: str | Path = POCKETSPHINX_DIR) -> list[Speech]:
    """The recorded utterances of Debian's pocketsphinx-testdata (16 kHz mono), sorted by name."""
    import soundfile as sf

    base = Path(root)
    out: list[Speech] = []
    for f in sorted(base.rglob("*.wav")) + sorted(base.rglob("*.raw")):
        if f.suffix == ".wav":
            x, sr = sf.read(str(f), dtype="float32", always_2d=True)
            x = resample(x.mean(axis=1), sr)
        else:  # pocketsphinx's raw files: headerless 16-bit little-endian mono at 16 kHz
            x = np.fromfile(f, dtype="<i2").astype(np.float32) / 32768.0
        if frame_count(len(x)) >= 8:
            out.append(Speech(f.relative_to(base).as_posix(), x, f"pocketsphinx-testdata:{f.relative_to(base)}"))
    return out


# Sentences for the synthesised corpus (written for this package; any text works).
SENTENCES = (
    "The small boat drifted slowly towards the harbour at dawn.",
    "Please open the window before the meeting starts.",
    "Seven bright lamps were hanging above the kitchen table.",
    "We walked along the river and talked about the weather.",
    "A quiet voice answered from the far end of the hall.",
    "Bring me the blue folder and a cup of hot tea.",
    "The children laughed when the puppy chased its tail.",
    "Nobody expected the concert to finish so early.",
    "Her old bicycle squeaked on every turn of the road.",
    "Look at the moon, it is round and yellow tonight.",
    "Fresh bread smells wonderful on a cold morning.",
    "He wrote the numbers down and checked them twice.",
    "Our train leaves from platform nine at half past four.",
    "Mountains covered in snow rose behind the village.",
    "I would like to order soup, salad and some water.",
    "The museum opens its new gallery on Monday.",
    "Wind and rain kept the fishermen at home all week.",
    "She painted the door a cheerful shade of orange.",
    "Every student must return the library books by Friday.",
    "The engineer measured the bridge with great care.",
    "Oh, you are right, that is a wonderful idea.",
    "Keep the receipt in case you need to change the shoes.",
    "Thousands of birds flew south over the valley.",
    "Who left the garden gate open again this evening?",
)
VOICES = ("en", "en+f3", "en+m3", "en-us", "en-us+f2", "en+m1", "en+f4", "en-gb-x-rp")


class _ESpeak:
    """Minimal ctypes binding of eSpeak NG's synchronous synthesis API (one per process)."""

    _instance: _ESpeak | None = None

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ModuleNotFoundError:
            raise DataError("no speech available: pocketsphinx-testdata is not installed and the espeakng-loader "
                            "wheel is missing; install one (apt install pocketsphinx-testdata, or "
                            "pip install 'ssmkit[talkinghead]')") from None
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        # AUDIO_OUTPUT_SYNCHRONOUS = 2: the callback receives the samples before Synth returns.
        self.rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.rate <= 0:
            raise DataError(f"eSpeak NG failed to initialise (returned {self.rate})")
        self._chunks: list[np.ndarray] = []
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = proto(self._collect)  # kept on self: the library holds only a raw pointer
        lib.espeak_SetSynthCallback(self._callback)
        self.lib = lib

    def _collect(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    @classmethod
    def get(cls) -> _ESpeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def synth(self, text: str, voice: str = "en", rate: int = 165, pitch: int = 50) -> np.ndarray:
        """[N] float32 speech at SAMPLE_RATE for ``text``."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise DataError(f"eSpeak NG has no voice {voice!r}")
        self.lib.espeak_SetParameter(1, int(rate), 0)  # espeakRATE, words per minute
        self.lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH, 0..100
        self._chunks = []
        raw = text.encode("utf-8") + b"\0"
        # position type 1 = POS_CHARACTER, flags 1 = espeakCHARS_UTF8
        err = self.lib.espeak_Synth(raw, len(raw), 0, 1, 0, 1, None, None)
        self.lib.espeak_Synchronize()
        if err != 0 or not self._chunks:
            raise DataError(f"eSpeak NG could not synthesise {text!r} (error {err})")
        x = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        return resample(x, self.rate)


def espeak_speech(n: int = len(SENTENCES), seed: int = 0) -> list[Speech]:
    """``n`` synthesised utterances: the built-in sentences with seeded voices, rates and pitches."""
    engine = _ESpeak.get()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        voice = VOICES[int(rng.integers(len(VOICES)))]
        rate, pitch = int(rng.integers(140, 190)), int(rng.integers(30, 71))
        text = SENTENCES[i % len(SENTENCES)]
        x = engine.synth(text, voice, rate, pitch)
        out.append(Speech(f"espeak-{i:03d}", x, f"espeak-ng:{voice}:rate{rate}:pitch{pitch}:{text}"))
    return out


def speech_corpus(kind: str = "auto", root: str | Path = POCKETSPHINX_DIR, n_synth: int = len(SENTENCES),
                  seed: int = 0) -> list[Speech]:
    """Level-normalised utterances: ``kind`` is pocketsphinx, espeak, both, or auto (pocketsphinx
    where installed, else espeak)."""
    have_ps = Path(root).is_dir() and any(Path(root).rglob("*.wav"))
    if kind == "auto":
        kind = "pocketsphinx" if have_ps else "espeak"
    if kind in ("pocketsphinx", "both") and not have_ps:
        raise DataError(f"data.speech={kind} needs Debian's pocketsphinx-testdata ({str(root)!r} holds no wav files); "
                        "install it (apt install pocketsphinx-testdata) or use data.speech=espeak")
    out: list[Speech] = []
    if kind in ("pocketsphinx", "both"):
        out += pocketsphinx_speech(root)
    if kind in ("espeak", "both"):
        out += espeak_speech(n_synth, seed)
    if kind not in ("pocketsphinx", "espeak", "both"):
        raise DataError(f"unknown speech source {kind!r}; expected auto, pocketsphinx, espeak or both")
    for s in out:
        s.samples = normalize_level(s.samples)
    return out


# ------------------------------------------------------------------------- audio -> articulation


def _one_pole(x: np.ndarray, attack: float, release: float) -> np.ndarray:
    """Asymmetric first-order smoothing: rises with rate ``attack``, falls with ``release``."""
    y = np.empty_like(x)
    prev = float(x[0]) if len(x) else 0.0
    for i, v in enumerate(x):
        a = attack if v > prev else release
        prev = prev + a * (float(v) - prev)
        y[i] = prev
    return y


def _shift(x: np.ndarray, lead: int) -> np.ndarray:
    """y[t] = x[t + lead], edge-padded (a positive lead makes y anticipate x)."""
    if lead == 0:
        return x.copy()
    if lead > 0:
        return np.concatenate([x[lead:], np.repeat(x[-1:], lead)])
    return np.concatenate([np.repeat(x[:1], -lead), x[:lead]])


def mouth_drive(samples: np.ndarray, lead_frames: int = 1) -> dict[str, np.ndarray]:
    """Articulation of a face speaking ``samples`` (level-normalised, SAMPLE_RATE): arrays [T].

    - ``mouth`` in [0, 1]: opening, from the energy of the 250-3000 Hz band (vowels and
      voiced sounds open the mouth; fricatives such as /s/ put energy higher up and do not),
      in dB against a fixed floor, because levels were normalised beforehand.
    - ``lip_spread`` in [0, 1]: the spectral centroid of that band; front vowels (/i/) push
      energy up and spread the lips, rounded back vowels (/u/, /o/) keep it low.
    - ``jaw`` in [0, 1]: a slower, heavier follower of the opening.

    Articulators have mass: the opening rises faster than it falls (attack 0.65, release 0.35
    per frame) and the lips move ``lead_frames`` frames (40 ms each) ahead of the sound, as
    visible articulation precedes the acoustic onset.
    """
    n_frames = frame_count(len(samples))
    if n_frames < 1:
        raise ValueError(f"mouth_drive needs at least {SAMPLES_PER_FRAME} samples; got {len(samples)}")
    x = torch.from_numpy(np.ascontiguousarray(samples[: n_frames * SAMPLES_PER_FRAME], dtype=np.float32))
    spec = torch.stft(x, n_fft=512, hop_length=HOP, win_length=400, window=torch.hann_window(400),
                      center=True, return_complex=True).abs().pow(2)  # [257, hops]
    spec = spec[:, : n_frames * HOPS_PER_FRAME].numpy().astype(np.float64)
    freqs = np.linspace(0, SAMPLE_RATE / 2, spec.shape[0])
    band = (freqs >= 250) & (freqs <= 3000)
    e_band = spec[band].sum(0) / (512 * 400 / 4)  # power of the band, roughly in full-scale units
    centroid = (spec[band] * freqs[band, None]).sum(0) / (spec[band].sum(0) + 1e-12)
    hop_db = 10 * np.log10(e_band + 1e-10)
    # Frame values: the mean over the frame's four hops.
    db = hop_db.reshape(n_frames, HOPS_PER_FRAME).mean(1)
    cen = centroid.reshape(n_frames, HOPS_PER_FRAME).mean(1)
    target = np.clip((db + 52.0) / 34.0, 0.0, 1.0) ** 1.3
    mouth = _shift(_one_pole(target, 0.65, 0.35), lead_frames)
    jaw = 0.85 * _shift(_one_pole(target, 0.35, 0.25), lead_frames)
    voiced = np.clip((db + 45.0) / 15.0, 0.0, 1.0)
    spread_raw = np.clip((cen - 350.0) / 900.0, 0.0, 1.0)
    spread = voiced * spread_raw + (1 - voiced) * 0.4  # lips at rest in silence
    spread = _shift(_one_pole(spread, 0.5, 0.5), lead_frames)
    return {"mouth": mouth.astype(np.float32), "jaw": jaw.astype(np.float32),
            "lip_spread": spread.astype(np.float32), "energy_db": db.astype(np.float32)}


# ------------------------------------------------------------------------- model audio features


class MelFrames:
    """Log-mel features aligned to video frames: [N] samples -> [T, HOPS_PER_FRAME * n_mels].

    torchaudio's MelSpectrogram with a 25 ms window and a 10 ms hop gives four mel frames per
    40 ms video frame; frame ``t`` gets the four that start inside it, stacked.
    """

    def __init__(self, n_mels: int = 40):
        import torchaudio

        self.n_mels = n_mels
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=512, win_length=400,
                                                        hop_length=HOP, f_min=50.0, f_max=7600.0, n_mels=n_mels,
                                                        center=True, power=2.0)

    @property
    def dim(self) -> int:
        return HOPS_PER_FRAME * self.n_mels

    def __call__(self, samples: np.ndarray | torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        x = torch.as_tensor(samples, dtype=torch.float32)
        t = frame_count(x.shape[-1]) if n_frames is None else int(n_frames)
        need = t * SAMPLES_PER_FRAME
        if x.shape[-1] < need:
            x = torch.nn.functional.pad(x, (0, need - x.shape[-1]))
        m = self.mel(x[:need])[:, : t * HOPS_PER_FRAME]  # [n_mels, 4T]
        m = torch.log(m + 1e-6)
        return m.T.reshape(t, HOPS_PER_FRAME * self.n_mels).contiguous()


__all__ = ["FPS", "HOPS_PER_FRAME", "LEVEL_DBFS", "MelFrames", "SAMPLES_PER_FRAME", "SAMPLE_RATE", "Speech",
           "espeak_speech", "frame_count", "load_audio", "mouth_drive", "normalize_level", "pocketsphinx_speech",
           "resample", "speech_corpus"]
