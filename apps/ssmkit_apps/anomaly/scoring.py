"""Per-step anomaly scores from window scores, in batch and as a bounded-memory stream.

One rule assigns each time step to exactly one window, so batch and streaming scores are
identical by construction. With window L, hop h and lag g (1 <= h, g >= 0, g + h <= L):

- the first window covers rows [0, L) and emits its first L - g scores;
- every h rows after that, the window ending at the newest row emits h scores that end g rows
  before its right edge;
- at the end of the series, a final window ending at the last row emits the rows not yet
  scored (its last rows, fewer than g + h).

h = L, g = 0 scores non-overlapping blocks (the Anomaly Transformer protocol). A lag keeps
scores away from the window's right edge, where the model sees no future context; a row's
score then arrives g rows after the row. h = 1 scores every row with its own window.
"""

from __future__ import annotations

import collections
import math
import sys
from collections.abc import Iterable, Iterator
from typing import IO

import numpy as np
import torch


def window_plan(T: int, window: int, hop: int, lag: int = 0) -> list[tuple[int, int, int]]:
    """[(window start, first, stop)]: each window emits its positions [first, stop); together
    they cover rows 0..T-1 exactly once."""
    if not 1 <= hop <= window:
        raise ValueError(f"hop must be in [1, window={window}], got {hop}")
    if lag < 0 or lag + hop > window:
        raise ValueError(f"lag must be in [0, window - hop = {window - hop}], got {lag}")
    if T < window:
        raise ValueError(f"{T} rows is fewer than one window of {window} rows")
    plan = [(0, 0, window - lag)]
    end = window - 1
    while end + hop <= T - 1:
        end += hop
        plan.append((end - window + 1, window - lag - hop, window - lag))
    done = end - lag + 1  # rows scored so far
    if done < T:
        plan.append((T - window, done - (T - window), window))
    return plan


@torch.no_grad()
def score_windows(model, windows: torch.Tensor, device: torch.device | None = None, amp_dtype=None) -> torch.Tensor:
    """Standardised windows [N, L, C] -> scores [N, L] (float32, on CPU)."""
    device = device or next(iter(model.buffers())).device
    x = windows.to(device)
    if amp_dtype is not None and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=amp_dtype):
            s = model.score(x)
    else:
        s = model.score(x)
    return s.float().cpu()


@torch.no_grad()
def score_series(model, series: np.ndarray, hop: int, *, lag: int = 0, batch_size: int = 64, device=None,
                 amp_dtype=None, normalized: bool = False) -> np.ndarray:
    """Raw (or ``normalized=True``: already standardised) series [T, C] -> per-step scores [T]."""
    x = torch.from_numpy(np.ascontiguousarray(series, dtype=np.float32))
    model.check_input(x[None, :1])
    if not normalized:
        x = model.normalize(x.to(model.scale_mean.device)).cpu()
    plan = window_plan(x.shape[0], model.window, hop, lag)
    out = np.empty(x.shape[0], dtype=np.float32)
    for i in range(0, len(plan), batch_size):
        chunk = plan[i : i + batch_size]
        wins = torch.stack([x[s : s + model.window] for s, _, _ in chunk])
        sc = score_windows(model, wins, device, amp_dtype).numpy()
        for (s, a, b), row in zip(chunk, sc):
            out[s + a : s + b] = row[a:b]
    return out


@torch.no_grad()
def channel_error_scale(model, normalized: np.ndarray, hop: int, *, lag: int = 0, batch_size: int = 64,
                        device=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean squared error per channel [C] over the steps that the window plan emits for a
    standardised series [T, C]: (reconstruction, one-step forecast or None for models without
    a forecasting head). The scales of normalised scores, fitted on validation. A window's
    first step has no forecast, so the forecast mean skips it."""
    x = torch.from_numpy(np.ascontiguousarray(normalized, dtype=np.float32))
    device = device or next(iter(model.buffers())).device
    plan = window_plan(x.shape[0], model.window, hop, lag)
    rec_sum = torch.zeros(x.shape[1], dtype=torch.float64)
    fc_sum = torch.zeros(x.shape[1], dtype=torch.float64)
    rec_n = fc_n = 0
    has_fc = False
    for i in range(0, len(plan), batch_size):
        chunk = plan[i : i + batch_size]
        wins = torch.stack([x[s : s + model.window] for s, _, _ in chunk]).to(device)
        out = model(wins)
        err = (out["recon"].float() - wins).pow(2).cpu().double()
        fc = out.get("forecast")
        if fc is not None:
            has_fc = True
            fe = (fc[:, :-1].float() - wins[:, 1:]).pow(2).cpu().double()
        for j, (_, a, b) in enumerate(chunk):
            rec_sum += err[j, a:b].sum(0)
            rec_n += b - a
            if fc is not None:
                a1 = max(a, 1)  # step t's forecast is row t - 1's prediction
                fc_sum += fe[j, a1 - 1 : b - 1].sum(0)
                fc_n += b - a1
    rec = np.maximum((rec_sum / rec_n).numpy(), 1e-8).astype(np.float32)
    fcs = np.maximum((fc_sum / max(fc_n, 1)).numpy(), 1e-8).astype(np.float32) if has_fc else None
    return rec, fcs


class StreamScorer:
    """Scores rows one at a time with memory bounded by one window.

    ``push(row)`` takes one raw row [C] and returns the (row index, score) pairs that became
    final; ``flush()`` emits the tail at the end of the stream. The emitted scores equal
    :func:`score_series` on the same rows.
    """

    def __init__(self, model, hop: int, lag: int = 0, device=None, amp_dtype=None) -> None:
        window_plan(model.window, model.window, hop, lag)  # validates hop and lag
        self.model, self.hop, self.lag, self.device, self.amp_dtype = model, hop, lag, device, amp_dtype
        self.buf: collections.deque[np.ndarray] = collections.deque(maxlen=model.window)
        self.n = 0  # rows consumed
        self.emitted = 0  # rows scored
        self.mean = model.scale_mean.detach().cpu().numpy()
        self.std = model.scale_std.detach().cpu().numpy()

    def _score(self, first: int, stop: int) -> list[tuple[int, float]]:
        """Score the buffered window and emit its positions [first, stop)."""
        win = torch.from_numpy(np.stack(self.buf))[None]
        s = score_windows(self.model, win, self.device, self.amp_dtype)[0, first:stop].numpy()
        base = self.n - self.model.window
        self.emitted = base + stop
        return [(base + first + i, float(v)) for i, v in enumerate(s)]

    def push(self, row: np.ndarray) -> list[tuple[int, float]]:
        row = np.asarray(row, dtype=np.float32)
        if row.shape != self.mean.shape:
            raise ValueError(f"row has {row.size} values, the model expects {self.mean.size} channels")
        # float32 numpy arithmetic, the same as DetectorBase.normalize, without a torch call per row.
        self.buf.append((row - self.mean) / self.std)
        self.n += 1
        W = self.model.window
        if self.n == W:
            return self._score(0, W - self.lag)
        if self.n > W and (self.n - W) % self.hop == 0:
            return self._score(W - self.lag - self.hop, W - self.lag)
        return []

    def flush(self) -> list[tuple[int, float]]:
        W = self.model.window
        if self.n < W or self.emitted == self.n:
            return []
        return self._score(self.emitted - (self.n - W), W)


def parse_rows(lines: Iterable[str], n_channels: int, err: IO[str] | None = None,
               drop: tuple[str, ...] = ("timestamp", "is_anomaly", "label")) -> Iterator[tuple[int, np.ndarray]]:
    """CSV text rows -> (data-row index, values [C]). A header (non-numeric first line) is used
    to drop ``drop`` columns by name. Malformed rows are reported on ``err`` and skipped, so one
    bad line never stops a stream; their index is not reused."""
    err = err or sys.stderr
    keep: list[int] | None = None
    width = n_channels  # fields per row: the header's width once a header is seen
    idx = -1
    first = True
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if first:
            first = False
            try:
                [float(f) for f in fields]
            except ValueError:
                keep = [i for i, f in enumerate(fields) if f.lower() not in drop]
                if len(keep) != n_channels:
                    raise ValueError(
                        f"stream header has {len(keep)} value columns {[fields[i] for i in keep]}; "
                        f"the model expects {n_channels} channels"
                    ) from None
                width = len(fields)
                continue
        idx += 1
        if len(fields) != width:
            print(f"stream row {idx}: expected {width} fields, got {len(fields)} in {line[:80]!r}; skipped",
                  file=err, flush=True)
            continue
        vals = [fields[i] for i in keep] if keep is not None else fields
        try:
            arr = np.array([float(v) for v in vals], dtype=np.float32)
        except ValueError:
            print(f"stream row {idx}: non-numeric value in {line[:80]!r}; skipped", file=err, flush=True)
            continue
        if not np.isfinite(arr).all():
            print(f"stream row {idx}: non-finite value in {line[:80]!r}; skipped", file=err, flush=True)
            continue
        yield idx, arr


def stream(model, lines: Iterable[str], out: IO[str], *, hop: int, lag: int = 0, threshold: float | None = None,
           err: IO[str] | None = None, device=None) -> int:
    """Score CSV ``lines`` as they arrive; write ``index,score,flag`` per row, flushed per window.

    Returns the number of rows scored. Memory holds one window and one window's index map."""
    err = err or sys.stderr
    thr = float(model.threshold) if threshold is None else float(threshold)
    if math.isnan(thr):
        raise ValueError("the model has no fitted threshold; evaluate it on a validation split first or pass --threshold")
    scorer = StreamScorer(model, hop, lag, device)
    # Input indices can skip (malformed rows), so remember the last window's worth of them.
    ids: collections.deque[int] = collections.deque(maxlen=model.window)
    out.write("index,score,flag\n")
    done = 0

    def emit(pairs):
        nonlocal done
        base = scorer.n - len(ids)
        for pos, s in pairs:
            out.write(f"{ids[pos - base]},{s:.6g},{int(s > thr)}\n")
        done += len(pairs)
        if pairs:
            out.flush()

    for idx, row in parse_rows(lines, model.n_channels, err):
        ids.append(idx)
        emit(scorer.push(row))
    emit(scorer.flush())
    if scorer.n < model.window:
        print(f"stream ended after {scorer.n} rows, fewer than one window of {model.window}; nothing scored",
              file=err, flush=True)
    return done
