"""Binary codes packed into uint64 words, Hamming distance by XOR and popcount, and exact top-k.

A K-bit code is stored as ``W = ceil(K / 64)`` uint64 words, bit ``j`` of the code in bit
``j % 64`` of word ``j // 64`` (unused high bits are zero). Bit ``j`` is 1 where the real-valued
code is >= 0 (``sign`` with 0 mapped to +1). The Hamming distance of two codes is the popcount of
their XOR, summed over words; ``numpy.bitwise_count`` (NumPy >= 2.0) does the popcount, with a
byte-table fallback for older NumPy.

:func:`topk` is exact: it returns the k nearest codes, ties broken by the lower database index,
the same answer as a full stable sort, without sorting the database. It scans the database in
cache-sized chunks and keeps only candidates at or below the running k-th smallest distance
(an upper bound of the final one, so nothing that belongs in the result is ever dropped).
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


def _distances_into(q: np.ndarray, db: np.ndarray, start: int, stop: int, buf64: np.ndarray,
                    buf8: np.ndarray) -> np.ndarray:
    n = stop - start
    if db.shape[1] == 1:  # the common case (<= 64 bits): one XOR, one popcount, no temporaries
        np.bitwise_xor(db[start:stop, 0], q[0], out=buf64[:n])
        if hasattr(np, "bitwise_count"):
            return np.bitwise_count(buf64[:n], out=buf8[:n])
        buf8[:n] = popcount(buf64[:n])
        return buf8[:n]
    d = np.zeros(n, dtype=np.int32)
    for w in range(db.shape[1]):
        np.bitwise_xor(db[start:stop, w], q[w], out=buf64[:n])
        d += popcount(buf64[:n])
    return d


def topk_one(q: np.ndarray, db: np.ndarray, k: int, chunk: int = CHUNK,
             buffers: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of packed ``db`` [N, W] to one packed query [W]: (indices [k], distances [k]),
    nearest first, ties by lower index. ``k`` larger than N returns all N. ``buffers``: scratch
    (uint64 [chunk], uint8 [chunk]) reused across queries."""
    n = db.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    chunk = max(1, min(chunk, n))
    if buffers is None:
        buffers = (np.empty(chunk, dtype=np.uint64), np.empty(chunk, dtype=np.uint8))
    buf64, buf8 = buffers
    cand_idx: list[np.ndarray] = []
    cand_d: list[np.ndarray] = []
    held = 0
    bound = 64 * db.shape[1]  # the running k-th smallest distance seen (an upper bound)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        d = _distances_into(q, db, start, stop, buf64, buf8)
        keep = np.flatnonzero(d <= bound)
        if keep.size == 0:
            continue
        cand_idx.append(keep + start)
        cand_d.append(d[keep].astype(np.int32))
        held += keep.size
        if held >= k:
            # Tighten the bound; keep only candidates at or below it (ties kept for exactness).
            idx, dist = np.concatenate(cand_idx), np.concatenate(cand_d)
            bound = int(np.partition(dist, k - 1)[k - 1])
            sel = dist <= bound
            cand_idx, cand_d, held = [idx[sel]], [dist[sel]], int(sel.sum())
    idx, dist = np.concatenate(cand_idx), np.concatenate(cand_d)
    order = np.argsort(dist, kind="stable")[:k]  # candidates are in index order: stable = ties by index
    return idx[order], dist[order]


def topk(query: np.ndarray, database: np.ndarray, k: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k for packed queries [Q, W] against packed codes [N, W]:
    (indices [Q, k] int64, distances [Q, k] int32), nearest first, ties by lower index."""
    q, db = _check_pair(query, database)
    k = min(int(k), db.shape[0])
    db = np.ascontiguousarray(db)
    idx = np.empty((q.shape[0], k), dtype=np.int64)
    dist = np.empty((q.shape[0], k), dtype=np.int32)
    chunk = max(1, min(chunk, db.shape[0]))
    buffers = (np.empty(chunk, dtype=np.uint64), np.empty(chunk, dtype=np.uint8))
    for i in range(q.shape[0]):
        idx[i], dist[i] = topk_one(q[i], db, k, chunk, buffers)
    return idx, dist


__all__ = ["hamming", "hamming_naive", "n_words", "pack_codes", "popcount", "topk", "topk_one", "unpack_codes"]
