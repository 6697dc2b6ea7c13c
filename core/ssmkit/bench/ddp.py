"""``ssmkit bench ddp APP``: how an app's training scales from 1 to N processes under torchrun.

    ssmkit bench ddp anomaly [--nproc 1,2] [--steps 20] [--warmup 5] [--per-process-batch 16]
                     [--amp bf16|off] [--device cpu|cuda] [--set key=value ...] [--json OUT]

For each process count it launches ``torchrun --standalone --nproc_per_node=N`` on this module's
worker, which builds the app exactly as ``ssmkit APP train`` does (config, model, datasets, DDP
wrapper, the app's own ``train_step``) and times optimizer steps. Weak scaling: every process
keeps the same batch, so N processes train on N times the samples per step.

Reported per process count: samples/s; scaling efficiency (N-process throughput / (N x the
1-process throughput)); peak memory per process (CUDA allocator peak, or the CPU's max RSS); and
the step time split into compute and exposed all-reduce. The split times the same steps twice:
once normally, once inside DDP's ``no_sync`` (no gradient communication); the difference is the
all-reduce time that was not hidden behind the backward pass.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ssmkit.bench.table import Column, format_table
from ssmkit.registry import register_bench


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssmkit bench ddp", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("app", help="the app to train (ssmkit list app)")
    p.add_argument("--nproc", default="1,2", help="process counts to run, comma-separated (default 1,2)")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per variant (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--per-process-batch", type=int, default=0,
                   help="samples per process per step (default: the app's train.batch_size)")
    p.add_argument("--amp", choices=["auto", "bf16", "off"], default="auto",
                   help="autocast (default auto: bf16 on CUDA)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--timeout", type=int, default=900, help="seconds per torchrun launch (default 900)")
    return p


# --------------------------------------------------------------------------------- worker


def _worker(argv: list[str]) -> int:
    """Runs under torchrun: time the app's train step with and without gradient all-reduce."""
    import torch

    from ssmkit.engine.app import StepContext, get_app, move_to
    from ssmkit.engine.commands import app_config
    from ssmkit.engine.runtime import (
        amp_dtype,
        dist_from_env,
        init_distributed,
        resolve_device,
        seed_everything,
        shutdown_distributed,
    )
    from ssmkit.engine.trainer import Trainer

    args = json.loads(argv[0])
    dist = dist_from_env()
    app_cls = get_app(args["app"])
    overrides = [*args["set"], f"train.device={args['device']}", f"train.amp={args['amp']}",
                 f"train.batch_size={args['batch'] * dist.world_size}"]
    cfg = app_config(app_cls, None, overrides)
    device = resolve_device(cfg.train.device, dist.local_rank)
    init_distributed(dist, device)
    try:
        seed_everything(cfg.seed, deterministic=False)
        app = app_cls(cfg)
        trainer = Trainer(app, Path(tempfile.mkdtemp()), dist, verbose=False)
        model = app.build_model().to(device)
        ds = trainer._dataset("train")
        ddp = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        optimizers = app.configure_optimizers(model)
        ctx = StepContext(device=device, amp_dtype=amp_dtype(cfg.train.amp, device), split="train", model=ddp,
                          optimizers=optimizers, grad_clip=cfg.train.grad_clip, generator=torch.default_generator)

        def batches():
            epoch = 0
            while True:
                yield from trainer._train_batches(ds, epoch, 0)
                epoch += 1

        it = batches()

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if dist.enabled:
                torch.distributed.barrier()

        def run(n: int, communicate: bool) -> list[float]:
            times = []
            for _ in range(n):
                batch = move_to(next(it), device)
                sync()
                t = time.perf_counter()
                if communicate or not dist.enabled:
                    app.train_step(ctx, batch)
                else:
                    with ddp.no_sync():
                        app.train_step(ctx, batch)
                sync()
                times.append(time.perf_counter() - t)
            return times

        run(args["warmup"], True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with_comm = run(args["steps"], True)
        compute = run(args["steps"], False) if dist.enabled else with_comm  # one process: nothing to reduce
        peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        if dist.is_main:
            step = statistics.median(with_comm)
            comp = statistics.median(compute)
            out = {"nproc": dist.world_size, "step_ms": 1e3 * step, "compute_ms": 1e3 * comp,
                   "allreduce_ms": 1e3 * max(0.0, step - comp), "samples_per_s": args["batch"] * dist.world_size / step,
                   "peak_mb": peak / 2**20, "device": str(device), "amp": str(ctx.amp_dtype)}
            Path(args["out"]).write_text(json.dumps(out))
    finally:
        shutdown_distributed()
    return 0


# --------------------------------------------------------------------------------- driver


_COLUMNS = [Column("processes", "nproc", "d"), Column("samples/s", "samples_per_s", ".1f"),
            Column("efficiency", "efficiency", ".3f"), Column("step ms", "step_ms", ".2f"),
            Column("compute ms", "compute_ms", ".2f"), Column("exposed all-reduce ms", "allreduce_ms", ".2f"),
            Column("peak MB/process", "peak_mb", ".0f")]


def _table(rows: list[dict]) -> str:
    """A Markdown table of the rows; adds each row's scaling efficiency against one process."""
    base = next((r["samples_per_s"] for r in rows if r["nproc"] == 1), None)
    for r in rows:
        r["efficiency"] = r["samples_per_s"] / (r["nproc"] * base) if base else float("nan")
    return format_table(rows, _COLUMNS, markdown=True)


@register_bench("ddp")
def bench_ddp(argv: list[str]) -> int:
    """Scaling of an app's training over torchrun processes: samples/s, efficiency, memory, all-reduce."""
    args = _parser().parse_args(argv)
    from ssmkit.engine.app import get_app
    from ssmkit.engine.commands import app_config

    app_cls = get_app(args.app)
    batch = args.per_process_batch or app_config(app_cls, None, args.set).train.batch_size
    rows = []
    for n in [int(x) for x in args.nproc.split(",") if x.strip()]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            spec = {"app": args.app, "set": args.set, "device": args.device, "amp": args.amp, "batch": batch,
                    "steps": args.steps, "warmup": args.warmup, "out": str(out)}
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   "-m", "ssmkit.bench.ddp", "--worker", json.dumps(spec)]
            env = {**os.environ, "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE", "0")}
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
            if proc.returncode != 0 or not out.is_file():
                print(proc.stdout[-2000:] + proc.stderr[-4000:], file=sys.stderr)
                print(f"ssmkit bench ddp: the {n}-process run failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            rows.append(json.loads(out.read_text()))
    table = _table(rows)
    print(f"ssmkit bench ddp {args.app}: {batch} samples per process per step, {args.steps} timed steps, "
          f"device {rows[0]['device']}, autocast {rows[0]['amp']}")
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        raise SystemExit(_worker(sys.argv[2:]))
    raise SystemExit(bench_ddp(sys.argv[1:]))
