"""The training loop every app runs on: one process or many (torchrun + DDP), CPU or GPU.

The loop is generic; an app supplies the model, datasets, ``train_step`` and ``evaluate``
(:mod:`ssmkit.engine.app`). Resumes are exact on CPU: the checkpoint holds the weights, the
optimizer and scheduler state, every RNG, and the position (epoch, batch within the epoch);
the data order is a pure function of (seed, epoch), so a resumed run sees the same batches.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ssmkit.engine.app import App, DataError, EvalContext, StepContext, move_to
from ssmkit.engine.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_weights,
)
from ssmkit.engine.config import TrainConfig, dump_yaml, to_dict
from ssmkit.engine.ema import WeightEMA
from ssmkit.engine.files import atomic_write_text
from ssmkit.engine.report import metrics_table, plot_curves, write_report
from ssmkit.engine.runtime import (
    DistInfo,
    all_reduce_mean,
    amp_dtype,
    barrier,
    broadcast_flag,
    resolve_device,
    seed_everything,
)
from ssmkit.engine.tracking import MetricsLogger, Progress


def lr_lambda(t: TrainConfig, total_steps: int):
    """Multiplier of the base LR after ``k`` scheduler steps: linear warm-up, then the schedule."""
    warm = max(0, t.warmup_steps)
    floor = t.min_lr_ratio

    def f(k: int) -> float:
        if warm and k < warm:
            return (k + 1) / warm
        if t.schedule == "constant":
            return 1.0
        p = min(1.0, max(0.0, (k - warm) / max(1, total_steps - warm)))
        if t.schedule == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
        return floor + (1 - floor) * (1 - p)

    return f


def eval_loader(app: App, ds: Dataset, batch_size: int) -> DataLoader:
    # A seeded generator: DataLoader draws its worker base seed from the global RNG otherwise,
    # which would make a mid-run evaluation shift every later random draw.
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=app.cfg.train.num_workers,
                      collate_fn=app.collate, generator=torch.Generator().manual_seed(0))


def run_evaluation(app: App, model: torch.nn.Module, ds: Dataset, ctx: EvalContext) -> dict[str, float]:
    """``app.evaluate`` in eval mode without gradients; metrics as plain floats."""
    t = app.cfg.train
    loader = eval_loader(app, ds, t.eval_batch_size or t.batch_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            metrics = app.evaluate(model, loader, ctx)
    finally:
        model.train(was_training)
    # Counts and positions stay ints (an index in a file's timestamps is not 4198.0).
    return {k: v if isinstance(v, int) and not isinstance(v, bool) else float(v) for k, v in metrics.items()}


def _batch_size_of(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else None
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for v in items:
        n = _batch_size_of(v)
        if n is not None:
            return n
    return None


def split_batch(batch: Any, parts: int) -> list[Any]:
    """Split a collated batch into ``parts`` micro-batches along the sample axis.

    Tensors split along dim 0; dicts, tuples and lists of them recursively; a list or tuple of
    plain values (strings, numbers) as long as the batch is taken as per-sample and sliced.
    """
    n = _batch_size_of(batch)
    if n is None:
        raise ValueError("train.accumulate needs batches that hold at least one tensor with a batch axis")
    if n % parts:
        raise ValueError(f"train.accumulate={parts} must divide the per-process batch of {n} samples")
    size = n // parts

    def take(x: Any, i: int) -> Any:
        if isinstance(x, torch.Tensor):
            return x[i * size:(i + 1) * size] if x.ndim and x.shape[0] == n else x
        if isinstance(x, dict):
            return {k: take(v, i) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            if len(x) == n and all(not isinstance(v, (torch.Tensor, list, tuple, dict)) for v in x):
                return type(x)(x[i * size:(i + 1) * size])
            moved = [take(v, i) for v in x]
            return type(x)(*moved) if hasattr(x, "_fields") else type(x)(moved)
        return x

    return [take(batch, i) for i in range(parts)]


class Trainer:
    """Runs ``app`` in ``run_dir``; ``fit()`` trains (or resumes) and returns final val metrics."""

    def __init__(self, app: App, run_dir: Path, dist: DistInfo | None = None, verbose: bool = True):
        self.app, self.cfg, self.run_dir = app, app.cfg, Path(run_dir)
        self.dist = dist or DistInfo()
        self.verbose = verbose and self.dist.is_main
        t = self.cfg.train
        if t.batch_size % self.dist.world_size:
            raise ValueError(f"train.batch_size={t.batch_size} must be divisible by the {self.dist.world_size} "
                             "processes (each takes an equal share of the global batch)")
        self.device = resolve_device(t.device, self.dist.local_rank)
        self.amp = amp_dtype(t.amp, self.device)
        self.ckpt_dir = self.run_dir / "checkpoints"

    # ----------------------------------------------------------------------------- data
    def _train_batches(self, ds: Dataset, epoch: int, skip: int) -> DataLoader:
        t, d = self.cfg.train, self.dist
        local_bs = t.batch_size // d.world_size
        # The same (seed, epoch) permutation for any world size; rank r takes every W-th index, so
        # the union of the ranks' k-th batches is exactly the 1-process k-th batch.
        sampler = DistributedSampler(ds, num_replicas=d.world_size, rank=d.rank, shuffle=True,
                                     seed=self.cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
        idx = list(sampler)
        n = len(idx) // local_bs
        idx = idx[skip * local_bs: n * local_bs]
        return DataLoader(ds, batch_size=local_bs, sampler=idx, drop_last=True, num_workers=t.num_workers,
                          collate_fn=self.app.collate,
                          generator=torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch))

    def _dataset(self, split: str) -> Dataset:
        ds = self.app.build_dataset(split)
        if len(ds) == 0:
            raise DataError(f"the {split!r} split of app {self.app.name!r} is empty; check the data section "
                            "of the config")
        return ds

    # ----------------------------------------------------------------------------- loop
    def fit(self, resume: bool = False) -> dict[str, float]:
        app, cfg, t, d = self.app, self.cfg, self.cfg.train, self.dist
        seed_everything(cfg.seed, t.deterministic)
        model = app.build_model().to(self.device)
        train_ds, val_ds = self._dataset("train"), self._dataset("val")
        if self.verbose:  # only once the data loaded: a run that cannot start names no folder
            print(f"run directory: {self.run_dir}", flush=True)
        spe = len(train_ds) // t.batch_size  # optimizer steps per epoch (drop_last)
        if spe == 0:
            raise DataError(f"the training split has {len(train_ds)} samples, fewer than train.batch_size="
                            f"{t.batch_size}; lower the batch size or add data")
        total = t.max_steps if t.max_steps > 0 else t.epochs * spe
        optimizers = app.configure_optimizers(model)
        schedulers = {n: torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(t, total)) for n, o in optimizers.items()}
        ema = WeightEMA(model, t.ema) if t.ema > 0 else None

        pos: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "best": None, "since_best": 0, "ema_updates": 0}
        logger = MetricsLogger(self.run_dir, enabled=d.is_main)
        if d.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_yaml(cfg, self.run_dir / "config.yaml")
            state = app.run_state()
            if state:
                atomic_write_text(self.run_dir / "app_state.json", json.dumps(state, indent=1, default=str) + "\n")
        if resume:
            ck = latest_checkpoint(self.ckpt_dir)
            if ck is not None:
                extra: dict[str, torch.Tensor] = {}
                pos = {**pos, **load_checkpoint(ck, model, optimizers, schedulers, extra_tensors=extra)}
                if ema is not None:
                    ema.load(extra, pos["ema_updates"])
                if self.verbose:
                    print(f"resuming from {ck} (step {pos['step']})", flush=True)
            elif self.verbose:
                print(f"no usable checkpoint in {self.ckpt_dir}; starting from scratch", flush=True)
            logger.truncate_after(int(pos["step"]))
        barrier(d)

        ddp = model
        if d.enabled:
            ddp = DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)
        ctx = StepContext(device=self.device, amp_dtype=self.amp, split="train", run_dir=self.run_dir,
                          model=ddp, optimizers=optimizers, schedulers=schedulers, grad_clip=t.grad_clip,
                          generator=torch.default_generator, loss_scale=1.0 / t.accumulate)
        step, epoch, batch_i = int(pos["step"]), int(pos["epoch"]), int(pos["batch"])
        best, since_best = pos.get("best"), int(pos["since_best"])
        progress = Progress(total, initial=step, desc=f"{app.name} train", enabled=self.verbose)
        sums: dict[str, float] = {}
        count, t0 = 0, time.monotonic()
        last_val: dict[str, float] = {}
        stopped_early = bool(pos.get("stopped_early", False))  # a resumed run that had stopped stays stopped
        model.train()
        while step < total and not stopped_early:
            start = step
            for batch in self._train_batches(train_ds, epoch, batch_i):
                ctx.global_step, ctx.epoch = step, epoch
                ctx.grad_norms = {}
                out = self._optimizer_step(ctx, ddp, move_to(batch, self.device))
                if ema is not None:
                    ema.update(model)
                step, batch_i, count = step + 1, batch_i + 1, count + 1
                for k, v in {**out, **{f"grad_norm/{n}": g for n, g in ctx.grad_norms.items()}}.items():
                    if isinstance(v, torch.Tensor):
                        v = v.detach().float().mean().item()
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        sums[k] = sums.get(k, 0.0) + float(v)
                progress.update(1, {k: v / count for k, v in sums.items() if k == "loss"} | {"lr": ctx.lr()})
                epoch_end = batch_i == spe
                if step % max(1, t.log_every) == 0 or epoch_end or step == total:
                    avg = all_reduce_mean(d, {k: v / count for k, v in sums.items()})
                    logger.log("train", step, {**avg, "lr": ctx.lr()}, epoch=epoch,
                               time_s=round(time.monotonic() - t0, 3))
                    sums, count = {}, 0
                if epoch_end:
                    epoch, batch_i = epoch + 1, 0
                if (t.eval_every and step % t.eval_every == 0) or (not t.eval_every and epoch_end) or step == total:
                    with self._averaged(model, ema):
                        last_val, improved = self._validate(model, val_ds, step, epoch, logger, progress, best)
                    best = improved if improved is not None else best
                    since_best = 0 if improved is not None else since_best + 1
                    # Every rank reads the same decision (rank 0's metrics reach the others as a flag).
                    stopped_early = bool(t.early_stop) and broadcast_flag(d, since_best >= t.early_stop)
                if (t.ckpt_every and step % t.ckpt_every == 0) or (not t.ckpt_every and epoch_end) \
                        or step == total or stopped_early:
                    if d.is_main:
                        save_checkpoint(self.ckpt_dir, model, optimizers, schedulers,
                                        {"step": step, "epoch": epoch, "batch": batch_i, "best": best,
                                         "since_best": since_best, "ema_updates": ema.updates if ema else 0,
                                         "stopped_early": stopped_early},
                                        to_dict(cfg), keep=t.keep_checkpoints,
                                        extra_tensors=ema.tensors() if ema is not None else None)
                    barrier(d)
                if step >= total or stopped_early:
                    break
            if step == start and not stopped_early:  # a sampler that yields nothing would otherwise spin
                raise RuntimeError(f"epoch {epoch} produced no training batches (position {batch_i}/{spe})")
        progress.close()
        if stopped_early and self.verbose:
            print(f"early stop at step {step}: no better validation {app.primary_metric} in "
                  f"{t.early_stop} evaluations", flush=True)
        if d.is_main:
            with self._averaged(model, ema):
                save_weights(model, self.run_dir / "model.safetensors")
                if not last_val:  # resumed a run that had already finished
                    last_val = run_evaluation(app, model, val_ds, self._eval_ctx("val", step))
                self._report(last_val, step, time.monotonic() - t0, logger)
        logger.close()
        barrier(d)
        return last_val

    def _optimizer_step(self, ctx: StepContext, ddp: torch.nn.Module, batch: Any) -> dict[str, Any]:
        """One optimizer step: the app's ``train_step`` on the whole batch, or on ``train.accumulate``
        micro-batches (losses scaled, DDP's all-reduce only on the last, metrics averaged)."""
        n = self.cfg.train.accumulate
        if n == 1:
            ctx.last_micro_batch = True
            return self.app.train_step(ctx, batch)
        sums: dict[str, Any] = {}
        for i, micro in enumerate(split_batch(batch, n)):
            ctx.last_micro_batch = i == n - 1
            sync_off = getattr(ddp, "no_sync", None)
            with sync_off() if callable(sync_off) and not ctx.last_micro_batch else contextlib.nullcontext():
                out = self.app.train_step(ctx, micro)
            for k, v in out.items():
                v = v.detach().float().mean() if isinstance(v, torch.Tensor) else v
                if isinstance(v, (int, float, torch.Tensor)) and not isinstance(v, bool):
                    sums[k] = sums.get(k, 0.0) + v / n
        return sums

    @staticmethod
    def _averaged(model: torch.nn.Module, ema: WeightEMA | None):
        return ema.swapped_in(model) if ema is not None else contextlib.nullcontext()

    def _eval_ctx(self, split: str, step: int) -> EvalContext:
        return EvalContext(device=self.device, amp_dtype=self.amp, split=split,
                           run_dir=self.run_dir if self.dist.is_main else None, global_step=step)

    def _validate(self, model, val_ds, step, epoch, logger, progress, best):
        """Rank 0 evaluates and keeps the best weights; returns (metrics, the new best or None)."""
        metrics: dict[str, float] = {}
        improved = None
        if self.dist.is_main:
            metrics = run_evaluation(self.app, model, val_ds, self._eval_ctx("val", step))
            logger.log("val", step, metrics, epoch=epoch)
            progress.write(f"step {step} epoch {epoch} val: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            m = metrics.get(self.app.primary_metric)
            if m is not None and math.isfinite(m):
                if best is None or (m > best if self.app.higher_is_better else m < best):
                    improved = m
                    self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                    save_weights(model, self.ckpt_dir / "best.safetensors")
        barrier(self.dist)
        return metrics, improved

    def _report(self, val: dict[str, float], step: int, seconds: float, logger: MetricsLogger) -> None:
        app = self.app
        logger.write_csv()
        plots = plot_curves(logger.records(), self.run_dir / "plots")
        head = [f"- app: `{app.name}`, steps: {step}, wall time of this run: {seconds:.1f} s",
                f"- device: {self.device}, processes: {self.dist.world_size}, autocast: {self.amp or 'off'}"]
        m = val.get(app.primary_metric)
        if m is not None:
            chance = f" (chance level {app.chance:.4g})" if app.chance is not None else ""
            head.append(f"- validation {app.primary_metric}: **{m:.4f}**{chance}")
        extra = app.report(val, self._eval_ctx("val", step))
        import yaml

        cfg_txt = "```yaml\n" + yaml.safe_dump(to_dict(self.cfg), sort_keys=False) + "```"
        write_report(self.run_dir, f"{app.name}: training run {self.run_dir.name}",
                     [("Summary", "\n".join(head)), ("Validation metrics", metrics_table(val)),
                      (app.name, extra), ("Config", cfg_txt)], plots)


__all__ = ["Trainer", "eval_loader", "lr_lambda", "run_evaluation", "split_batch"]
