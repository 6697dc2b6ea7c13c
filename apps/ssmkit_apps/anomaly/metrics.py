"""Anomaly-detection metrics, reported side by side (the evaluation protocol of docs/design.md).

All functions take per-time-step arrays: ``labels`` [T] in {0, 1}, ``scores`` [T] (higher =
more anomalous) or binary ``pred`` [T]. Thresholds are fitted on train/validation scores by
:func:`fit_threshold`; nothing here looks at test labels to pick one.
"""

from __future__ import annotations

import numpy as np


def _as_binary(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D [T] array, got shape {arr.shape}")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1, found {np.unique(arr)[:5].tolist()}")
    return arr.astype(bool)


def _check_pair(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{na} has shape {a.shape} but {nb} has shape {b.shape}; expected equal [T]")


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of 1 as half-open [start, stop) pairs."""
    lab = _as_binary(labels, "labels").astype(np.int8)
    diff = np.diff(np.concatenate([[0], lab, [0]]))
    return list(zip(np.flatnonzero(diff == 1).tolist(), np.flatnonzero(diff == -1).tolist()))


def precision_recall_f1(pred: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Point-wise precision, recall and F1 (0 where undefined)."""
    p, y = _as_binary(pred, "pred"), _as_binary(labels, "labels")
    _check_pair(p, y, "pred", "labels")
    tp = float(np.sum(p & y))
    prec = tp / p.sum() if p.sum() else 0.0
    rec = tp / y.sum() if y.sum() else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return prec, rec, f1


def point_adjust(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The papers' adjustment: one hit inside a true segment marks the whole segment detected.

    It inflates weak detectors (a random one scores well on long segments), which is why the
    unadjusted numbers are always reported beside it."""
    p, y = _as_binary(pred, "pred").copy(), _as_binary(labels, "labels")
    _check_pair(p, y, "pred", "labels")
    for s, e in segments(y):
        if p[s:e].any():
            p[s:e] = True
    return p.astype(np.int8)


def auc_roc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = _as_binary(labels, "labels")
    _check_pair(np.asarray(scores), y, "scores", "labels")
    if y.all() or not y.any():
        return float("nan")  # undefined with one class; NaN is honest, 0.5 would be invented
    return float(roc_auc_score(y, scores))


def auc_pr(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision (scikit-learn's step-wise area under the PR curve)."""
    from sklearn.metrics import average_precision_score

    y = _as_binary(labels, "labels")
    _check_pair(np.asarray(scores), y, "scores", "labels")
    if not y.any():
        return float("nan")
    return float(average_precision_score(y, scores))


# --------------------------------------------------------------------------------------------
# range-based AUC and VUS (Paparrizos et al., "Volume Under the Surface", VLDB 2022), computed
# exactly as the TSB-AD 1.5 reference (``basic_metricor.RangeAUC_volume_opt``) computes them;
# tests/apps/anomaly/test_anomaly_vus.py checks the two against committed reference outputs.
# --------------------------------------------------------------------------------------------


def label_ranges(labels: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of 1 as closed [first, last] pairs (the reference's convention)."""
    return [(s, e - 1) for s, e in segments(labels)]


def soft_labels(labels: np.ndarray, buffer: int) -> np.ndarray:
    """Labels widened by ``buffer // 2`` steps each side with a sqrt ramp, ``sqrt(1 - d / buffer)``
    at distance d, clipped at 1: a detection just before or after an event earns partial credit
    that fades with distance."""
    y = _as_binary(labels, "labels").astype(np.float64)
    half = buffer // 2
    if half <= 0:
        return y
    out = y.copy()
    n = len(y)
    d = np.arange(1, half + 1)
    w = np.sqrt(1.0 - d / buffer)
    for s, e in label_ranges(y.astype(np.int8)):
        after = e + d
        ok = after < n
        out[after[ok]] += w[ok]
        before = s - d
        ok = before >= 0
        out[before[ok]] += w[ok]
    return np.minimum(out, 1.0)


def _merged_zones(ranges: list[tuple[int, int]], buffer: int, n: int) -> list[tuple[int, int]]:
    """Each range widened by ``buffer // 2`` each side; ranges whose zones touch are merged.
    Closed [first, last] pairs; an event "exists" in a prediction when its zone holds a hit."""
    half = buffer // 2
    zones = []
    a = max(ranges[0][0] - half, 0)
    for (_, e), (s_next, _) in zip(ranges[:-1], ranges[1:]):
        if e + half < s_next - half:
            zones.append((a, e + half))
            a = s_next - half
    zones.append((a, min(ranges[-1][1] + half, n - 1)))
    return zones


def _threshold_ranks(scores: np.ndarray, n_thresholds: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's thresholds: ``n_thresholds`` scores picked at evenly spaced ranks of the
    descending order. Returns (first threshold index at which each step is flagged [T], steps
    flagged at each threshold [K]); step i is flagged at threshold j when score_i >= t_j."""
    desc = -np.sort(-scores)
    thr = desc[np.linspace(0, len(scores) - 1, n_thresholds).astype(int)]
    # thr is non-increasing, so -thr is non-decreasing: the first j with thr_j <= score_i.
    first = np.searchsorted(-thr, -scores, side="left")
    n_pred = np.cumsum(np.bincount(first, minlength=n_thresholds + 1)[:n_thresholds]).astype(np.float64)
    return first, n_pred


def range_curves(
    scores: np.ndarray, labels: np.ndarray, buffer: int, n_thresholds: int = 250
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Range-based TPR, FPR and precision at each of ``n_thresholds`` thresholds for soft labels
    of width ``buffer``: (tpr [K], fpr [K], precision [K]).

    TP is the soft-label mass of the flagged steps; recall divides it by the mean of the hard
    positives and the soft positive mass that the flags reach, is capped at 1 and is multiplied
    by the share of events whose widened zone holds a flag (existence reward)."""
    scores = np.asarray(scores, dtype=np.float64)
    y = _as_binary(labels, "labels")
    _check_pair(scores, y, "scores", "labels")
    ranges = label_ranges(y.astype(np.int8))
    if not ranges:
        raise ValueError("range curves need at least one labelled anomaly; labels are all 0")
    first, n_pred = _threshold_ranks(scores, n_thresholds)
    return _curves_at(first, n_pred, y, ranges, buffer, n_thresholds)


def _curves_at(
    first: np.ndarray, n_pred: np.ndarray, y: np.ndarray, ranges: list[tuple[int, int]], buffer: int, K: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(y)
    P = float(y.sum())
    soft = soft_labels(y, buffer)
    # Soft mass and hard positives flagged by threshold j: a flag at step i counts from j = first[i] on.
    tp = np.cumsum(np.bincount(first, weights=soft, minlength=K + 1)[:K])
    hard = np.cumsum(np.bincount(first, weights=y.astype(np.float64), minlength=K + 1)[:K])
    zones = _merged_zones(ranges, buffer, n)
    born = np.array([first[a : b + 1].min() for a, b in zones])
    exist = np.searchsorted(np.sort(born), np.arange(K), side="right") / len(zones)
    p_new = (P + P + (tp - hard)) / 2.0  # hard positives + the soft mass of flagged buffer steps
    tpr = np.minimum(tp / p_new, 1.0) * exist
    fpr = (n_pred - tp) / (n - p_new)
    return tpr, fpr, tp / n_pred


def _areas(tpr: np.ndarray, fpr: np.ndarray, prec: np.ndarray) -> tuple[float, float]:
    """(ROC area: trapezoids from (0, 0) through the curve to (1, 1); PR area: each recall step
    times the precision reached there, from recall 0). The PR curve gets no end point of its own:
    closing it at the all-flagged corner would hand a constant score a free trapezoid."""
    x = np.concatenate([[0.0], fpr, [1.0]])
    t = np.concatenate([[0.0], tpr, [1.0]])
    roc = float(np.sum((x[1:] - x[:-1]) * (t[1:] + t[:-1]) / 2.0))
    pr = float(np.sum(np.diff(np.concatenate([[0.0], tpr])) * prec))
    return roc, pr


def range_auc(scores: np.ndarray, labels: np.ndarray, buffer: int = 0, n_thresholds: int = 250) -> tuple[float, float]:
    """(range-AUC-ROC, range-AUC-PR) at one buffer width: one slice of the VUS volume."""
    if not _as_binary(labels, "labels").any():
        return float("nan"), float("nan")
    return _areas(*range_curves(scores, labels, buffer, n_thresholds))


def vus(scores: np.ndarray, labels: np.ndarray, max_buffer: int = 100, n_thresholds: int = 250) -> tuple[float, float]:
    """(VUS-ROC, VUS-PR): range-AUC-ROC and range-AUC-PR averaged over every buffer width
    0, 1, ..., ``max_buffer`` (TSB-AD's ``slidingWindow``; its default 100 here). NaN without
    a labelled anomaly. A constant score gets about the anomaly rate (VUS-PR) and 0.5 (VUS-ROC)."""
    scores = np.asarray(scores, dtype=np.float64)
    y = _as_binary(labels, "labels")
    _check_pair(scores, y, "scores", "labels")
    if max_buffer < 0:
        raise ValueError(f"max_buffer must be >= 0, got {max_buffer}")
    ranges = label_ranges(y.astype(np.int8))
    if not ranges:
        return float("nan"), float("nan")
    first, n_pred = _threshold_ranks(scores, n_thresholds)
    rocs, prs = zip(*(_areas(*_curves_at(first, n_pred, y, ranges, b, n_thresholds)) for b in range(max_buffer + 1)))
    return float(np.mean(rocs)), float(np.mean(prs))


def vus_pr(scores: np.ndarray, labels: np.ndarray, max_buffer: int = 100, n_thresholds: int = 250) -> float:
    """Volume under the range-PR surface (see :func:`vus`)."""
    return vus(scores, labels, max_buffer, n_thresholds)[1]


def vus_roc(scores: np.ndarray, labels: np.ndarray, max_buffer: int = 100, n_thresholds: int = 250) -> float:
    """Volume under the range-ROC surface (see :func:`vus`)."""
    return vus(scores, labels, max_buffer, n_thresholds)[0]


# --------------------------------------------------------------------------------------------
# affiliation precision / recall (Huet, Navarro, Rossi, KDD 2022), on the integer time grid
# --------------------------------------------------------------------------------------------


def _zone_bounds(segs: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """Affiliation zones: each time step belongs to its closest event; a cut between two events
    falls at the midpoint of the gap. Returns half-open [lo, hi) per event."""
    bounds = []
    for j, (s, e) in enumerate(segs):
        lo = 0 if j == 0 else (segs[j - 1][1] - 1 + s) // 2 + 1
        hi = n if j == len(segs) - 1 else (e - 1 + segs[j + 1][0]) // 2 + 1
        bounds.append((lo, hi))
    return bounds


def _dist_to_interval(t: np.ndarray, s: int, e: int) -> np.ndarray:
    """Distance of steps ``t`` to the closed integer interval [s, e-1]."""
    return np.maximum(0, np.maximum(s - t, t - (e - 1)))


def affiliation(pred: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Affiliation precision and recall.

    Per event zone Z_j: precision averages, over predicted steps x in Z_j, the probability that
    a step drawn uniformly from Z_j lies at least as far from the event as x does. Recall
    averages, over event steps y, the probability that a uniform step of Z_j lies at least as
    far from y as the closest prediction in Z_j does (0 when Z_j has no prediction). Zone
    values are averaged: precision over zones holding predictions, recall over all zones.
    Returns (nan, nan) when there is no event; precision is nan when nothing is predicted.
    """
    p, y = _as_binary(pred, "pred"), _as_binary(labels, "labels")
    _check_pair(p, y, "pred", "labels")
    segs = segments(y.astype(np.int8))
    if not segs:
        return float("nan"), float("nan")
    precs, recs = [], []
    for (s, e), (lo, hi) in zip(segs, _zone_bounds(segs, len(y))):
        zone = np.arange(lo, hi)
        in_zone = zone[p[lo:hi]]
        if len(in_zone) == 0:
            recs.append(0.0)
            continue
        # Precision: survival function of the distance of a uniform zone step to the event.
        d_rand = np.sort(_dist_to_interval(zone, s, e))
        d_pred = _dist_to_interval(in_zone, s, e)
        surv = 1.0 - np.searchsorted(d_rand, d_pred, side="left") / len(zone)
        precs.append(float(surv.mean()))
        # Recall: for each event step, distance to its closest prediction vs a uniform step.
        ev = np.arange(s, e)
        d_ev = np.abs(ev[:, None] - in_zone[None, :]).min(axis=1)
        d_rand_y = np.abs(zone[None, :] - ev[:, None])
        recs.append(float((d_rand_y >= d_ev[:, None]).mean(axis=1).mean()))
    prec = float(np.mean(precs)) if precs else float("nan")
    return prec, float(np.mean(recs))


# --------------------------------------------------------------------------------------------
# UCR protocol, thresholds, the side-by-side report
# --------------------------------------------------------------------------------------------


def ucr_hit(scores: np.ndarray, labels: np.ndarray, margin: int = 100) -> dict:
    """UCR archive protocol: is the top-scoring step inside the labelled range +- ``margin``?"""
    scores = np.asarray(scores, dtype=np.float64)
    segs = segments(labels)
    _check_pair(scores, np.asarray(labels), "scores", "labels")
    if not segs:
        raise ValueError("the UCR protocol needs a labelled anomaly; labels are all 0")
    top = int(np.nanargmax(scores))
    s, e = segs[0][0], segs[-1][1]
    return {"hit": bool(s - margin <= top <= e - 1 + margin), "argmax": top, "range": [s, e - 1], "margin": margin}


def fit_threshold(
    val_scores: np.ndarray,
    *,
    percentile: float = 99.0,
    val_labels: np.ndarray | None = None,
) -> float:
    """Threshold from validation scores only: the best-F1 cut when validation labels exist
    (with at least one anomaly), else the ``percentile`` of the scores."""
    v = np.asarray(val_scores, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"val_scores must be a non-empty [T] array, got shape {v.shape}")
    if not 0.0 < percentile < 100.0:
        raise ValueError(f"percentile must be in (0, 100), got {percentile}")
    if val_labels is not None and _as_binary(val_labels, "val_labels").any():
        from sklearn.metrics import precision_recall_curve

        _check_pair(v, np.asarray(val_labels), "val_scores", "val_labels")
        prec, rec, thr = precision_recall_curve(val_labels, v)
        f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
        return float(thr[int(np.argmax(f1))])
    return float(np.percentile(v, percentile))


def evaluate_scores(scores: np.ndarray, labels: np.ndarray, threshold: float, *, vus_max_buffer: int = 100) -> dict:
    """Every reported metric for one series, as a flat dict of floats. The unadjusted ones
    (precision, recall, f1; auc_pr, vus_pr) lead; pa_* are the point-adjusted numbers of the
    papers, which a random detector inflates on long events."""
    scores = np.asarray(scores, dtype=np.float64)
    y = _as_binary(labels, "labels").astype(np.int8)
    _check_pair(scores, y, "scores", "labels")
    pred = (scores > threshold).astype(np.int8)
    p, r, f = precision_recall_f1(pred, y)
    pa, ra, fa = precision_recall_f1(point_adjust(pred, y), y)
    ap, ar = affiliation(pred, y)
    v_roc, v_pr = vus(scores, y, max_buffer=vus_max_buffer)
    return {
        "precision": p,
        "recall": r,
        "f1": f,
        "auc_roc": auc_roc(scores, y),
        "auc_pr": auc_pr(scores, y),
        "vus_roc": v_roc,
        "vus_pr": v_pr,
        "pa_precision": pa,
        "pa_recall": ra,
        "pa_f1": fa,
        "aff_precision": ap,
        "aff_recall": ar,
        "threshold": float(threshold),
        "flagged": float(pred.mean()),
    }


def require_finite_scores(scores: np.ndarray, source: str) -> None:
    """Stop (a DataError, exit 2) before a non-finite score reaches a threshold or a metric."""
    from ssmkit.engine.inputs import require_finite

    require_finite(
        scores, "scores", source, hint="the input may lie far outside the training range, or the weights are damaged"
    )
