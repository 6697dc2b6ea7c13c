"""A tiny make-demo-data -> train -> evaluate -> generate run through the CLI, and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
from PIL import Image

from ssmkit.cli import main
from ssmkit.registry import list_apps
from ssmkit_apps.talkinghead import audio as A
from ssmkit_apps.talkinghead import videoio as V

TINY = ["--set", "data.max_clips=3", "--set", "data.max_eval_clips=2", "--set", "data.clip_frames=16",
        "--set", "data.train_frames=4", "--set", "model.name=talkinghead_unet_tiny", "--set", "model.n_mels=16"]


def test_tiny_run_through_the_cli(tmp_path, capsys, standin_i3d):
    assert "talkinghead" in list_apps()
    data = tmp_path / "clips"
    assert main(["talkinghead", "make-demo-data", str(data), *TINY]) == 0
    meta = json.loads((data / "meta.json").read_text())
    assert meta["splits"]["train"]["clips"] == 3 and meta["splits"]["test"]["clips"] == 2
    assert not set(meta["splits"]["test"]["speech"]) & set(meta["splits"]["train"]["speech"])  # held-out audio
    for suffix in (".mp4", ".wav", ".csv", ".png"):
        assert (data / "test" / f"test_0000{suffix}").is_file()
    assert main(["talkinghead", "make-demo-data", str(data), *TINY]) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err

    run = tmp_path / "runs" / "talkinghead" / "tiny"
    assert main(["talkinghead", "train", "--quiet", *TINY, "--set", f"data.root={data}", "--set",
                 f"run.root={tmp_path / 'runs'}", "--set", "run.id=tiny", "--set", "train.max_steps=2",
                 "--set", "train.batch_size=2", "--set", "eval.steps=2", "--set", "eval.max_clips=1"]) == 0
    state = json.loads((run / "app_state.json").read_text())
    assert len(state["audio_mean"]) == 64 and state["fps"] == 25
    assert main(["talkinghead", "evaluate", "--run", str(run), "--split", "test"]) == 0
    res = json.loads((run / "eval_test.json").read_text())
    for key in ("loss", "psnr_both", "ssim_both", "lipsync_both", "lipsync_motion", "flicker_both",
                "lipsync_ground_truth"):
        assert key in res, key
    assert res["lipsync_ground_truth"] > 0.8  # the measure reads the mouths of the rendered truth
    assert (run / "plots" / "frame_strip.png").stat().st_size > 5_000
    assert len(list((run / "samples").glob("test_0000_*_both.mp4"))) == 1
    report = (run / "report.md").read_text()
    assert "FID: unavailable" in report and "FVD: unavailable" in report and "SyncNet (LSE-C/LSE-D): unavailable" \
        in report and "fvd" not in res
    # with a local (stand-in) I3D, evaluate computes FVD
    capsys.readouterr()
    assert main(["talkinghead", "evaluate", "--run", str(run), "--split", "test", "--set",
                 f"eval.fvd_weights={standin_i3d}", "--set", "eval.modes=[both]", "--set", "eval.max_clips=0"]) == 0
    res = json.loads((run / "eval_test.json").read_text())
    assert res["fvd"] >= 0 and "FVD: computed" in capsys.readouterr().out

    # generate: a stereo 44.1 kHz wav, an RGBA reference, the clip's expression CSV
    speech, sr = sf.read(data / "test" / "test_0000.wav", dtype="float32")
    wav = tmp_path / "speech.wav"
    stereo = np.stack([speech, speech], 1)
    import torch
    import torchaudio.functional as AF

    stereo = AF.resample(torch.from_numpy(stereo.T.copy()), sr, 44_100).numpy().T
    sf.write(wav, stereo, 44_100)
    ref = tmp_path / "ref.png"
    Image.open(data / "test" / "test_0000.png").convert("RGBA").resize((128, 128)).save(ref)
    out = tmp_path / "gen" / "clip.mp4"
    capsys.readouterr()
    args = ["talkinghead", "generate", "--run", str(run), "--ref", str(ref), "--audio", str(wav),
            "--motion", str(data / "test" / "test_0000.csv"), "--out", str(out), "--steps", "2",
            "--strip", str(tmp_path / "gen" / "strip.png")]
    assert main(args) == 0
    said = capsys.readouterr().out
    for note in ("downmixed 2 channels", "resampled from 44100 Hz", "from mode RGBA to RGB", "from 128x128 to 64x64"):
        assert note in said, note
    frames, fps, audio = V.read_mp4(out)
    assert frames.shape == (16, 64, 64, 3) and fps == 25.0
    assert abs(len(audio) - 16 * A.SAMPLES_PER_FRAME) < 64
    assert (tmp_path / "gen" / "strip.png").is_file()
    assert main(args) == 2  # the mp4 exists: refused without --overwrite

    # bad inputs: a clear error, and no mp4 under the requested name
    short = tmp_path / "short.csv"
    short.write_text("\n".join((data / "test" / "test_0000.csv").read_text().splitlines()[:10]) + "\n")
    bad = tmp_path / "bad.mp4"
    assert main([*args[:8], "--motion", str(short), "--out", str(bad), "--steps", "2"]) == 2
    assert "has 9 rows, but the audio" in capsys.readouterr().err and not bad.exists()
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16_000)
    assert main(["talkinghead", "generate", "--run", str(run), "--ref", str(ref), "--audio",
                 str(tmp_path / "empty.wav"), "--out", str(bad)]) == 2
    assert "is empty (0 samples)" in capsys.readouterr().err and not bad.exists()
    sf.write(tmp_path / "silent.wav", np.zeros(8000, np.float32), 16_000)
    assert main(["talkinghead", "generate", "--run", str(run), "--ref", str(ref), "--audio",
                 str(tmp_path / "silent.wav"), "--out", str(bad), "--steps", "1"]) == 0
    assert "silent" in capsys.readouterr().out and V.read_mp4(bad)[0].shape[0] == 12
    assert main(["talkinghead", "generate", "--run", str(run), "--ref", str(ref), "--audio", str(wav),
                 "--mode", "motion", "--out", str(tmp_path / "m.mp4")]) == 2
    assert "--mode motion needs --motion" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries


def test_study_table_and_plot(tmp_path):
    from ssmkit_apps.talkinghead.study import VARIANTS, plot_lipsync, study_table

    assert list(VARIANTS) == ["full", "no_mask_drop", "audio_branch", "motion_branch"]
    res = {"full": {"lipsync_both": 0.8, "lipsync_motion": -0.1, "psnr_both": 24.0, "ssim_both": 0.8,
                    "flicker_both": 1.5, "loss": 0.01, "lipsync_ground_truth": 0.99},
           "motion_branch": {"lipsync_both": float("nan"), "lipsync_motion": 0.02}}
    table = study_table(res, {"full": 600.0})
    lines = table.splitlines()
    assert lines[2].startswith("| full | 0.800 | -0.100 | 24.000 |") and lines[2].endswith("| 10 min |")
    assert "| motion_branch | n/a | 0.020 |" in lines[3]
    plot_lipsync(tmp_path / "l.png", res)
    assert (tmp_path / "l.png").stat().st_size > 5_000
