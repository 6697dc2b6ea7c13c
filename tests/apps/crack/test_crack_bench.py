"""`ssmkit bench crack` runs end to end on tiny shapes and prints both models' rows."""

from __future__ import annotations

import pytest

from ssmkit_apps.crack.bench import bench_crack


def test_bench_prints_both_models(capsys):
    argv = ["--variant", "tiny", "--size", "32", "--batch", "2", "--flops-size", "32", "--steps", "1", "--warmup", "0"]
    assert bench_crack(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith(("| scsegamba", "| crack"))]
    assert [r[1].strip() for r in rows] == ["scsegamba_tiny", "crack_unet_tiny"]
    for r in rows:
        params, gflops, img_s, step = (float(v) for v in r[2:6])
        assert 0.05 < params < 0.1 and gflops > 0 and img_s > 0 and step > 0
    with pytest.raises(ValueError, match="unknown model 'segformer'"):
        bench_crack(["--models", "segformer"])
