"""torchrun with 2 gloo processes trains to the same weights as 1 process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

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


def test_no_sync_accumulates_several_backward_passes_under_ddp(tmp_path):
    # A minimax step runs two backward passes through one forward. ctx.no_sync() on the first
    # skips one all-reduce; the accumulated gradients must still be those of the summed losses.
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
        x = torch.randn(6, 4)
        ctx = StepContext(device=torch.device("cpu"), model=ddp)
        out = ctx.model(x)
        with ctx.no_sync():
            ctx.backward(out.pow(2).mean(), retain_graph=True)
        ctx.backward(out.abs().mean())
        ref = plain(x)
        (ref.pow(2).mean() + ref.abs().mean()).backward()
        for a, b in zip(plain.parameters(), wrapped.parameters()):
            torch.testing.assert_close(b.grad, a.grad)
    finally:
        dist.destroy_process_group()
