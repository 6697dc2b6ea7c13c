"""Retrieval metrics for Hamming ranking: mAP@all, P@k and precision-recall by Hamming radius.

Relevance: a database item is relevant to a query when their multi-hot labels share at least
one class (the cross-modal hashing convention). Every database item is ranked by Hamming
distance to the query.

Two readings of a ranking with ties (Hamming distances are small integers, so ties are the rule,
not the exception):

- ``map`` / ``p@k``: ties broken by database order, i.e. a stable sort. This is what the field's
  reference code computes (there with an unstable sort, so the tie order is arbitrary).
- ``map_tie`` / ``p@k_tie``: the expectation over all orders of each tied group (McSherry and
  Najork's tie-aware measures). It does not reward a database order that happens to put
  relevant items first inside a tie, so it is the stricter number; the two agree when
  distances have no ties.

Queries with no relevant database item are left out of the means (their AP is undefined) and
counted in ``n_queries_no_relevant``.
"""

from __future__ import annotations

import numpy as np

from ssmkit_apps.hashing.hamming import hamming


def relevance(query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """[Q, N] bool: query and item share at least one label."""
    q = np.asarray(query_labels, dtype=np.float32)
    d = np.asarray(db_labels, dtype=np.float32)
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
        raise ValueError(f"labels must be [Q, C] and [N, C] with the same C; got {q.shape} and {d.shape}")
    return (q @ d.T) > 0


def _ap_stable(rel_sorted: np.ndarray) -> float:
    hits = np.cumsum(rel_sorted)
    ranks = np.arange(1, len(rel_sorted) + 1)
    r = hits[-1]
    return float((hits / ranks)[rel_sorted].sum() / r) if r else float("nan")


def _ap_tie(n_g: np.ndarray, r_g: np.ndarray, harmonic: np.ndarray) -> float:
    """Expected AP when each group g of n_g tied items (r_g relevant) is in random order.

    Inside a group starting after N_b items and R_b relevant ones, a relevant item at position
    i (1-based) has expected precision (R_b + 1 + (i - 1)(r - 1)/(n - 1)) / (N_b + i), and each
    position is relevant with probability r/n; the sum over i has a closed form in harmonic
    numbers H.
    """
    R = r_g.sum()
    if R == 0:
        return float("nan")
    total = 0.0
    n_b = r_b = 0
    for n, r in zip(n_g.tolist(), r_g.tolist()):
        if r:
            b = (r - 1) / (n - 1) if n > 1 else 0.0
            a = r_b + 1 - b
            # sum_{i=1..n} (a + b i) / (n_b + i) = b n + (a - b n_b) (H[n_b + n] - H[n_b])
            s = b * n + (a - b * n_b) * (harmonic[n_b + n] - harmonic[n_b])
            total += (r / n) * s
        n_b += n
        r_b += r
    return total / R


def ranking_metrics(dist: np.ndarray, rel: np.ndarray, ks: tuple[int, ...] = (10, 100),
                    max_distance: int | None = None) -> dict[str, float]:
    """mAP@all, tie-aware mAP@all, P@k and tie-aware P@k from distances [Q, N] and relevance [Q, N].

    ``dist`` holds non-negative integers (Hamming distances); ``max_distance`` bounds them
    (default: the largest value present)."""
    dist, rel = np.asarray(dist), np.asarray(rel, dtype=bool)
    if dist.shape != rel.shape or dist.ndim != 2:
        raise ValueError(f"dist and rel must both be [Q, N]; got {dist.shape} and {rel.shape}")
    q, n = dist.shape
    top = int(dist.max()) if max_distance is None and dist.size else int(max_distance or 0)
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])
    aps, aps_tie = [], []
    pk = {k: [] for k in ks}
    pk_tie = {k: [] for k in ks}
    for i in range(q):
        if not rel[i].any():
            continue
        order = np.argsort(dist[i], kind="stable")
        rs = rel[i][order]
        aps.append(_ap_stable(rs))
        n_g = np.bincount(dist[i], minlength=top + 1)
        r_g = np.bincount(dist[i], weights=rel[i], minlength=top + 1).astype(np.int64)
        aps_tie.append(_ap_tie(n_g, r_g, harmonic))
        cum_n, cum_r = np.cumsum(n_g), np.cumsum(r_g)
        for k in ks:
            kk = min(k, n)
            pk[k].append(rs[:kk].mean())
            # tie-aware: full groups before the cut, plus r/n of the group the cut falls into
            g = int(np.searchsorted(cum_n, kk))  # group holding rank kk
            before_n = cum_n[g - 1] if g else 0
            before_r = cum_r[g - 1] if g else 0
            pk_tie[k].append((before_r + (kk - before_n) * r_g[g] / n_g[g]) / kk)
    out = {"map": float(np.mean(aps)) if aps else float("nan"),
           "map_tie": float(np.mean(aps_tie)) if aps_tie else float("nan")}
    for k in ks:
        out[f"p@{k}"] = float(np.mean(pk[k])) if pk[k] else float("nan")
        out[f"p@{k}_tie"] = float(np.mean(pk_tie[k])) if pk_tie[k] else float("nan")
    out["n_queries_no_relevant"] = float(q - len(aps))
    return out


def pr_curve(dist: np.ndarray, rel: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of "return everything within Hamming radius r", r = 0..bits,
    micro-averaged over queries (the field's hash-lookup PR curve): ([bits + 1], [bits + 1])."""
    dist, rel = np.asarray(dist), np.asarray(rel, dtype=bool)
    n_g = np.stack([np.bincount(d, minlength=bits + 1)[: bits + 1] for d in dist])
    r_g = np.stack([np.bincount(d, weights=r, minlength=bits + 1)[: bits + 1] for d, r in zip(dist, rel)])
    cum_n, cum_r = n_g.cumsum(1), r_g.cumsum(1)
    total_r = rel.sum(1, keepdims=True)
    keep = total_r[:, 0] > 0
    if not keep.any():
        return np.full(bits + 1, np.nan), np.zeros(bits + 1)
    # Precision at radius r averages over the queries that retrieve anything within r (NaN where
    # none does); recall averages over every query with a relevant item.
    found = cum_n[keep] > 0
    prec_sum = np.where(found, cum_r[keep] / np.maximum(cum_n[keep], 1), 0.0).sum(0)
    n_found = found.sum(0)
    prec = np.where(n_found > 0, prec_sum / np.maximum(n_found, 1), np.nan)
    rec = (cum_r[keep] / total_r[keep]).mean(0)
    return prec, rec


def retrieval_metrics(q_packed: np.ndarray, db_packed: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
                      bits: int, ks: tuple[int, ...] = (10, 100)
                      ) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Metrics of packed query codes against packed database codes, and the PR curve."""
    dist = hamming(q_packed, db_packed)
    rel = relevance(q_labels, db_labels)
    return ranking_metrics(dist, rel, ks, max_distance=bits), pr_curve(dist, rel, bits)


__all__ = ["pr_curve", "ranking_metrics", "relevance", "retrieval_metrics"]
