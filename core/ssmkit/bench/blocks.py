"""``ssmkit bench blocks``: forward and forward+backward time of every registered block.

Each block is built with ``create_block(name, d_model=d)`` and fed an input at the standard size:
B=8, d=256 and L=1024 tokens for sequence blocks, 64x64 for 2D blocks, 16x16x16 for 3D blocks
(``--quick`` shrinks all of these for a small CPU). The input layout is learned from the block
itself: its ``example_input(batch)`` (if any) gives a small input, whose channel axis
(the one of size d) is kept and whose other non-batch axes are resized to the standard size, so
channels-first, channels-last and two-stream blocks (GatedFusion: L/2 tokens per stream) all get
the right input. Blocks without ``example_input`` use their ``input_kind`` ("seq" [B, L, d],
"image2d" [B, d, H, W], "volume3d" [B, d, D, H, W]).

A second table compares the fast paths of the ops under the gated blocks with their references
(GLA chunked vs recurrent, Mega's EMA FFT vs recurrence, and on a GPU with fla-core our GLA op
against raw ``chunk_gla``): ``ssmkit.bench.gla_ema``.

Forward is timed under ``no_grad``; fwd+bwd backpropagates the mean of every output into the
inputs and all parameters. Times are medians (CUDA events on the GPU).
"""

from __future__ import annotations

import argparse
import json
import traceback

import torch

from ssmkit.bench import gla_ema
from ssmkit.bench.measure import median_ms
from ssmkit.bench.table import Column, format_table
from ssmkit.registry import create_block, list_blocks, register_bench

STANDARD = {"batch": 8, "d_model": 256, "length": 1024, "image": (64, 64), "volume": (16, 16, 16)}
QUICK = {"batch": 2, "d_model": 64, "length": 256, "image": (16, 16), "volume": (8, 8, 8)}
_KIND_SHAPE = {"seq": "length", "image2d": "image", "volume3d": "volume"}


def _spatial(n_axes: int, sizes: dict, n_streams: int = 1) -> tuple[int, ...]:
    if n_axes == 1:
        return (max(sizes["length"] // n_streams, 1),)
    if n_axes == 2:
        return tuple(sizes["image"])
    if n_axes == 3:
        return tuple(sizes["volume"])
    raise ValueError(f"cannot size an input with {n_axes} non-batch, non-channel axes")


def _resize_like(small: torch.Tensor, d: int, sizes: dict, n_streams: int, device, dtype) -> torch.Tensor:
    """A random tensor in ``small``'s layout: same channel axis (size d), standard spatial size."""
    shape = list(small.shape)
    if len(shape) < 3:
        raise ValueError(f"example input of shape {tuple(shape)} has no spatial axis to resize")
    # Channel axis: 1 (channels-first) or the last one (channels-last / tokens), whichever is d.
    chan = len(shape) - 1 if shape[-1] == d else 1
    if shape[chan] != d:
        raise ValueError(f"example input {tuple(shape)} has no axis of size d_model={d} at 1 or -1")
    others = [i for i in range(1, len(shape)) if i != chan]
    for i, n in zip(others, _spatial(len(others), sizes, n_streams)):
        shape[i] = n
    shape[0] = sizes["batch"]
    if small.is_floating_point():
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randint(0, int(small.max()) + 1, shape, device=device)


def make_input(block: torch.nn.Module, d: int, sizes: dict, device, dtype):
    """The block's input at the benchmark size (a tensor, or a tuple for multi-input blocks)."""
    if hasattr(block, "example_input"):
        small = block.example_input(2)
        if isinstance(small, (tuple, list)):
            return tuple(_resize_like(t, d, sizes, len(small), device, dtype) for t in small)
        return _resize_like(small, d, sizes, 1, device, dtype)
    kind = getattr(block, "input_kind", "seq")
    if kind not in _KIND_SHAPE:
        raise ValueError(f"block has input_kind={kind!r} and no example_input; expected one of {list(_KIND_SHAPE)}")
    spatial = _spatial({"seq": 1, "image2d": 2, "volume3d": 3}[kind], sizes)
    shape = (sizes["batch"], *spatial, d) if kind == "seq" else (sizes["batch"], d, *spatial)
    return torch.randn(shape, device=device, dtype=dtype)


def _describe(x) -> str:
    if isinstance(x, tuple):
        return " + ".join(_describe(t) for t in x)
    return "x".join(str(n) for n in x.shape)


def bench_block(name: str, sizes: dict, device: torch.device, dtype: torch.dtype, reps: int) -> dict:
    """One row: {name, shape, params, ms_fwd, ms_fwd_bwd} (or {name, error})."""
    d = sizes["d_model"]
    torch.manual_seed(0)
    block = create_block(name, d_model=d).to(device=device, dtype=dtype).train()
    x = make_input(block, d, sizes, device, dtype)
    xs = x if isinstance(x, tuple) else (x,)
    leaves = [t.requires_grad_() for t in xs if t.is_floating_point()]

    def call():
        return block(*xs)

    def fwd():
        with torch.no_grad():
            call()

    def fwd_bwd():
        out = call()
        outs = out if isinstance(out, (tuple, list)) else (out,)
        sum(o.float().mean() for o in outs if o.is_floating_point()).backward()
        for p in (*leaves, *block.parameters()):
            p.grad = None

    row = {"name": name, "shape": _describe(x), "params": sum(p.numel() for p in block.parameters())}
    row["ms_fwd"] = median_ms(fwd, device, reps)
    row["ms_fwd_bwd"] = median_ms(fwd_bwd, device, reps)
    return row


def pair_rows(device: torch.device, quick: bool, backward: bool, gpu_fla: bool) -> tuple[list[dict], list[str]]:
    """GLA chunked vs recurrent and EMA FFT vs recurrence (``bench/gla_ema.py``), plus GLA against
    raw fla-core with ``gpu_fla``; the notes say what could not run."""
    rows, notes = [], []
    gla_shapes = [(2, 2, 256, 16, 32)] if quick else None
    ema_shapes = [(2, 64, 16, 256)] if quick else None
    for bwd in (False, True) if backward else (False,):
        rows += gla_ema.gla_vs_recurrent(device, shapes=gla_shapes, backward=bwd)
        rows += gla_ema.ema_fft_vs_recurrence(device, shapes=ema_shapes, backward=bwd)
    if gpu_fla:
        try:
            rows += gla_ema.gla_fla_overhead()
        except RuntimeError as err:
            notes.append(f"note: GLA vs raw fla-core rows skipped: {err}")
    return rows, notes


BLOCK_COLUMNS = [
    Column("block", "name"), Column("input", "shape"), Column("params", "params", "d"),
    Column("fwd ms", "ms_fwd", ".2f"), Column("fwd+bwd ms", "ms_fwd_bwd", ".2f"),
    Column("bwd/fwd", lambda r: r["ms_fwd_bwd"] / r["ms_fwd"] if r.get("ms_fwd") else None, ".2f"),
    Column("error", "error", missing=""),
]


def format_blocks(rows: list[dict]) -> str:
    return format_table(rows, BLOCK_COLUMNS if any("error" in r for r in rows) else BLOCK_COLUMNS[:-1])


@register_bench("blocks")
def run(argv: list[str] | None = None) -> int:
    """Time every registered block (fwd, fwd+bwd) and the GLA / EMA fast-vs-reference pairs."""
    parser = argparse.ArgumentParser(prog="ssmkit bench blocks", description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cpu", action="store_true", help="run on the CPU (the default)")
    where.add_argument("--gpu", action="store_true", help="run on CUDA (bf16 unless --dtype says otherwise)")
    parser.add_argument("--quick", action="store_true",
                        help=f"small sizes for a small CPU: {QUICK}")
    parser.add_argument("--blocks", default="", help="comma-separated block names (default: all registered)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (median)")
    parser.add_argument("--no-pairs", action="store_true", help="skip the GLA / EMA comparisons")
    parser.add_argument("--no-blocks", action="store_true", help="only the GLA / EMA comparisons")
    parser.add_argument("--json", default=None, help="also write all rows to this JSON file")
    args = parser.parse_args(argv)

    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu given but torch sees no CUDA device")
    device = torch.device("cuda" if args.gpu else "cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.gpu else "float32"))
    sizes = QUICK if args.quick else STANDARD
    reps = args.reps or (3 if device.type == "cpu" else 20)
    names = [] if args.no_blocks else [n for n in args.blocks.split(",") if n] or list_blocks()
    unknown = sorted(set(names) - set(list_blocks()))
    if unknown:
        parser.error(f"unknown blocks {unknown}; registered: {', '.join(list_blocks())}")

    print(f"ssmkit bench blocks: device={device} ({torch.cuda.get_device_name() if args.gpu else 'cpu'}), "
          f"dtype={str(dtype)[6:]}, sizes={sizes}, median of {reps}")
    rows, failed = [], 0
    for name in names:
        try:
            rows.append(bench_block(name, sizes, device, dtype, reps))
        except Exception as err:  # one broken block must not hide the others' numbers
            failed += 1
            rows.append({"name": name, "error": f"{type(err).__name__}: {err}".splitlines()[0][:160]})
            traceback.print_exc()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(format_blocks(rows[-1:]).splitlines()[-1], flush=True)
    if rows:
        print()
        print(format_blocks(rows))

    pairs: list[dict] = []
    if not args.no_pairs:
        pairs, notes = pair_rows(device, args.quick, backward=True, gpu_fla=args.gpu)
        print()
        for note in notes:
            print(note)
        if pairs:
            print(gla_ema.format_rows(pairs))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(device), "dtype": str(dtype), "sizes": sizes, "blocks": rows,
                       "pairs": pairs}, fh, indent=1)
    return 1 if failed else 0


__all__ = ["QUICK", "STANDARD", "bench_block", "make_input", "pair_rows", "run"]
