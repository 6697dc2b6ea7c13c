"""``ssmkit bench crack``: SCSegamba and the U-Net side by side, in one run.

    ssmkit bench crack                                   # CPU, fp32, the default (2.9M) variants
    ssmkit bench crack --device cuda --dtype bf16        # the GPU table
    ssmkit bench crack --variant tiny --size 128 --batch 4

For each model: parameters; forward GFLOPs of one image at ``--flops-size`` (counted by
``torch.utils.flop_counter``: convolutions and matmuls, not the scan's elementwise recurrence);
inference images per second at ``--size`` x ``--size``, batch ``--batch`` (eval mode, no grad);
the time of one training step (forward, BCE + Dice, backward, AdamW) at batch ``--train-batch``;
and peak memory of each phase: CUDA's allocator peak on GPU, the process's peak resident set
(reset before each phase through /proc/self/clear_refs) on CPU.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from ssmkit.bench.measure import median_ms
from ssmkit.registry import create_model, register_bench


def _median_time(fn, device: torch.device, steps: int, warmup: int) -> float:
    """Median seconds of ``fn()`` over ``steps`` calls (ssmkit.bench.measure)."""
    return median_ms(fn, device, reps=steps, warmup=warmup) / 1e3


class _PeakMemory:
    """Peak memory of a block in MiB: CUDA allocator peak, or the CPU process's peak RSS."""

    def __init__(self, device: torch.device):
        self.device, self.mib = device, float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            with contextlib.suppress(OSError, ValueError):
                for line in Path("/proc/self/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.mib = int(line.split()[1]) / 1024
        return False


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    from ssmkit_apps.crack.losses import bce_dice_loss
    from ssmkit_apps.crack.model import gflops, param_count

    torch.manual_seed(0)
    model = create_model(name).to(device)
    amp = torch.bfloat16 if args.dtype == "bf16" else None
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else contextlib.nullcontext
    row = {"params_m": param_count(model) / 1e6}
    row["gflops"] = gflops(model, args.flops_size, device=device) if args.flops_size else float("nan")

    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    model.eval()

    @torch.no_grad()
    def infer():
        with autocast():
            model(x)

    with _PeakMemory(device) as mem:
        t = _median_time(infer, device, args.steps, args.warmup)
    row["infer_img_s"], row["infer_mib"] = args.batch / t, mem.mib

    tb = args.train_batch or args.batch
    xt = torch.rand(tb, 3, args.size, args.size, device=device)
    yt = (torch.rand(tb, 1, args.size, args.size, device=device) < 0.03).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def train_step():
        with autocast():
            logits = model(xt)
        loss, _ = bce_dice_loss(logits, yt)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with _PeakMemory(device) as mem:
        row["train_step_s"] = _median_time(train_step, device, args.steps, args.warmup)
    row["train_mib"] = mem.mib
    return row


@register_bench("crack")
def bench_crack(argv: list[str]) -> int:
    """Crack app: SCSegamba vs U-Net: params, GFLOPs, inference images/s, train step time, peak memory."""
    from ssmkit_apps.crack.model import VARIANTS

    p = argparse.ArgumentParser(prog="ssmkit bench crack", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast (GPU)")
    p.add_argument("--variant", choices=["tiny", "default", "large"], default="default",
                   help="model size of both models (default: the published 2.9M-parameter size)")
    p.add_argument("--models", default="scsegamba,unet", help="comma-separated: scsegamba, unet")
    p.add_argument("--size", type=int, default=512, help="image side (default 512)")
    p.add_argument("--batch", type=int, default=16, help="inference batch (default 16)")
    p.add_argument("--train-batch", dest="train_batch", type=int, default=0, help="training batch (default: --batch)")
    p.add_argument("--flops-size", dest="flops_size", type=int, default=512,
                   help="image side for the GFLOPs count (0 skips it)")
    p.add_argument("--steps", type=int, default=3, help="timed repetitions (the median is reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda given but no CUDA device is visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in VARIANTS:
            raise ValueError(f"--models: unknown model {m!r}; expected scsegamba and/or unet")
    names = [VARIANTS[m][args.variant] for m in models]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"crack bench: {where}, {args.dtype}, {args.size}x{args.size}, inference batch {args.batch}, training batch "
          f"{args.train_batch or args.batch}, median of {args.steps} after {args.warmup} warm-up; "
          f"torch {torch.__version__}", flush=True)
    rows = {}
    for n in names:
        rows[n] = bench_model(n, args, device)
        print(f"  {n}: done", flush=True)
    mem = "CUDA peak allocated" if device.type == "cuda" else "peak RSS"
    print(f"\n| model | params (M) | GFLOPs @{args.flops_size} | infer img/s | train step (s) | infer {mem} (MiB) | "
          f"train {mem} (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n, r in rows.items():
        print(f"| {n} | {r['params_m']:.2f} | {r['gflops']:.3g} | {r['infer_img_s']:.2f} | {r['train_step_s']:.3f} | "
              f"{r['infer_mib']:.0f} | {r['train_mib']:.0f} |")
    return 0


__all__ = ["bench_crack", "bench_model"]
