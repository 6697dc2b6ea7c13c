"""``ssmkit bench talkinghead``: training step time and sampling speed of the talking-head model.

    ssmkit bench talkinghead [--device cpu|cuda] [--dtype fp32|bf16] [--batch 4] [--frames 8]
                             [--sample-frames 24] [--steps 25] [--variants talkinghead_unet_small ...]

For each model variant (and mask-drop on/off for the first one) it times one optimiser step
(DDPM loss with diffusers' scheduler, forward, backward, AdamW) on ``--batch`` clips of
``--frames`` frames, and DDIM sampling of one ``--sample-frames`` clip with ``--steps`` steps,
unguided (one pass per step) and with per-signal guidance on both signals (three passes per
step). Medians of ``--reps`` runs after a warm-up; inputs are random (speed does not depend
on them). ``--dtype bf16`` runs under bf16 autocast (for CUDA).
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from ssmkit.bench.measure import median_ms
from ssmkit.registry import create_model, register_bench


def _median_time(fn, device: torch.device, reps: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls (ssmkit.bench.measure)."""
    return median_ms(fn, device, reps=reps, warmup=warmup) / 1e3


def bench_variant(name: str, args, device: torch.device, mask_drop: bool = True) -> dict[str, float]:
    from ssmkit_apps.talkinghead import diffusion as Df

    torch.manual_seed(0)
    model = create_model(name, audio_dim=160, mask_drop=mask_drop).to(device)
    ddpm, ddim = Df.make_schedulers(Df.DiffusionSettings())
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.dtype == "bf16" \
        else contextlib.nullcontext
    b, t, s = args.batch, args.frames, model.size
    batch = {"frames": torch.rand(b, t, 3, s, s, device=device) * 2 - 1, "ref": torch.rand(b, 3, s, s, device=device),
             "audio": torch.randn(b, t + 2 * model.audio_margin, 160, device=device),
             "motion": torch.randn(b, t, 5, device=device)}
    gates = torch.ones(b, 2, device=device)
    weights = Df.pixel_weights(s, (0.58, 0.88, 0.30, 0.70), 3.0, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        with amp():
            loss = Df.diffusion_loss(model, ddpm, batch, gates, weights)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    step_s = _median_time(train_step, device, args.reps)
    model.eval()
    n = args.sample_frames
    ref = torch.rand(1, 3, s, s, device=device)
    audio = torch.randn(1, n + 2 * model.audio_margin, 160, device=device)
    motion = torch.randn(1, n, 5, device=device)
    out = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "train_step_s": step_s,
           "train_frames_per_s": b * t / step_s}
    for label, guidance in (("sample", (1.0, 1.0)), ("sample_guided", (2.0, 1.5))):
        def run(guidance=guidance):
            Df.sample(model, ddim, ref, audio, motion, "both", guidance, args.steps,
                      torch.Generator().manual_seed(0), autocast=amp if args.dtype == "bf16" else None)

        sec = _median_time(run, device, max(1, args.reps // 2))
        out[f"{label}_frames_per_s"] = n / sec
    return out


@register_bench("talkinghead")
def bench_talkinghead(argv: list[str]) -> int:
    """Talking-head diffusion: train step time and DDIM sampling frames/s."""
    p = argparse.ArgumentParser(prog="ssmkit bench talkinghead", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast (for CUDA)")
    p.add_argument("--batch", type=int, default=4, help="training clips per step (default 4)")
    p.add_argument("--frames", type=int, default=8, help="frames per training clip (default 8)")
    p.add_argument("--sample-frames", dest="sample_frames", type=int, default=24, help="frames sampled (default 24)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (median; default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--variants", nargs="*", default=["talkinghead_unet_tiny", "talkinghead_unet_small"])
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {args.device} given but no CUDA device is visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for i, name in enumerate(args.variants):
        rows.append((name, "on", bench_variant(name, args, device, True)))
        if i == len(args.variants) - 1:  # the largest listed model, without mask-drop
            rows.append((name, "off", bench_variant(name, args, device, False)))
    print(f"device={device} dtype={args.dtype} train: {args.batch} clips x {args.frames} frames; sampling: "
          f"{args.sample_frames} frames x {args.steps} DDIM steps; torch threads={torch.get_num_threads()}")
    print("| model | mask-drop | params (M) | train step (s) | train frames/s | sample frames/s | "
          "sample frames/s, guided (3 passes) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, md, r in rows:
        print(f"| {name} | {md} | {r['params_m']:.2f} | {r['train_step_s']:.3f} | {r['train_frames_per_s']:.1f} | "
              f"{r['sample_frames_per_s']:.2f} | {r['sample_guided_frames_per_s']:.2f} |")
    return 0


__all__ = ["bench_talkinghead", "bench_variant"]
