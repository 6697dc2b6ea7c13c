"""The ssmkit command: listing, doctor, help at every level, app commands, and clean errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ssmkit.cli import main

TINY = ["--set", "model.d_model=8", "--set", "model.n_layers=1", "--set", "model.d_state=4",
        "--set", "data.length=16", "--set", "data.n_train=64", "--set", "data.n_val=16",
        "--set", "data.n_test=16", "--set", "train.batch_size=16", "--set", "train.epochs=1",
        "--set", "train.device=cpu"]


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's --help and usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_top_help_lists_commands_and_apps(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for word in ("list", "doctor", "demo", "bench", "example", "torchrun"):
        assert word in out


def test_list_shows_registries(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert "apps (" in out and "example" in out and "example/waveforms" in out
    assert "example_mamba_classifier" in out and "benches (" in out
    code, out, _ = run(capsys, "list", "app")
    assert code == 0 and "example" in out and "scans (" not in out


def test_doctor_reports_versions_and_backends(capsys):
    import torch

    code, out, _ = run(capsys, "doctor")
    assert code == 0
    assert torch.__version__ in out and "triton" in out and "CUDA" in out
    assert "selective-scan backends" in out and "reference  active" in out and "auto on" in out


@pytest.mark.parametrize("argv, hint", [
    (["exmaple", "train"], "Did you mean 'example'"),
    (["doctr"], "Did you mean 'doctor'"),
    (["example", "trian"], "Did you mean 'train'"),
    (["bench", "nosuchbench"], "unknown bench 'nosuchbench'"),
])
def test_unknown_names_suggest_the_nearest(capsys, argv, hint):
    code, out, err = run(capsys, *argv)
    assert code == 2 and hint in err and "Traceback" not in err


@pytest.mark.parametrize("argv, words", [
    (["example", "--help"], ["train", "evaluate", "infer", "demo", "examples:"]),
    (["example", "train", "--help"], ["--resume", "--set", "--config", "runs/example"]),
    (["example", "evaluate", "--help"], ["--run", "--ckpt", "--split"]),
    (["example", "infer", "--help"], ["FILE", "--out"]),
    (["demo", "--help"], ["--out", "--apps"]),
    (["list", "--help"], ["only this registry"]),
    (["bench", "--help"], ["ssmkit bench NAME"]),
])
def test_help_at_every_level(capsys, argv, words):
    code, out, _ = run(capsys, *argv)
    assert code == 0
    for w in words:
        assert w in out, (argv, w)


def test_invalid_yaml_is_one_clean_paragraph(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [0.1\n")
    code, _, err = run(capsys, "example", "train", "--config", str(bad), "--set", f"run.root={tmp_path}/runs")
    assert code == 2
    assert err.startswith("ssmkit: config error:") and "not valid YAML at line" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_unknown_config_key_lists_valid_ones(capsys, tmp_path):
    code, _, err = run(capsys, "example", "train", "--set", "train.lrr=1", "--set", f"run.root={tmp_path}")
    assert code == 2 and "Did you mean 'lr'" in err and "Valid keys here:" in err and "batch_size" in err


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_dataset_prints_layout(capsys, tmp_path, make):
    root = tmp_path / "data"
    if make == "empty":
        root.mkdir()
    code, _, err = run(capsys, "example", "train", "--set", f"data.root={root}", "--set", f"run.root={tmp_path}/runs")
    assert code == 2 and "data error" in err and "Expected layout" in err and "train.npz" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written for a run that could not start


def test_corrupt_checkpoint_is_reported(capsys, tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    code, _, err = run(capsys, "example", "evaluate", "--ckpt", str(f))
    assert code == 2 and "checkpoint error" in err and "corrupt" in err and "Traceback" not in err
    code, _, err = run(capsys, "example", "evaluate", "--run", str(tmp_path / "nope"))
    assert code == 2 and "no such run directory" in err


def test_train_evaluate_infer_end_to_end(capsys, tmp_path):
    code, out, err = run(capsys, "example", "train", "--quiet", *TINY, "--set", f"run.root={tmp_path}",
                         "--set", "run.id=r1")
    assert code == 0, err
    run_dir = tmp_path / "example" / "r1"
    assert (run_dir / "report.md").is_file()
    code, out, err = run(capsys, "example", "evaluate", "--run", str(run_dir), "--split", "test")
    assert code == 0, err
    metrics = json.loads((run_dir / "eval_test.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "| accuracy |" in out
    run(capsys, "example", "evaluate", "--run", str(run_dir), "--split", "test")  # twice: replaced, not repeated
    report = (run_dir / "report.md").read_text()
    assert report.count("## Evaluation on test") == 1
    assert report.index("## Evaluation on test") < report.index("## Config")
    signals = tmp_path / "sig.npy"
    np.save(signals, np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32))
    pred = tmp_path / "pred.csv"
    code, out, err = run(capsys, "example", "infer", str(signals), "--run", str(run_dir), "--out", str(pred))
    assert code == 0, err
    lines = pred.read_text().splitlines()
    assert lines[0].startswith("index,class,p_sine") and len(lines) == 6
    code, _, err = run(capsys, "example", "infer", str(tmp_path / "missing.npy"), "--run", str(run_dir))
    assert code == 2 and "does not exist" in err
    # --resume without a path picks the newest run under run.root; a finished run just re-reports.
    code, out, err = run(capsys, "example", "train", "--resume", "--set", f"run.root={tmp_path}")
    assert code == 0, err
    assert f"resuming from {run_dir}" in out and "done: validation accuracy=" in out


def test_bench_dispatches_to_registered_function(capsys, monkeypatch):
    from ssmkit import registry

    seen = []

    def fake_bench(argv):
        seen.append(argv)
        print("bench ran")
        return 3

    registry.list_registered("bench")  # discover first, so the fake entry is not overwritten
    monkeypatch.setitem(registry._REGISTRY["bench"], "fake_suite", fake_bench)
    code, out, _ = run(capsys, "bench", "fake_suite", "--cpu", "--quick")
    assert code == 3 and seen == [["--cpu", "--quick"]] and "bench ran" in out
    code, out, _ = run(capsys, "bench")
    assert code == 0 and "fake_suite" in out


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "ssmkit", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ssmkit COMMAND" in out.stdout
