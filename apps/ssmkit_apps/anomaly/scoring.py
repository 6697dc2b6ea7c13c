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

from ssmkit.errors import DataError


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
def score_series(
    model,
    series: np.ndarray,
    hop: int,
    *,
    lag: int = 0,
    batch_size: int = 64,
    device=None,
    amp_dtype=None,
    normalized: bool = False,
) -> np.ndarray:
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
def channel_error_scale(
    model, normalized: np.ndarray, hop: int, *, lag: int = 0, batch_size: int = 64, device=None
) -> tuple[np.ndarray, np.ndarray | None]:
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


def _header_columns(
    fields: list[str], n_channels: int, columns: list[str] | None, drop: tuple[str, ...], source: str
) -> list[int] | None:
    """The value-field indices of a header line, or None when the line is not a usable header
    (garbage: the caller reports and skips it). A header that names other columns than the
    trained ones is a contract error (exit 2), never a silent re-mapping."""
    names = [f.strip() for f in fields]
    if columns:
        if all(c in names for c in columns):
            return [names.index(c) for c in columns]
        values = [n for n in names if n.lower() not in drop]
        if len(values) == len(columns) and all(n and not n[0].isdigit() for n in values):
            raise DataError(
                f"{source}: header columns {values[:8]} differ from the trained columns {columns[:8]}; "
                "rename them to match"
            )
        return None
    keep = [i for i, f in enumerate(names) if f.lower() not in drop]
    return keep if len(keep) == n_channels else None


def parse_rows(
    lines: Iterable[str],
    n_channels: int,
    err: IO[str] | None = None,
    drop: tuple[str, ...] = ("timestamp", "is_anomaly", "label"),
    columns: list[str] | None = None,
    source: str = "stream",
) -> Iterator[tuple[int, np.ndarray]]:
    """CSV text rows -> (data-row index, values [C] float32).

    A non-numeric first line is a header when it names the trained ``columns`` (any order; or,
    without stored names, when it has ``n_channels`` fields besides ``drop``); a first line that
    is neither numbers nor such a header is reported and skipped like any malformed row, so one
    bad line never stops a stream. Rows with the wrong field count, text, or values that are not
    finite in float32 (NaN, inf, 1e308) are reported on ``err`` and skipped; their index is not
    reused."""
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
                keep = _header_columns(fields, n_channels, columns, drop, source)
                if keep is not None:
                    width = len(fields)
                    continue
                print(
                    f"{source} line 1 is neither a header naming the trained columns "
                    f"{(columns or [])[:8]} nor {n_channels} numbers: {line[:80]!r}; skipped",
                    file=err,
                    flush=True,
                )
                continue
        idx += 1
        if len(fields) != width:
            print(
                f"{source} row {idx}: expected {width} fields, got {len(fields)} in {line[:80]!r}; skipped",
                file=err,
                flush=True,
            )
            continue
        vals = [fields[i] for i in keep] if keep is not None else fields
        try:
            with np.errstate(over="ignore"):
                arr = np.array([float(v) for v in vals], dtype=np.float64).astype(np.float32)
        except ValueError:
            print(f"{source} row {idx}: non-numeric value in {line[:80]!r}; skipped", file=err, flush=True)
            continue
        if not np.isfinite(arr).all():
            print(
                f"{source} row {idx}: a value is not finite in float32 (NaN, inf or beyond 3.4e38) in "
                f"{line[:80]!r}; skipped",
                file=err,
                flush=True,
            )
            continue
        yield idx, arr


def stream(
    model,
    lines: Iterable[str],
    out: IO[str],
    *,
    hop: int,
    lag: int = 0,
    threshold: float | None = None,
    err: IO[str] | None = None,
    device=None,
    columns: list[str] | None = None,
    source: str = "stream",
) -> int:
    """Score CSV ``lines`` as they arrive; write ``index,score,flag`` per row, flushed per window.

    Returns the number of rows scored. Memory holds one window and one window's index map. A
    non-finite score stops the stream with a DataError naming the rows (never written)."""
    err = err or sys.stderr
    thr = float(model.threshold) if threshold is None else float(threshold)
    if math.isnan(thr):
        raise DataError(
            "the model has no fitted threshold; evaluate it on a validation split first or pass --threshold"
        )
    scorer = StreamScorer(model, hop, lag, device)
    # Input indices can skip (malformed rows), so remember the last window's worth of them.
    ids: collections.deque[int] = collections.deque(maxlen=model.window)
    out.write("index,score,flag\n")
    done = 0

    def emit(pairs):
        nonlocal done
        base = scorer.n - len(ids)
        for pos, s in pairs:
            if not math.isfinite(s):
                raise DataError(
                    f"{source} row {ids[pos - base]}: the model produced a non-finite score; the values "
                    "around it may lie far outside the training range"
                )
            out.write(f"{ids[pos - base]},{s:.6g},{int(s > thr)}\n")
        done += len(pairs)
        if pairs:
            out.flush()

    for idx, row in parse_rows(lines, model.n_channels, err, columns=columns, source=source):
        ids.append(idx)
        emit(scorer.push(row))
    emit(scorer.flush())
    if scorer.n < model.window:
        print(
            f"{source} ended after {scorer.n} rows, fewer than one window of {model.window}; nothing scored",
            file=err,
            flush=True,
        )
    return done
