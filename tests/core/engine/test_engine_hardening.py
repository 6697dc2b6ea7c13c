"""Runs that never collide or escape, values checked before anything is written, checksummed
weights, safe outputs and exit codes: the engine's behaviour under bad input, through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ssmkit.cli import main
from ssmkit.engine import commands
from ssmkit.engine.config import ConfigError
from ssmkit.engine.runtime import DistInfo
from ssmkit_apps.example.app import ExampleConfig

TINY = ["--set", "model.d_model=8", "--set", "model.n_layers=1", "--set", "model.d_state=4",
        "--set", "data.length=16", "--set", "data.n_train=32", "--set", "data.n_val=16",
        "--set", "data.n_test=16", "--set", "train.batch_size=16", "--set", "train.epochs=1",
        "--set", "train.device=cpu"]


def cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run_dir, _ = commands.train(_example(), None, [a for a in TINY if a != "--set"] + [f"run.root={root}"],
                                verbose=False)
    return run_dir


def _example():
    from ssmkit.engine.app import get_app

    return get_app("example")


# ------------------------------------------------------------------------------- run dirs


def test_run_dirs_started_in_the_same_second_never_collide(tmp_path, monkeypatch):
    # Freeze the clock: both runs compute the same timestamp, as two commands started together do.
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")
    cfg = ExampleConfig()
    cfg.run.root = str(tmp_path)
    a = commands.new_run_dir(cfg, "example", DistInfo())
    b = commands.new_run_dir(cfg, "example", DistInfo())
    assert a != b and a.is_dir() and b.is_dir()
    assert b.name == "20260101-000000-2"


def test_two_real_processes_get_two_runs(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "ssmkit", "example", "train", "--quiet", *TINY, "--set", f"run.root={tmp_path}"]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    runs = sorted((tmp_path / "example").iterdir())
    assert len(runs) == 2
    for r in runs:  # each run is whole: its own config, metrics and weights
        assert (r / "model.safetensors").is_file() and (r / "config.yaml").is_file()
        steps = [json.loads(line)["step"] for line in (r / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(steps)


@pytest.mark.parametrize("run_id", ["../../outside", "/abs/outside", "a/../../outside", "link/escaped"])
def test_run_id_cannot_escape_run_root(capsys, tmp_path, run_id):
    root = tmp_path / "runs"
    (root / "example").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, root / "example" / "link")
    if run_id.startswith("/"):
        run_id = str(tmp_path / "abs" / "outside")
    code, _, err = cli(capsys, "example", "train", *TINY, "--set", f"run.root={root}", "--set", f"run.id={run_id}")
    assert code == 2 and "run.id" in err
    assert not any(outside.iterdir())
    assert not (tmp_path / "outside").exists() and not (tmp_path / "abs").exists()


def test_existing_run_id_is_refused_unless_overwrite(capsys, tmp_path):
    base = ["example", "train", *TINY, "--set", f"run.root={tmp_path}", "--set", "run.id=exp1", "--quiet"]
    assert cli(capsys, *base)[0] == 0
    first = (tmp_path / "example" / "exp1" / "metrics.jsonl").read_text()
    code, _, err = cli(capsys, *base)
    assert code == 2 and "already holds a run" in err and "--overwrite" in err
    assert (tmp_path / "example" / "exp1" / "metrics.jsonl").read_text() == first  # untouched
    assert cli(capsys, *base, "--overwrite")[0] == 0
    lines = (tmp_path / "example" / "exp1" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(first.splitlines())  # replaced, not appended to


# ------------------------------------------------------------------------------- values


@pytest.mark.parametrize("override, key", [
    ("train.epochs=0", "train.epochs"), ("train.epochs=-3", "train.epochs"),
    ("train.batch_size=0", "train.batch_size"), ("train.batch_size=-4", "train.batch_size"),
    ("train.lr=-1", "train.lr"), ("train.lr=.nan", "train.lr"), ("data.n_train=0", "data.n_train"),
])
def test_out_of_range_values_exit_2_before_writing(capsys, tmp_path, override, key):
    code, _, err = cli(capsys, "example", "train", *TINY, "--set", override, "--set", f"run.root={tmp_path}")
    assert code == 2 and key in err and ("expected" in err)
    assert not (tmp_path / "example").exists()


def test_zero_byte_dataset_file_names_the_file(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val", "test"):
        (data / f"{split}.npz").write_bytes(b"")
    code, _, err = cli(capsys, "example", "train", *TINY, "--set", f"data.root={data}", "--set", f"run.root={tmp_path}")
    assert code == 2 and "train.npz" in err and "Traceback" not in err


def test_nan_in_training_data_is_a_data_error(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    x = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32)
    x[3, 5] = np.nan
    for split in ("train", "val", "test"):
        np.savez(data / f"{split}.npz", x=x, y=np.zeros(32, dtype=np.int64))
    code, _, err = cli(capsys, "example", "train", *TINY, "--set", f"data.root={data}", "--set", f"run.root={tmp_path}")
    assert code == 2 and "sample 3" in err and "non-finite" in err


# ------------------------------------------------------------------------------ weights


def test_flipped_byte_in_best_weights_is_refused(capsys, tmp_path, trained):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    best = run / "checkpoints" / "best.safetensors"
    raw = bytearray(best.read_bytes())
    raw[-5] ^= 0x01  # same size, one bit of one weight
    best.write_bytes(bytes(raw))
    code, _, err = cli(capsys, "example", "evaluate", "--run", str(run))
    assert code == 2 and "SHA-256" in err


# ------------------------------------------------------------------------------ outputs


def _signals(path: Path, bad=None) -> Path:
    x = np.random.default_rng(1).normal(size=(4, 16)).astype(np.float64)
    if bad is not None:
        x[2, 7] = bad
    np.save(path, x)
    return path


def test_infer_out_policy(capsys, tmp_path, trained):
    sig = _signals(tmp_path / "s.npy")
    out = tmp_path / "new" / "deeper" / "pred.csv"
    assert cli(capsys, "example", "infer", str(sig), "--run", str(trained), "--out", str(out))[0] == 0
    assert out.read_text().startswith("index,class")  # missing folders were created
    code, _, err = cli(capsys, "example", "infer", str(sig), "--run", str(trained), "--out", str(out))
    assert code == 2 and "--overwrite" in err
    assert cli(capsys, "example", "infer", str(sig), "--run", str(trained), "--out", str(out), "--overwrite")[0] == 0
    code, _, err = cli(capsys, "example", "infer", str(sig), "--run", str(trained), "--out", str(sig), "--overwrite")
    assert code == 2 and "is the input" in err
    assert np.load(sig).shape == (4, 16)  # the input survived
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e308])
def test_non_finite_signal_is_rejected_or_interpolated(capsys, tmp_path, trained, bad):
    sig = _signals(tmp_path / "s.npy", bad)
    out = tmp_path / "p.csv"
    code, _, err = cli(capsys, "example", "infer", str(sig), "--run", str(trained), "--out", str(out))
    assert code == 2 and "sample 7 column signal 2" in err and not out.exists()
    with pytest.warns(UserWarning, match="interpolated 1 non-finite"):
        code, _, _ = cli(capsys, "example", "infer", str(sig), "--run", str(trained), "--out", str(out),
                         "--set", "data.nan_policy=interpolate")
    assert code == 0 and "nan" not in out.read_text().lower()


def test_random_bad_cells_never_reach_the_output(capsys, tmp_path, trained):
    # Property-style: a CSV with one bad cell somewhere either exits 2 or is fixed with a warning;
    # a NaN or inf never appears in what is written.
    rng = np.random.default_rng(7)
    for trial, bad in enumerate(["nan", "inf", "1e308", "-1e999", "abc", ""] * 2):
        rows = rng.normal(size=(3, 12)).round(3).astype(str)
        rows[rng.integers(3), rng.integers(12)] = bad
        f = tmp_path / f"in{trial}.csv"
        f.write_text("\n".join(",".join(r) for r in rows) + "\n")
        out = tmp_path / f"out{trial}.csv"
        policy = "interpolate" if trial % 2 else "reject"
        import warnings

        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            code, _, err = cli(capsys, "example", "infer", str(f), "--run", str(trained), "--out", str(out),
                               "--set", f"data.nan_policy={policy}")
        assert code in (0, 2), err
        if code == 2:
            assert str(f) in err and not out.exists()
        else:
            text = out.read_text().lower()
            assert "nan" not in text and "inf" not in text


# ------------------------------------------------------------------------------ evaluation


def test_evaluate_on_other_data_keeps_the_runs_results(capsys, tmp_path, trained):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert cli(capsys, "example", "evaluate", "--run", str(run))[0] == 0
    own = (run / "eval_test.json").read_text()
    assert cli(capsys, "example", "evaluate", "--run", str(run), "--set", "data.noise=1.5")[0] == 0
    assert (run / "eval_test.json").read_text() == own
    others = [p.name for p in run.glob("eval_test-data-*.json")]
    assert len(others) == 1


def test_config_errors_are_exit_2_and_bugs_exit_1(capsys, tmp_path, monkeypatch):
    code, _, err = cli(capsys, "example", "train", "--set", "train.epochz=2")
    assert code == 2 and "Did you mean 'epochs'" in err
    with pytest.raises(ConfigError):
        commands.app_config(_example(), None, ["train.batch_size=0"])

    def boom(*a, **k):
        raise RuntimeError("internal failure")

    monkeypatch.setattr(commands, "train", boom)
    code, _, err = cli(capsys, "example", "train", *TINY, "--set", f"run.root={tmp_path}")
    assert code == 1 and "internal error" in err and "bug" in err
