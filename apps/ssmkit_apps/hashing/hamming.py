"""Binary codes packed into uint64 words, Hamming distance by XOR and popcount, and exact top-k.

A K-bit code is stored as ``W = ceil(K / 64)`` uint64 words, bit ``j`` of the code in bit
``j % 64`` of word ``j // 64`` (unused high bits are zero). Bit ``j`` is 1 where the real-valued
code is >= 0 (``sign`` with 0 mapped to +1). The Hamming distance of two codes is the popcount of
their XOR, summed over words; ``numpy.bitwise_count`` (NumPy >= 2.0) does the popcount, with a
byte-table fallback for older NumPy.

:func:`topk` is exact: it returns the k nearest codes, ties broken by the lower database index,
the same answer as a full stable sort, without sorting the database. Per query it computes all
distances chunk by chunk (XOR temporaries stay in cache) into one uint8 array, takes the minimum
of each block of 1024 codes, and keeps only the codes at or below the k-th smallest block
minimum (an upper bound of the k-th smallest distance, so nothing that belongs in the result is
dropped); a stable sort of those few candidates gives the answer.
"""

from __future__ import annotations

import numpy as np

_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
CHUNK = 1 << 15  # codes per scan chunk: 256 KiB of uint64, L2-resident with its temporaries


def n_words(bits: int) -> int:
    if bits < 1:
        raise ValueError(f"bits must be >= 1; got {bits}")
    return (bits + 63) // 64


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Real or {-1, +1} or {0, 1}-valued codes [N, K] -> packed uint64 words [N, ceil(K / 64)].

    Values >= 0 become bit 1 (for {0, 1} input pass ``codes * 2 - 1`` or booleans)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [N, K]; got shape {codes.shape}")
    bits = codes if codes.dtype == np.bool_ else codes >= 0
    n, k = bits.shape
    w = n_words(k)
    padded = np.zeros((n, w * 64), dtype=np.uint8)
    padded[:, :k] = bits
    # little-endian bit order inside each byte, bytes little-endian inside each word: bit j -> 2**j
    packed = np.packbits(padded.reshape(n, w * 8, 8), axis=-1, bitorder="little").reshape(n, w * 8)
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False).reshape(n, w)


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """Packed words [N, W] -> {-1, +1} int8 codes [N, bits] (the inverse of :func:`pack_codes`)."""
    packed = np.ascontiguousarray(np.asarray(packed, dtype=np.uint64))
    if packed.ndim != 2 or packed.shape[1] != n_words(bits):
        raise ValueError(f"packed codes must be [N, {n_words(bits)}] for {bits} bits; got {packed.shape}")
    raw = np.unpackbits(packed.astype("<u8").view(np.uint8), axis=-1, bitorder="little")[:, :bits]
    return raw.astype(np.int8) * 2 - 1


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array (uint8 result)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    b = np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, 8)
    return _BYTE_POPCOUNT[b].sum(-1, dtype=np.uint8)


def hamming(query: np.ndarray, database: np.ndarray) -> np.ndarray:
    """Hamming distances [Q, N] (int32) between packed queries [Q, W] and packed codes [N, W]."""
    q, db = _check_pair(query, database)
    out = np.zeros((q.shape[0], db.shape[0]), dtype=np.int32)
    for w in range(q.shape[1]):
        out += popcount(q[:, w, None] ^ db[None, :, w])
    return out


def hamming_naive(query_codes: np.ndarray, database_codes: np.ndarray) -> np.ndarray:
    """The definition: count of differing signs between real-valued codes [Q, K] and [N, K]."""
    a, b = np.asarray(query_codes) >= 0, np.asarray(database_codes) >= 0
    return (a[:, None, :] != b[None, :, :]).sum(-1).astype(np.int32)


def _check_pair(query: np.ndarray, database: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q, db = np.asarray(query), np.asarray(database)
    if q.ndim == 1:
        q = q[:, None]
    if db.ndim == 1:
        db = db[:, None]
    if q.dtype != np.uint64 or db.dtype != np.uint64:
        raise TypeError(f"packed codes must be uint64; got {q.dtype} and {db.dtype}")
    if q.ndim != 2 or db.ndim != 2 or q.shape[1] != db.shape[1]:
        raise ValueError(f"packed codes must be [Q, W] and [N, W] with the same W; got {q.shape} and {db.shape}")
    return q, db


BLOCK = 1024  # codes per block of the block-minimum prefilter


def _scratch(n: int, words: int, chunk: int) -> dict[str, np.ndarray]:
    return {"d": np.empty(n, dtype=np.uint8 if words * 64 <= 255 else np.uint16),
            "x": np.empty(chunk, dtype=np.uint64)}


def _distances(q: np.ndarray, db: np.ndarray, chunk: int, scratch: dict[str, np.ndarray]) -> np.ndarray:
    """Distances [N] of one packed query [W] to every code, computed chunk by chunk so the XOR
    temporaries stay in cache; the result is one small-integer array."""
    n, words = db.shape
    d, x = scratch["d"], scratch["x"]
    direct = words == 1 and d.dtype == np.uint8 and hasattr(np, "bitwise_count")
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        if direct:  # the common case (<= 64 bits): one XOR, one popcount written in place
            np.bitwise_xor(db[start:stop, 0], q[0], out=x[:m])
            np.bitwise_count(x[:m], out=d[start:stop])
            continue
        acc = np.zeros(m, dtype=d.dtype)
        for w in range(words):
            np.bitwise_xor(db[start:stop, w], q[w], out=x[:m])
            acc += popcount(x[:m])
        d[start:stop] = acc
    return d


def _select(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest of d [N] (ties by lower index) without sorting d.

    Every block of BLOCK codes holds at least one code at its minimum, so the k-th smallest block
    minimum U bounds the k-th smallest distance from above: the answer lies among the codes at
    distance <= U, and only blocks whose minimum is <= U can hold one."""
    n = d.shape[0]
    full = n // BLOCK
    tail = d[full * BLOCK:]
    if full + (tail.size > 0) >= k:
        blocks = d[: full * BLOCK].reshape(full, BLOCK)
        mins = blocks.min(1)
        if tail.size:  # the short last block counts like any other: it holds its minimum too
            mins = np.append(mins, tail.min())
        bound = np.partition(mins, k - 1)[k - 1]
        sel = np.flatnonzero(mins[:full] <= bound)
        rows, cols = np.nonzero(blocks[sel] <= bound)
        cand = sel[rows] * BLOCK + cols
        if tail.size:
            cand = np.concatenate([cand, np.flatnonzero(tail <= bound) + full * BLOCK])
    else:
        bound = np.partition(d, k - 1)[k - 1]
        cand = np.flatnonzero(d <= bound)
    dist = d[cand].astype(np.int32)
    order = np.argsort(dist, kind="stable")[:k]  # candidates are in index order: ties by index
    return cand[order].astype(np.int64), dist[order]


def topk_one(q: np.ndarray, db: np.ndarray, k: int, chunk: int = CHUNK,
             scratch: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of packed ``db`` [N, W] to one packed query [W]: (indices [k], distances [k]),
    nearest first, ties by lower index. ``k`` larger than N returns all N. ``scratch``: buffers
    from a previous call, reused across queries."""
    n = db.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    chunk = max(1, min(chunk, n))
    if scratch is None:
        scratch = _scratch(n, db.shape[1], chunk)
    return _select(_distances(q, db, chunk, scratch), k)


def topk(query: np.ndarray, database: np.ndarray, k: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k for packed queries [Q, W] against packed codes [N, W]:
    (indices [Q, k] int64, distances [Q, k] int32), nearest first, ties by lower index."""
    q, db = _check_pair(query, database)
    k = min(int(k), db.shape[0])
    db = np.ascontiguousarray(db)
    idx = np.empty((q.shape[0], k), dtype=np.int64)
    dist = np.empty((q.shape[0], k), dtype=np.int32)
    chunk = max(1, min(chunk, db.shape[0]))
    scratch = _scratch(db.shape[0], db.shape[1], chunk)
    for i in range(q.shape[0]):
        idx[i], dist[i] = topk_one(q[i], db, k, chunk, scratch)
    return idx, dist


__all__ = ["hamming", "hamming_naive", "n_words", "pack_codes", "popcount", "topk", "topk_one", "unpack_codes"]
