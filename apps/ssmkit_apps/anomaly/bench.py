"""``ssmkit bench anomaly``: MAAT vs Anomaly Transformer throughput, and streaming latency.

    ssmkit bench anomaly [--gpu] [--batch 32] [--window 64] [--channels 16] [--steps 10]

Training throughput counts windows per second through forward, the two minimax backward
passes and the optimizer step; scoring throughput counts windows per second through
``score`` under no_grad; streaming latency is the mean time per row of ``StreamScorer.push``
on CPU (hop = window, so the model runs once per window of rows).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ssmkit.bench.measure import median_ms
from ssmkit.registry import register_bench


def _time(fn, device, steps: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``steps`` calls (ssmkit.bench.measure)."""
    return median_ms(fn, device, reps=steps, warmup=warmup) / 1e3


def _models(args, device):
    from ssmkit_apps.anomaly.model import MAAT

    kw = dict(
        n_channels=args.channels, window=args.window, d_model=args.d_model, n_heads=4, n_layers=2, d_ff=2 * args.d_model
    )
    torch.manual_seed(0)
    return {
        "anomaly_transformer": MAAT(mamba_layers=0, **kw).to(device),
        "maat": MAAT(mamba_layers=args.mamba_layers, **kw).to(device),
        "maat_sparse": MAAT(mamba_layers=args.mamba_layers, sparse_block=args.window // 4, **kw).to(device),
        # configs/default.yaml's MAAT: forecasting head on the Mamba path, the dev-chosen score
        "maat_forecast": MAAT(
            mamba_layers=args.mamba_layers,
            forecast=True,
            score_assoc=False,
            score_channels="max",
            score_normalize=True,
            score_smooth=5,
            score_forecast=1.0,
            **kw,
        ).to(device),
    }


def throughput(args, device: torch.device) -> list[tuple[str, str, float]]:
    from ssmkit_apps.anomaly.losses import minimax_losses

    rows = []
    x = torch.randn(args.batch, args.window, args.channels, device=device)
    amp = device.type == "cuda"
    for name, model in _models(args, device).items():
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def train_step(model=model, opt=opt):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x)
            a, b, _ = minimax_losses(out, x, 3.0)
            opt.zero_grad(set_to_none=True)
            a.backward(retain_graph=True)
            b.backward()
            opt.step()

        @torch.no_grad()
        def score(model=model):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                model.score(x)

        model.train()
        t_train = _time(train_step, device, args.steps)
        model.eval()
        t_score = _time(score, device, args.steps)
        rows.append((name, "train", args.batch / t_train))
        rows.append((name, "score", args.batch / t_score))
    return rows


def stream_latency(args) -> tuple[float, float]:
    """(mean ms per row, max ms per row) of StreamScorer.push on CPU."""
    from ssmkit_apps.anomaly.model import MAAT
    from ssmkit_apps.anomaly.scoring import StreamScorer

    torch.manual_seed(0)
    model = MAAT(
        n_channels=args.channels,
        window=args.window,
        d_model=args.d_model,
        n_heads=4,
        n_layers=2,
        d_ff=2 * args.d_model,
        mamba_layers=args.mamba_layers,
    ).eval()
    scorer = StreamScorer(model, hop=args.window)
    rows = np.random.default_rng(0).normal(size=(args.stream_rows, args.channels)).astype(np.float32)
    per = []
    for r in rows:
        t = time.perf_counter()
        scorer.push(r)
        per.append(time.perf_counter() - t)
    return 1e3 * float(np.mean(per)), 1e3 * float(np.max(per))


@register_bench("anomaly")
def bench_anomaly(argv: list[str]) -> int:
    """Anomaly app: train/score windows per second, MAAT vs Anomaly Transformer; streaming latency."""
    p = argparse.ArgumentParser(prog="ssmkit bench anomaly", description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", action="store_true", help="also time on CUDA (bf16 autocast)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--d-model", dest="d_model", type=int, default=64)
    p.add_argument("--mamba-layers", dest="mamba_layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--stream-rows", dest="stream_rows", type=int, default=2048)
    args = p.parse_args(argv)
    devices = [torch.device("cpu")]
    if args.gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("--gpu given but no CUDA device is visible")
        devices.append(torch.device("cuda"))
    print(
        f"B={args.batch} L={args.window} C={args.channels} d_model={args.d_model} layers=2 "
        f"mamba_layers={args.mamba_layers}; torch threads={torch.get_num_threads()}"
    )
    print("| device | model | train windows/s | score windows/s | train ratio vs AT | score ratio vs AT |")
    print("|---|---|---:|---:|---:|---:|")
    for dev in devices:
        rows = throughput(args, dev)
        tab = {(m, k): v for m, k, v in rows}
        for m in ("anomaly_transformer", "maat", "maat_sparse", "maat_forecast"):
            tr, sc = tab[(m, "train")], tab[(m, "score")]
            print(
                f"| {dev.type} | {m} | {tr:.0f} | {sc:.0f} | {tr / tab[('anomaly_transformer', 'train')]:.2f} | "
                f"{sc / tab[('anomaly_transformer', 'score')]:.2f} |"
            )
    mean_ms, max_ms = stream_latency(args)
    print(
        f"\nstreaming (CPU, MAAT, hop = window = {args.window}, {args.stream_rows} rows): "
        f"{mean_ms:.3f} ms/row mean, {max_ms:.1f} ms max (the row that completes a window)"
    )
    return 0
