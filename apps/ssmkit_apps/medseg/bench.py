"""``ssmkit bench medseg``: MambaClinix against MONAI's UNet and SwinUNETR, side by side.

    ssmkit bench medseg --small                                   # CPU: 64^3 patch, 128^3 volume
    ssmkit bench medseg --device cuda --dtype bf16                # 128^3 patch, 256^3 volume

For each model: one training step (forward, the app's loss with deep supervision, backward,
AdamW step) on a batch of patches, its median time and its peak memory (the CUDA allocator's
peak, or the process's peak resident set on CPU); then sliding-window inference over one whole
volume (the app's settings: Gaussian blending, overlap 0.5). All models share the plan that
the app would compute for a 1 mm isotropic dataset of that patch size.
"""

from __future__ import annotations

import argparse
import time

import torch

from ssmkit.bench.measure import median_ms, peak_bytes
from ssmkit.bench.table import Column, format_table
from ssmkit.registry import register_bench

MODELS = ("mambaclinix", "unet", "swinunetr")


def build(name: str, args: argparse.Namespace, strides: list[list[int]], kernels: list[list[int]]) -> torch.nn.Module:
    from ssmkit_apps.medseg.model import MambaClinix, monai_swinunetr, monai_unet

    if name == "mambaclinix":
        return MambaClinix(1, args.classes, strides, kernels, features=args.features, max_features=args.max_features,
                           mamba_stages=args.mamba_stages, scan=args.scan, d_state=args.d_state,
                           hg_kernel=args.hg_kernel)
    if name == "unet":
        return monai_unet(1, args.classes, strides, kernels, features=args.features, max_features=args.max_features)
    if name == "swinunetr":
        return monai_swinunetr(1, args.classes, swin_features=args.swin_features)
    raise ValueError(f"unknown model {name!r}; expected one of {list(MODELS)}")


def measure(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    from monai.inferers import sliding_window_inference

    from ssmkit_apps.medseg.losses import SegLoss
    from ssmkit_apps.medseg.plan import plan_stages

    patch = [args.patch] * 3
    strides, kernels = plan_stages(patch, [1.0, 1.0, 1.0], args.stages)
    torch.manual_seed(0)
    model = build(name, args, strides, kernels).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = SegLoss()
    amp = args.dtype == "bf16"
    x = torch.randn(args.batch, 1, *patch, device=device)
    y = torch.randint(0, args.classes, (args.batch, 1, *patch), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        loss, _ = loss_fn(out, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    step_ms = median_ms(step, device, reps=args.steps, warmup=1)
    train_peak = peak_bytes(step, device)

    model.eval()
    vol = torch.randn(1, 1, *([args.volume] * 3))

    def predictor(p: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return torch.softmax(model(p).float(), 1)

    def infer() -> None:
        with torch.no_grad():
            sliding_window_inference(vol, patch, args.sw_batch, predictor, overlap=args.overlap, mode="gaussian",
                                     sw_device=device, device=torch.device("cpu"))

    t0 = time.perf_counter()
    infer_peak = peak_bytes(infer, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    sw_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    return {"model": name, "params": params / 1e6, "step_s": step_ms / 1e3, "train_gib": _gib(train_peak),
            "sw_s": sw_s, "sw_gib": _gib(infer_peak), "stages": len(strides)}


def _gib(b: int | None) -> float | None:
    return None if b is None else b / 2**30


@register_bench("medseg")
def bench_medseg(argv: list[str]) -> int:
    """Medseg: training step time and peak memory, sliding-window time, MambaClinix vs UNet vs SwinUNETR."""
    p = argparse.ArgumentParser(prog="ssmkit bench medseg", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast (CUDA)")
    p.add_argument("--small", action="store_true", help="CPU-sized: --patch 64 --volume 128 --batch 1")
    p.add_argument("--patch", type=int, default=128, help="cubic training/inference patch (default 128)")
    p.add_argument("--volume", type=int, default=256, help="cubic volume for sliding-window inference (default 256)")
    p.add_argument("--batch", type=int, default=2, help="patches per training step (default 2)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps (median; default 5)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--stages", type=int, default=5, help="U-Net stages of the plan (default 5)")
    p.add_argument("--features", type=int, default=32, help="stage-0 channels of MambaClinix and UNet (default 32)")
    p.add_argument("--max-features", dest="max_features", type=int, default=320)
    p.add_argument("--swin-features", dest="swin_features", type=int, default=48)
    p.add_argument("--mamba-stages", dest="mamba_stages", type=int, default=2)
    p.add_argument("--scan", default="tri_orient", help="SS3D scan strategy (default tri_orient)")
    p.add_argument("--d-state", dest="d_state", type=int, default=16)
    p.add_argument("--hg-kernel", dest="hg_kernel", type=int, default=7)
    p.add_argument("--sw-batch", dest="sw_batch", type=int, default=2, help="sliding-window batch (default 2)")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = p.parse_args(argv)
    if args.small:
        args.patch, args.volume, args.batch = 64, 128, 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {args.device} given but no CUDA device is visible")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    if "swinunetr" in models and (args.patch % 32 or args.patch < 64):
        p.error(f"SwinUNETR needs --patch a multiple of 32 and >= 64; got {args.patch}")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"medseg bench on {where}, {args.dtype}: patch {args.patch}^3 x batch {args.batch}, sliding window over "
          f"{args.volume}^3 (overlap {args.overlap}, sw batch {args.sw_batch}), {args.classes} classes", flush=True)
    rows = []
    for m in models:
        rows.append(measure(m, args, device))
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the previous model's blocks would count towards the next peak
        r = rows[-1]
        print(f"  {m}: step {r['step_s']:.3f} s, sliding window {r['sw_s']:.2f} s", flush=True)
    cols = [Column("model", "model"), Column("params M", "params", ".2f"), Column("stages", "stages"),
            Column("fwd+bwd s/step", "step_s", ".3f"), Column("train peak GiB", "train_gib", ".2f"),
            Column(f"sliding window {args.volume}^3 s", "sw_s", ".2f"), Column("infer peak GiB", "sw_gib", ".2f"),
            Column("step vs unet", lambda r: _ratio(rows, r, "step_s"), ".2f")]
    print(format_table(rows, cols, markdown=args.markdown))
    return 0


def _ratio(rows: list[dict], row: dict, key: str) -> float | None:
    base = next((r for r in rows if r["model"] == "unet"), None)
    return None if base is None else row[key] / base[key]


__all__ = ["bench_medseg", "measure"]
