"""``ssmkit bench hashing``: Hamming top-k search over packed binary codes, and encoder throughput.

    ssmkit bench hashing [--n 1000000] [--bits 64] [--queries 1000] [-k 10] [--threads 1]
    ssmkit bench hashing --device cuda --dtype bf16        # the encoders on a GPU

Search: ``--n`` random codes packed into uint64 words and ``--queries`` random query codes. Each
variant returns the exact k nearest codes for every query; the table gives the wall time and
code comparisons per second (queries x database size / time), by wall time and by this process's
CPU time (the two agree on an idle machine; on a shared one the CPU time is the per-core speed):

- ``numpy xor+popcount top-k``: this app's search (hamming.topk: XOR, ``numpy.bitwise_count``,
  a running k-th-distance bound, ties by index);
- ``numpy xor+popcount scan``: the distance pass alone (no top-k), the ceiling of the above;
- ``faiss IndexBinaryFlat``: faiss's exhaustive binary index (``faiss-cpu``), on the same
  number of threads; the bench checks that both return the same distances at every rank.

Encoders: images or captions per second through ``encode_image`` / ``encode_text`` of PromptHash
and the DCMH-style baseline at the default widths (eval mode, no gradients; bf16 autocast with
``--dtype bf16``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from ssmkit.registry import register_bench


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, repeats: int, device: torch.device | None = None, warmup: int = 1) -> tuple[float, float]:
    """(median wall time, median CPU time of this process) of ``fn``, in seconds. On a shared
    machine the CPU time shows what one core does, the wall time what a user waits."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeats):
        if device is not None:
            _sync(device)
        t, c = time.perf_counter(), time.process_time()
        fn()
        if device is not None:
            _sync(device)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(times), statistics.median(cpu)


def search_rows(n: int, bits: int, queries: int, k: int, repeats: int, faiss_on: bool = True) -> list[tuple]:
    """(variant, wall seconds, comparisons/s by wall time, comparisons/s by CPU time, note)."""
    from ssmkit_apps.hashing.hamming import n_words, popcount, topk

    rng = np.random.default_rng(0)
    w = n_words(bits)
    top = np.uint64((1 << (bits % 64)) - 1) if bits % 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    db = rng.integers(0, np.iinfo(np.uint64).max, size=(n, w), dtype=np.uint64, endpoint=True)
    q = rng.integers(0, np.iinfo(np.uint64).max, size=(queries, w), dtype=np.uint64, endpoint=True)
    db[:, -1] &= top
    q[:, -1] &= top
    rows = []
    result = {}

    def ours():
        result["ours"] = topk(q, db, k)

    t, c = _median_time(ours, repeats, warmup=0)
    rows.append(("numpy xor+popcount top-k", t, queries * n / t, queries * n / c,
                 f"top-{k}, exact, ties by index"))

    scan_q = q[: max(1, min(queries, 50))]

    def scan():
        for row in scan_q:
            d = popcount(db[:, 0] ^ row[0])
            for j in range(1, w):
                d = d + popcount(db[:, j] ^ row[j])

    t, c = _median_time(scan, repeats)
    rows.append(("numpy xor+popcount scan", t * queries / len(scan_q), len(scan_q) * n / t,
                 len(scan_q) * n / c, f"distances only, timed on {len(scan_q)} queries"))
    if faiss_on:
        try:
            import faiss
        except ImportError:
            rows.append(("faiss IndexBinaryFlat", float("nan"), float("nan"), float("nan"),
                         "faiss not installed (pip install faiss-cpu)"))
            return rows
        index = faiss.IndexBinaryFlat(w * 64)
        index.add(np.ascontiguousarray(db).view(np.uint8).reshape(n, w * 8))
        qb = np.ascontiguousarray(q).view(np.uint8).reshape(queries, w * 8)

        def fs():
            result["faiss"] = index.search(qb, k)

        t, c = _median_time(fs, repeats, warmup=0)
        same = np.array_equal(result["faiss"][0], result["ours"][1])
        rows.append(("faiss IndexBinaryFlat", t, queries * n / t, queries * n / c,
                     f"top-{k}; same distances as numpy: {'yes' if same else 'NO'}"))
    return rows


def encoder_rows(device: torch.device, dtype: str, batch: int, repeats: int, image_size: int = 48,
                 max_len: int = 20) -> list[tuple]:
    """(model, modality, items/s by wall time, items/s by CPU time) at the app's default widths."""
    from ssmkit_apps.hashing.model import DCMH, PromptHash

    torch.manual_seed(0)
    vocab = 2000
    models = {"prompthash": PromptHash(vocab, d_model=64, n_prompts=4, d_state=8, expand=1, max_len=max_len,
                                       image_size=image_size, n_classes=10),
              "dcmh": DCMH(vocab, d_model=64, image_size=image_size)}
    images = torch.randn(batch, 3, image_size, image_size, device=device)
    tokens = torch.randint(4, vocab, (batch, max_len), device=device)
    tokens[:, 0] = 2
    amp = dtype == "bf16"
    rows = []
    for name, model in models.items():
        model = model.to(device).eval()
        for modality, fn in (("image", lambda m=model: m.encode_image(images)),
                             ("text", lambda m=model: m.encode_text(tokens))):
            def run(fn=fn):
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    fn()

            t, c = _median_time(run, repeats, device)
            rows.append((name, modality, batch / t, batch / c))
    return rows


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


@register_bench("hashing")
def bench_hashing(argv: list[str]) -> int:
    """Hashing app: packed Hamming top-k (numpy vs faiss IndexBinaryFlat) and encoder throughput."""
    p = argparse.ArgumentParser(prog="ssmkit bench hashing", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="database codes (default 1,000,000)")
    p.add_argument("--bits", type=int, default=64, help="code length (default 64)")
    p.add_argument("--queries", type=int, default=1000, help="queries (default 1000)")
    p.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--repeats", type=int, default=1, help="timed repeats; the median is reported")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for faiss and torch (default 1: one core)")
    p.add_argument("--no-faiss", dest="faiss", action="store_false", help="skip faiss")
    p.add_argument("--device", default="cpu", help="encoder device: cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="encoder precision (bf16 autocast)")
    p.add_argument("--batch", type=int, default=64, help="encoder batch size")
    p.add_argument("--encoder-repeats", dest="encoder_repeats", type=int, default=5)
    p.add_argument("--skip-search", action="store_true")
    p.add_argument("--skip-encoders", action="store_true")
    args = p.parse_args(argv)
    if min(args.n, args.bits, args.queries, args.k, args.repeats, args.threads, args.batch) < 1:
        p.error("--n, --bits, --queries, -k, --repeats, --threads and --batch must be >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible")
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    lines = []
    if not args.skip_search:
        rows = search_rows(args.n, args.bits, args.queries, args.k, args.repeats, args.faiss)
        lines += [f"Hamming top-{args.k}: {args.queries} queries x {args.n:,} codes of {args.bits} bits "
                  f"({args.threads} thread(s), numpy {np.__version__}; load average {_load()})",
                  "| variant | wall time (s) | comparisons/s, wall (millions) | comparisons/s, CPU time (millions) "
                  "| note |", "|---|---:|---:|---:|---|"]
        lines += [f"| {v} | {t:.3f} | {r / 1e6:.0f} | {rc / 1e6:.0f} | {note} |" for v, t, r, rc, note in rows]
    if not args.skip_encoders:
        rows = encoder_rows(device, args.dtype, args.batch, args.encoder_repeats)
        if lines:
            lines.append("")
        lines.append(f"Encoders: batch {args.batch}, {device.type} {args.dtype}, {torch.get_num_threads()} thread(s)")
        if device.type == "cpu":
            lines += ["| model | modality | items/s, wall | items/s, CPU time |", "|---|---|---:|---:|"]
            lines += [f"| {m} | {mod} | {r:.0f} | {rc:.0f} |" for m, mod, r, rc in rows]
        else:  # the host's CPU time only measures waiting for the device
            lines += ["| model | modality | items/s |", "|---|---|---:|"]
            lines += [f"| {m} | {mod} | {r:.0f} |" for m, mod, r, _ in rows]
    print("\n".join(lines))
    return 0


__all__ = ["bench_hashing", "encoder_rows", "search_rows"]
