"""`ssmkit bench anomaly` runs end to end on tiny shapes and reports every model row."""

from __future__ import annotations

from ssmkit_apps.anomaly.bench import bench_anomaly


def test_bench_reports_every_model(capsys):
    argv = [
        "--batch",
        "2",
        "--window",
        "12",
        "--channels",
        "3",
        "--d-model",
        "16",
        "--mamba-layers",
        "1",
        "--steps",
        "1",
        "--stream-rows",
        "30",
    ]
    assert bench_anomaly(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| cpu |")]
    assert rows == ["anomaly_transformer", "maat", "maat_sparse", "maat_forecast"]
    assert "ms/row mean" in out
