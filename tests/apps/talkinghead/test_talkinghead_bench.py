"""`ssmkit bench talkinghead` runs end to end on tiny shapes and prints one row per variant."""

from __future__ import annotations

from ssmkit_apps.talkinghead.bench import bench_talkinghead


def test_bench_reports_train_and_sampling_rows(capsys):
    argv = ["--variants", "talkinghead_unet_tiny", "--batch", "1", "--frames", "2", "--sample-frames", "2",
            "--steps", "1", "--reps", "1"]
    assert bench_talkinghead(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:3] for line in out.splitlines() if line.startswith("| talkinghead")]
    want = [("talkinghead_unet_tiny", "on"), ("talkinghead_unet_tiny", "off")]
    assert [(m.strip(), d.strip()) for m, d in rows] == want
    assert "sample frames/s" in out and "DDIM steps" in out
