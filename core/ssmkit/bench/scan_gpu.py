"""GPU selective-scan benchmark: ssmkit's Triton scan, and mamba-ssm's CUDA scan beside it.

``gpu_table(argv)`` (``ssmkit bench scan --gpu``) times, per cell, the forward (no grad) and the
forward+backward (through ``torch.autograd.grad`` over every input), with CUDA events (median of
``--reps``), and reports each time against two floors measured in the same run: the memory floor
(bytes that must cross HBM over the measured device-to-device copy bandwidth) and the exp floor
(B·D·L·N exp2 over the measured exp2 rate of a Triton kernel), plus the peak extra memory of one
forward+backward.

With ``--vs mamba-ssm`` the peer is timed in the same process on the same inputs, the two
interleaved round by round: the user's installed ``mamba_ssm`` (with its ``selective_scan_cuda``
extension), else the sources in ``--peer-dir`` (a folder with mamba-ssm's ``build_and_load.py``,
whose extensions are built with ``torch.utils.cpp_extension`` on first use). Before a cell is
timed, its outputs and every gradient are checked to agree; a cell that disagrees is reported and
not timed. mamba-ssm's scan has no reverse mode and no packed sequences: for a reverse cell it is
timed on flipped copies (the copies included, as a caller would make them), for a packed cell on
the sequences padded into a batch (made before timing). The peer is never imported unless asked
for, and nothing in ssmkit depends on it.

Cells: the three reference shapes by default; ``--sweep`` runs :data:`SWEEP`, which covers
L in {256, 1024, 2048, 4096, 16384} for B·D from B=1, D=768 to B=8, D=1536 (B=4, D=2048 at
L=16384), N in {16, 64}, fp32 / bf16 / fp16, z on and off, G > 1, the reverse scan and packed
sequences, and prints the geometric means of the ratios per dtype. Nothing here imports Triton or
touches CUDA until a function runs, so the registry can import this module on any machine.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import statistics
import sys
import types
from dataclasses import asdict, dataclass

import torch

from ssmkit.bench.table import Column, format_table

TABLE_SHAPES: list[tuple[int, int, int, int]] = [(8, 1536, 4096, 16), (4, 2048, 16384, 16), (8, 1536, 4096, 64)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PEERS = ("none", "mamba-ssm")


@dataclass(frozen=True)
class Cell:
    """One benchmark cell: a [batch, dim, L] scan with N states in ``dtype``; ``z`` gates the output,
    ``groups`` B/C groups, ``reverse`` scans right to left, ``nseq`` > 0 packs that many sequences
    of different lengths (summing to L) into a batch of one with cu_seqlens."""

    batch: int
    dim: int
    L: int
    N: int
    dtype: str
    z: bool = True
    groups: int = 1
    reverse: bool = False
    nseq: int = 0

    @property
    def label(self) -> str:
        extra = ("" if self.z else " no-z") + (f" G{self.groups}" if self.groups > 1 else "") + \
            (" rev" if self.reverse else "") + (f" packed{self.nseq}" if self.nseq else "")
        return f"{self.batch},{self.dim},{self.L},{self.N}{extra}"


def _sweep() -> list[Cell]:
    small, medium, large = (1, 768), (4, 1536), (8, 1536)
    cells = []
    for L in (256, 1024, 2048, 4096, 16384):
        for size in (small, medium, large if L < 16384 else (4, 2048)):
            cells.append(Cell(*size, L, 16, "bf16"))
        for size in (small, large if L < 16384 else (4, 2048)):
            cells.append(Cell(*size, L, 16, "fp32"))
    cells += [Cell(8, 1536, 1024, 16, "fp16"), Cell(8, 1536, 4096, 16, "fp16"),
              Cell(1, 768, 256, 64, "bf16"), Cell(4, 1536, 1024, 64, "bf16"), Cell(8, 1536, 4096, 64, "bf16"),
              Cell(8, 1536, 4096, 64, "fp32"), Cell(4, 1536, 1024, 64, "fp32"),
              Cell(8, 1536, 2048, 16, "bf16", z=False), Cell(1, 768, 1024, 16, "fp32", z=False),
              Cell(8, 1536, 2048, 16, "bf16", groups=4), Cell(4, 1536, 2048, 16, "fp32", groups=2),
              Cell(4, 1536, 2048, 16, "bf16", reverse=True), Cell(1, 768, 1024, 16, "fp32", reverse=True),
              Cell(1, 1536, 8192, 16, "bf16", nseq=4), Cell(1, 768, 4096, 16, "fp32", nseq=6)]
    return cells


SWEEP: list[Cell] = _sweep()


# ---------------------------------------------------------------------------------- inputs
def make_inputs(shape, dtype: torch.dtype, device, requires_grad: bool = False, groups: int = 1, seed: int = 0,
                gate: bool = True):
    """Random table inputs: u, delta [B, D, L]; A [D, N]; B, C [B, G, N, L]; D, delta_bias [D]; z
    (softplus(delta) around 0.13, A = -exp(0.5 N(0, 1)); no initial state)."""
    from ssmkit.ops.selective_scan.samples import sample_inputs

    batch, dim, L, N = shape
    ins = sample_inputs(batch, dim, L, N, groups=groups, dtype=dtype, device=device, gate=gate, init=False,
                        delta_shift=-2.0, delta_scale=0.5, decay="lognormal", seed=seed, requires_grad=requires_grad)
    ins.pop("initial_state")
    return ins


def _lengths(cell: Cell) -> list[int]:
    """Sequence lengths of a packed cell: uneven (ratios 1:2:3:...), summing to L."""
    weights = list(range(1, cell.nseq + 1))
    lengths = [cell.L * w // sum(weights) for w in weights]
    lengths[-1] += cell.L - sum(lengths)
    return lengths


def run_scan(ins: dict, backend: str, **kw):
    from ssmkit.ops.selective_scan import selective_scan

    return selective_scan(ins["u"], ins["delta"], ins["A"], ins["B"], ins["C"], D=ins["D"], z=ins.get("z"),
                          delta_bias=ins["delta_bias"], delta_softplus=True, backend=backend, **kw)


def fwd_bwd_call(ins: dict, backend: str, gy: torch.Tensor, **kw):
    """A closure running the scan's forward and backward once, for timing. It goes through
    torch.autograd.grad, which hands the gradients back instead of adding them into .grad: from the
    second call on, y.backward() would also time one read-modify-write of every input-sized
    gradient (0.2-0.5 ms at the table's shapes), which is not the op's work (docs/kernels.md)."""
    leaves = [t for t in ins.values() if t is not None and t.requires_grad]
    return lambda: torch.autograd.grad(run_scan(ins, backend, **kw), leaves, gy)


# ----------------------------------------------------------------------------------- timing
def cuda_time_ms(fn, reps: int = 10, warmup: int = 2, device_only: bool = False) -> float:
    """Median over ``reps`` of CUDA-event times around ``fn()``, after ``warmup`` calls (isolated
    call by default, host work hidden behind a spin kernel with ``device_only``: see
    :func:`ssmkit.bench.measure.median_ms`, which also interleaves several callables)."""
    from ssmkit.bench.measure import median_ms

    return median_ms(fn, "cuda", reps=reps, warmup=warmup, device_only=device_only)


def copy_bandwidth(device, nbytes: int = 1 << 30, reps: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    src = torch.empty(nbytes // 4, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda: dst.copy_(src), reps=reps)
    return 2 * nbytes / (ms * 1e-3)


def exp2_rate(device, reps: int = 10) -> float:
    """Measured exp2 throughput (exp2 per second) of a Triton kernel with many independent chains."""
    import triton
    import triton.language as tl

    @triton.jit
    def _exp2_chain(x_ptr, out_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        acc = tl.load(x_ptr + offs)
        for _ in range(ITERS):
            acc = tl.exp2(acc * -0.75)  # stays in (0.5, 1]: no denormals, no overflow
        tl.store(out_ptr + offs, acc)

    props = torch.cuda.get_device_properties(device)
    block, iters = 2048, 512
    nprog = props.multi_processor_count * 16
    x = torch.rand(nprog * block, device=device)
    out = torch.empty_like(x)
    ms = cuda_time_ms(lambda: _exp2_chain[(nprog,)](x, out, ITERS=iters, BLOCK=block, num_warps=8), reps=reps)
    return x.numel() * iters / (ms * 1e-3)


def floor_bytes(shape, elem: int, backward: bool, gate: bool = True, groups: int = 1) -> int:
    """Fewest HBM bytes: the forward reads u, delta, (z), B, C and writes y; the backward reads u,
    delta, (z), dy, B, C and writes du, ddelta, (dz), dB, dC."""
    batch, dim, L, N = shape
    x = batch * dim * L * elem
    bc = batch * groups * N * L * elem
    fwd = (3 + gate) * x + 2 * bc
    if not backward:
        return fwd
    return fwd + (6 + 2 * gate) * x + 4 * bc


def floor_exps(shape, backward: bool) -> int:
    """exp2 count: B·D·L·N forward; the backward needs the same decays again (recomputed)."""
    batch, dim, L, N = shape
    return batch * dim * L * N * (2 if backward else 1)


# ------------------------------------------------------------------------------------ peers
def load_peer(name: str, peer_dir: str | None = None, layer: bool = False) -> tuple[object | None, str]:
    """(module namespace with ``scan`` and ``Mamba``, how it was found) or (None, why not).

    ``scan(u, delta, A, B, C, D, z, delta_bias)`` is mamba-ssm's ``selective_scan_fn`` with
    softplus; ``Mamba`` its layer with the causal-conv1d fast path, or None when causal-conv1d
    is missing or ``layer`` is False (then the conv extension is neither built nor loaded). Tries
    the installed ``mamba_ssm`` first, then ``peer_dir/build_and_load.py``."""
    if name == "none":
        return None, "no peer asked for (--vs mamba-ssm times one)"
    errors = []
    try:
        iface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        if iface.selective_scan_cuda is None:
            raise ImportError("mamba_ssm is installed without its selective_scan_cuda extension")
        mamba_cls = None
        if layer:
            simple = importlib.import_module("mamba_ssm.modules.mamba_simple")
            if getattr(simple, "causal_conv1d_fn", None) is not None:
                mamba_cls = simple.Mamba
        return types.SimpleNamespace(scan=_peer_scan(iface.selective_scan_fn), Mamba=mamba_cls), \
            f"installed mamba_ssm {getattr(sys.modules.get('mamba_ssm'), '__version__', '?')}"
    except Exception as err:  # ImportError, or a broken install
        errors.append(f"installed mamba_ssm: {err}")
    peer_dir = peer_dir or os.environ.get("SSMKIT_PEER_DIR")
    if peer_dir:
        path = os.path.join(peer_dir, "build_and_load.py")
        try:
            spec = importlib.util.spec_from_file_location("ssmkit_peer_build", path)
            builder = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(builder)
            if "selective_scan_cuda" not in sys.modules:  # else already loaded (built earlier)
                builder.load_selective_scan_cuda()
            mamba_cls, how = None, f"built from {peer_dir}"
            if layer:
                try:
                    mamba_cls = builder.mamba_ssm_layer()
                except Exception as err:  # the conv extension failed: the scan alone is still a peer
                    how += f" (no layer: {err})"
            python_dir = os.path.join(peer_dir, "mamba-ssm-python")
            if python_dir not in sys.path:
                sys.path.insert(0, python_dir)
            iface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
            return types.SimpleNamespace(scan=_peer_scan(iface.selective_scan_fn), Mamba=mamba_cls), how
        except Exception as err:
            errors.append(f"{path}: {err}")
    else:
        errors.append("no --peer-dir (or SSMKIT_PEER_DIR) with build_and_load.py")
    return None, "; ".join(errors)


def _peer_scan(selective_scan_fn):
    def scan(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)

    return scan


# ----------------------------------------------------------------------------------- a cell
def _rel(a: torch.Tensor, e: torch.Tensor) -> float:
    a, e = a.detach().float(), e.detach().float()
    if not bool(torch.isfinite(a).all()):
        return float("inf")
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-12)) if e.numel() else 0.0


class _CellRun:
    """Inputs of one cell and the closures that run each variant on them.

    ssmkit gets the cell as defined (packed sequences with cu_seqlens, the reverse flag); the peer
    gets the same values: padded into a batch for a packed cell, flipped in time (inside the timed
    call) for a reverse cell."""

    def __init__(self, cell: Cell, device, peer):
        self.cell, self.device = cell, device
        dtype = DTYPES[cell.dtype]
        shape = (cell.batch, cell.dim, cell.L, cell.N)
        self.ins = make_inputs(shape, dtype, device, requires_grad=True, groups=cell.groups, gate=cell.z)
        self.gy = torch.randn(cell.batch, cell.dim, cell.L, device=device, dtype=dtype)
        self.kw = {"reverse": True} if cell.reverse else {}
        self.spans = None
        if cell.nseq:
            lengths = _lengths(cell)
            starts = [sum(lengths[:i]) for i in range(len(lengths))]
            self.spans = list(zip(starts, lengths))
            self.kw["cu_seqlens"] = torch.tensor(starts + [cell.L], device=device, dtype=torch.int32)
        self.leaves = [t for t in self.ins.values() if t is not None]
        self.peer = peer
        if peer is not None:
            self.peer_ins, self.peer_gy = self._peer_inputs()
            self.peer_leaves = [t for t in self.peer_ins.values() if t is not None]

    def _peer_inputs(self):
        ins = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in self.ins.items()}
        if self.spans is None:
            return ins, self.gy
        maxlen = max(n for _, n in self.spans)

        def pad(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            out = t.new_zeros(len(self.spans), *t.shape[1:-1], maxlen)
            for i, (s, n) in enumerate(self.spans):
                out[i, ..., :n] = t[0, ..., s:s + n]
            return out

        padded = {k: (pad(v.detach()).requires_grad_(True) if k in ("u", "delta", "z", "B", "C") and v is not None
                      else v) for k, v in ins.items()}
        return padded, pad(self.gy)

    def _unpad(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[i:i + 1, ..., :n] for i, (_, n) in enumerate(self.spans)], dim=-1)

    def ours(self):
        return run_scan(self.ins, "triton", **self.kw)

    def theirs(self):
        ins = self.peer_ins
        names = ("u", "delta", "B", "C", "z")
        t = {k: ins[k] for k in names}
        if self.cell.reverse:
            t = {k: (v.flip(-1) if v is not None else None) for k, v in t.items()}
        y = self.peer.scan(t["u"], t["delta"], ins["A"], t["B"], t["C"], ins["D"], t["z"], ins["delta_bias"])
        return y.flip(-1) if self.cell.reverse else y

    def ours_both(self):
        return torch.autograd.grad(self.ours(), self.leaves, self.gy)

    def theirs_both(self):
        return torch.autograd.grad(self.theirs(), self.peer_leaves, self.peer_gy)

    def check(self) -> dict:
        """Relative errors of the peer's output and gradients against ours (largest first)."""
        y, y2 = self.ours(), self.theirs()
        g, g2 = self.ours_both(), self.theirs_both()
        names = [k for k, v in self.ins.items() if v is not None]
        if self.spans is not None:
            y2 = self._unpad(y2)
            g2 = [self._unpad(b) if k in ("u", "delta", "z", "B", "C") else b for k, b in zip(names, g2)]
        errs = {"y": _rel(y2, y)}
        errs.update({"d" + k: _rel(b, a) for k, a, b in zip(names, g, g2)})
        return errs


def _peak_mb(fn, device) -> float:
    from ssmkit.bench.measure import peak_bytes

    fn()
    peak = peak_bytes(fn, device)
    return peak / 2**20 if peak is not None else float("nan")


def _under(tiles: dict, fn):
    """``fn`` run under the tile knobs ``tiles`` (the forward keeps its plan for the backward)."""
    from ssmkit.ops.selective_scan.triton_scan import tile_config

    def call():
        with tile_config(**tiles):
            return fn()

    return call


def _variant_name(tiles: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in tiles.items())


def measure_cell(cell: Cell, device, peer, reps: int, device_only: bool, bw: float, ex: float,
                 variants: list[dict] = ()) -> dict:
    """Check, then time one cell: ours, ours under each knob set of ``variants``, and (when given)
    the peer's, interleaved. Variants land in ``row["variants"]`` as {name: (fwd ms, fwd+bwd ms)}."""
    from ssmkit.bench.measure import median_ms

    run = _CellRun(cell, device, peer)
    shape = (cell.batch, cell.dim, cell.L, cell.N)
    elem = torch.empty((), dtype=DTYPES[cell.dtype]).element_size()
    row = dict(asdict(cell), label=cell.label, device_only=device_only)
    row["mem_floor_fwd_ms"] = floor_bytes(shape, elem, False, cell.z, cell.groups) / bw * 1e3
    row["mem_floor_fwdbwd_ms"] = floor_bytes(shape, elem, True, cell.z, cell.groups) / bw * 1e3
    row["exp_floor_fwd_ms"] = floor_exps(shape, False) / ex * 1e3
    row["exp_floor_fwdbwd_ms"] = floor_exps(shape, True) / ex * 1e3
    timed = {"ours": (run.ours, run.ours_both)}
    for tiles in variants:
        timed[_variant_name(tiles)] = (_under(tiles, run.ours), _under(tiles, run.ours_both))
    if peer is not None:
        errs = run.check()
        tol = 1e-3 if cell.dtype == "fp32" else 5e-2
        row["max_rel_err"] = max(errs.values())
        row["worst"] = max(errs, key=errs.get)
        row["agree"] = row["max_rel_err"] < tol
        if row["agree"]:
            timed["peer"] = (run.theirs, run.theirs_both)
    with torch.no_grad():
        fwd = median_ms({k: v[0] for k, v in timed.items()}, device, reps=reps, warmup=2, device_only=device_only)
    both = median_ms({k: v[1] for k, v in timed.items()}, device, reps=reps, warmup=2, device_only=device_only)
    row.update(fwd_ms=fwd["ours"], fwdbwd_ms=both["ours"], peak_mb=_peak_mb(run.ours_both, device))
    if "peer" in timed:
        row.update(peer_fwd_ms=fwd["peer"], peer_fwdbwd_ms=both["peer"], peer_peak_mb=_peak_mb(run.theirs_both, device))
        row["fwd_x"] = fwd["peer"] / fwd["ours"]
        row["fwdbwd_x"] = both["peer"] / both["ours"]
    row["variants"] = {_variant_name(t): (fwd[_variant_name(t)], both[_variant_name(t)]) for t in variants}
    del run
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


COLUMNS = [
    Column("cell (B,D,L,N)", "label", width=26), Column("dtype", "dtype", width=5),
    Column("fwd ms", "fwd_ms", ".3f", width=7), Column("mamba", "peer_fwd_ms", ".3f", width=7),
    Column("x", "fwd_x", ".2f", width=5),
    Column("mem%", lambda r: 100 * r["mem_floor_fwd_ms"] / r["fwd_ms"], ".0f", width=4),
    Column("exp%", lambda r: 100 * r["exp_floor_fwd_ms"] / r["fwd_ms"], ".0f", width=4),
    Column("f+b ms", "fwdbwd_ms", ".3f", width=7), Column("mamba", "peer_fwdbwd_ms", ".3f", width=7),
    Column("x", "fwdbwd_x", ".2f", width=5),
    Column("mem%", lambda r: 100 * r["mem_floor_fwdbwd_ms"] / r["fwdbwd_ms"], ".0f", width=4),
    Column("exp%", lambda r: 100 * r["exp_floor_fwdbwd_ms"] / r["fwdbwd_ms"], ".0f", width=4),
    Column("peak MB", "peak_mb", ".0f", width=7), Column("mamba", "peer_peak_mb", ".0f", width=6),
    Column("err", "max_rel_err", ".1e", width=7),
]


def geomeans(rows: list[dict]) -> dict:
    """{dtype: (fwd, fwd+bwd) geometric mean of the ratios} over the rows that have both."""
    out = {}
    for dname in DTYPES:
        sel = [r for r in rows if r["dtype"] == dname and "fwd_x" in r]
        if sel:
            out[dname] = tuple(math.exp(statistics.fmean(math.log(r[k]) for r in sel)) for k in ("fwd_x", "fwdbwd_x"))
    return out


def _cells(args) -> list[Cell]:
    if args.sweep:
        cells = SWEEP
    else:
        cells = [Cell(*TABLE_SHAPES[int(i)], d) for i in args.shapes.split(",") if i for d in args.dtypes.split(",")
                 if d]
    if args.shard:
        k, n = (int(v) for v in args.shard.split("/"))
        cells = cells[k::n]
    return cells


def _variants_for(cell: Cell, args) -> list[dict]:
    fits = cell.L <= args.variants_max_l and cell.batch * cell.dim <= args.variants_max_bd
    return args.variants if fits else []


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(prog="ssmkit bench scan --gpu",
                                description="ssmkit's Triton selective scan on a GPU, with floors, and mamba-ssm's "
                                            "CUDA scan timed beside it on the same inputs (--vs mamba-ssm)")
    p.add_argument("--vs", choices=PEERS, default="none", help="time this peer in the same process (default none)")
    p.add_argument("--peer-dir", default=None,
                   help="folder with mamba-ssm's build_and_load.py, used when mamba_ssm is not installed "
                        "(default: $SSMKIT_PEER_DIR)")
    p.add_argument("--sweep", action="store_true",
                   help="the full sweep (L 256..16384, B·D small to large, N 16/64, fp32/bf16/fp16, z on/off, G>1, "
                        "reverse, packed) instead of the three reference shapes")
    p.add_argument("--shapes", default="0,1,2", help="indices into TABLE_SHAPES (default: all three; not with --sweep)")
    p.add_argument("--dtypes", default="fp32,bf16", help="dtypes of the reference shapes (default fp32,bf16)")
    p.add_argument("--reps", type=int, default=10, help="timed runs per cell and variant (median; default 10)")
    p.add_argument("--device-only", action="store_true",
                   help="time only the kernels (host work hidden behind a spin kernel), not the isolated call")
    p.add_argument("--shard", default=None, help="k/n: run every n-th cell from the k-th (to spread --warm-only)")
    p.add_argument("--warm-only", action="store_true",
                   help="run each cell's ssmkit forward+backward once and exit: compiles the kernels into Triton's "
                        "cache (several shards in parallel processes), no timing")
    p.add_argument("--variants", type=json.loads, default=[],
                   help='tile-knob sets timed beside the defaults, a JSON list: \'[{"occupancy": 1}]\' '
                        "(TileConfig fields, docs/kernels.md)")
    p.add_argument("--variants-max-l", type=int, default=1 << 30, help="time --variants only on cells up to this L")
    p.add_argument("--variants-max-bd", type=int, default=1 << 30,
                   help="time --variants only on cells with B·D up to this")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv or [])
    if args.reps < 1:
        p.error(f"--reps must be at least 1; got {args.reps}")
    return args


def gpu_table(argv: list[str] | None = None) -> list[dict]:
    """The GPU table (reference shapes or ``--sweep``), one dict per cell; see the module docstring."""
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise RuntimeError("ssmkit bench scan --gpu needs a CUDA device")
    device = torch.device("cuda")
    cells = _cells(args)
    if args.warm_only:
        for cell in cells:
            run = _CellRun(cell, device, None)
            for tiles in [{}] + _variants_for(cell, args):
                with torch.no_grad():
                    _under(tiles, run.ours)()
                _under(tiles, run.ours_both)()
            torch.cuda.synchronize()
            del run
        print(f"# compiled {len(cells)} cells")
        return []
    import triton

    peer, how = load_peer(args.vs, args.peer_dir)
    name = torch.cuda.get_device_name(device)
    bw, ex = copy_bandwidth(device), exp2_rate(device)
    print(f"# {name}: copy {bw / 1e12:.2f} TB/s (read+write), Triton exp2 {ex / 1e12:.2f} Texp2/s; torch "
          f"{torch.__version__}, triton {triton.__version__}; "
          + ("device time only" if args.device_only else "isolated calls (host time included)"))
    print(f"# peer: {how}" if peer is not None else f"# no peer was timed: {how}")
    print(format_table([], COLUMNS))
    rows = []
    for cell in cells:
        try:
            row = measure_cell(cell, device, peer, args.reps, args.device_only, bw, ex, _variants_for(cell, args))
        except torch.cuda.OutOfMemoryError:
            print(f"{cell.label:<26} {cell.dtype:<5} out of memory")
            torch.cuda.empty_cache()
            continue
        rows.append(row)
        line = format_table([row], COLUMNS, header=False)
        if peer is not None and not row["agree"]:
            line += f"  DISAGREE ({row['worst']} rel err {row['max_rel_err']:.2e}): not timed against the peer"
        print(line, flush=True)
        for vname, (vf, vb) in row["variants"].items():
            ratio = (f", x {row['peer_fwd_ms'] / vf:.2f} / {row['peer_fwdbwd_ms'] / vb:.2f}"
                     if "peer_fwd_ms" in row else "")
            print(f"    [{vname}] fwd {vf:.3f} ms, fwd+bwd {vb:.3f} ms{ratio}", flush=True)
    print("x = mamba-ssm ms / ssmkit ms (above 1: ssmkit faster); mem%/exp% = floor / measured; peak MB = extra "
          "memory of one fwd+bwd; err = largest relative difference of the peer's output or gradients to ours")
    for dname, (gf, gb) in geomeans(rows).items():
        print(f"# geometric mean of x, {dname}: fwd {gf:.2f}, fwd+bwd {gb:.2f}")
    slower = [f"{r['label']} {r['dtype']} ({'fwd' if r['fwd_x'] < 1 else 'fwd+bwd'})" for r in rows
              if "fwd_x" in r and min(r["fwd_x"], r["fwdbwd_x"]) < 1]
    if peer is not None:
        print(f"# cells slower than mamba-ssm: {len(slower)}" + (": " + "; ".join(slower) if slower else ""))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(device=name, torch=torch.__version__, triton=triton.__version__, peer=how, rows=rows), fh,
                      indent=1)
    return rows


__all__ = ["DTYPES", "SWEEP", "TABLE_SHAPES", "Cell", "copy_bandwidth", "cuda_time_ms", "exp2_rate", "floor_bytes",
           "floor_exps", "fwd_bwd_call", "geomeans", "gpu_table", "load_peer", "make_inputs", "measure_cell",
           "run_scan"]
