"""Kill a real training process with SIGKILL mid-run, resume it, and get bit-identical weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

TINY = ["--set", "model.d_model=8", "--set", "model.n_layers=1", "--set", "model.d_state=4",
        "--set", "data.length=16", "--set", "data.n_train=192", "--set", "data.n_val=32",
        "--set", "data.n_test=32", "--set", "train.batch_size=16", "--set", "train.epochs=4",
        "--set", "train.ckpt_every=3", "--set", "train.eval_every=10", "--set", "train.log_every=5",
        "--set", "train.device=cpu"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _train(root, run_id, *extra):
    return [sys.executable, "-m", "ssmkit", "example", "train", "--quiet", *TINY,
            "--set", f"run.root={root}", "--set", f"run.id={run_id}", *extra]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    root = tmp_path / "runs"
    # The uninterrupted reference runs while the victim starts, to share the 2 cores' wall time.
    ref = subprocess.Popen(_train(root, "ref"), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = subprocess.Popen(_train(root, "victim"), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpts = root / "example" / "victim" / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        done = [p for p in ckpts.glob("step_*")] if ckpts.is_dir() else []
        if any(int(p.name.split("_")[1]) >= 3 for p in done):
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be killed: " + victim.stdout.read().decode()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    run = root / "example" / "victim"
    assert not (run / "model.safetensors").exists()  # it really died mid-run
    killed_at = max(int(p.name.split("_")[1]) for p in ckpts.glob("step_*"))
    assert killed_at < 48  # 4 epochs of 12 steps

    out = subprocess.run([sys.executable, "-m", "ssmkit", "example", "train", "--quiet", "--resume", str(run)],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert ref.wait(timeout=300) == 0, ref.stdout.read().decode()

    a = load_file(str(root / "example" / "ref" / "model.safetensors"))
    b = load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The metrics log continues without duplicates: same steps as the reference run.
    steps = lambda p: [(r["split"], r["step"]) for r in map(json.loads, p.read_text().splitlines())]  # noqa: E731
    assert steps(run / "metrics.jsonl") == steps(root / "example" / "ref" / "metrics.jsonl")
