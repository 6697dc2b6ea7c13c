"""torchrun with 2 gloo processes trains to the same weights as 1 process with the same global batch."""

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
        "--set", "data.length=16", "--set", "data.n_train=128", "--set", "data.n_val=32",
        "--set", "data.n_test=32", "--set", "train.batch_size=16", "--set", "train.epochs=1",
        "--set", "train.log_every=4", "--set", "train.device=cpu"]


def test_two_gloo_ranks_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["-m", "ssmkit", "example", "train", "--quiet", *TINY, "--set", f"run.root={tmp_path}"]
    one = subprocess.Popen([sys.executable, *args, "--set", "run.id=one"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          *args, "--set", "run.id=two"], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert one.wait(timeout=300) == 0, one.stdout.read()[-3000:]
    a = load_file(str(tmp_path / "example" / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "example" / "two" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        # Gradient averaging over ranks sums in another order than one big batch: equal to rounding.
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    # Rank 0 alone writes the run directory: one config, one metrics log, no duplicate records.
    two_dir = tmp_path / "example" / "two"
    lines = (two_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "example" / "one" / "metrics.jsonl").read_text().splitlines())
    assert len(list(tmp_path.glob("example/*"))) == 2
    # The loss curve matches too: the logged train loss is averaged over ranks, so each record is
    # the mean over the same global batches as the 1-process run (equal to float rounding).
    curve = {run: [(r["step"], r["loss"]) for r in map(json.loads, (tmp_path / "example" / run / "metrics.jsonl")
                                                        .read_text().splitlines()) if r["split"] == "train"]
             for run in ("one", "two")}
    assert [s for s, _ in curve["one"]] == [s for s, _ in curve["two"]]
    for (_, a), (_, b) in zip(curve["one"], curve["two"]):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (a, b)


def test_two_rank_run_killed_mid_epoch_resumes_exactly(tmp_path):
    # torchrun with 2 gloo ranks is SIGKILLed (the whole process group) after a mid-epoch
    # checkpoint; resuming under torchrun ends with the weights of an uninterrupted 2-rank run.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    tiny = [*TINY[:-4], "--set", "train.epochs=2", "--set", "train.ckpt_every=3", "--set", "train.device=cpu"]

    def launch(run_id, *extra):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "ssmkit", "example", "train", "--quiet", *tiny, "--set", f"run.root={tmp_path}",
                "--set", f"run.id={run_id}", *extra]

    ref = subprocess.Popen(launch("ref"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = subprocess.Popen(launch("victim"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    ckpts = tmp_path / "example" / "victim" / "checkpoints"
    deadline = time.monotonic() + 240
    # 8 steps per epoch: a checkpoint at step 3 or 6 lies inside the first epoch
    while time.monotonic() < deadline and victim.poll() is None:
        if ckpts.is_dir() and any(p.name.startswith("step_") for p in ckpts.iterdir()):
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be killed: " + victim.stdout.read().decode()
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    run = tmp_path / "example" / "victim"
    assert not (run / "model.safetensors").exists()
    killed_at = max(int(p.name.split("_")[1]) for p in ckpts.glob("step_*"))
    assert killed_at < 16 and killed_at % 8 != 0  # mid-epoch
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "ssmkit", "example", "train", "--quiet", "--resume", str(run)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert ref.wait(timeout=300) == 0, ref.stdout.read().decode()[-3000:]
    a = load_file(str(tmp_path / "example" / "ref" / "model.safetensors"))
    b = load_file(str(run / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_no_sync_accumulates_micro_batches_under_ddp(tmp_path):
    # Two micro-batches in one step: ctx.no_sync() around the first forward and backward skips
    # one all-reduce; the accumulated gradients must still be those of the summed losses.
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ssmkit.engine.app import StepContext

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        wrapped = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        wrapped.load_state_dict(plain.state_dict())
        ddp = DistributedDataParallel(wrapped)
        x1, x2 = torch.randn(6, 4), torch.randn(5, 4)
        ctx = StepContext(device=torch.device("cpu"), model=ddp)
        with ctx.no_sync():
            ctx.backward(ctx.model(x1).pow(2).mean())
        ctx.backward(ctx.model(x2).abs().mean())
        (plain(x1).pow(2).mean() + plain(x2).abs().mean()).backward()
        for a, b in zip(plain.parameters(), wrapped.parameters()):
            torch.testing.assert_close(b.grad, a.grad)
    finally:
        dist.destroy_process_group()
