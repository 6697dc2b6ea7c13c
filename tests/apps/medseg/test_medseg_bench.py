"""`ssmkit bench medseg` runs end to end on tiny shapes and reports a row per model."""

from __future__ import annotations

import pytest

from ssmkit_apps.medseg.bench import bench_medseg


def test_bench_reports_every_model(capsys):
    argv = ["--patch", "16", "--volume", "16", "--batch", "1", "--steps", "1", "--models", "mambaclinix,unet",
            "--features", "8", "--stages", "3", "--hg-kernel", "3", "--d-state", "4", "--markdown"]
    assert bench_medseg(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and "model" not in line]
    assert rows == ["mambaclinix", "unet"]
    assert "sliding window 16^3 s" in out and "fwd+bwd s/step" in out


def test_bench_refuses_a_patch_swinunetr_cannot_take():
    with pytest.raises(SystemExit):
        bench_medseg(["--patch", "48", "--models", "swinunetr"])


@pytest.mark.gpu
def test_bench_runs_in_bf16_on_cuda_with_every_model(capsys):
    # the H200 table's settings (bf16, all three models) at a size any CUDA card holds
    argv = ["--device", "cuda", "--dtype", "bf16", "--patch", "64", "--volume", "96", "--batch", "1", "--steps", "2",
            "--features", "8", "--swin-features", "12", "--stages", "4", "--markdown"]
    assert bench_medseg(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| ") and "model" not in line]
    assert [r[1].strip() for r in rows] == ["mambaclinix", "unet", "swinunetr"]
    for r in rows:  # CUDA reports a peak for training and inference
        assert float(r[5]) > 0 and float(r[7]) > 0, r
