"""``ssmkit anomaly infer``: score a CSV file or a stream of rows with a trained detector.

What the run stored at training (``app_state.json``, see ``AnomalyApp.run_state``) is checked
before anything is scored:

- **Columns by name.** A file with a header must hold the trained value columns (in any order;
  other columns are ignored with a note); a header-less file must hold exactly as many value
  columns as the model has channels.
- **Range.** The share of rows outside the training range (widened by 10 % of its span) is
  reported; above 1 % a warning says the scores may flag drift rather than anomalies.
- **Finiteness.** Values are checked in float32 after the cast (1e308 becomes inf there):
  ``data.nan_policy=interpolate`` fills them with a warning naming the cells, ``reject`` stops
  with exit 2. A non-finite score is never written: it stops with exit 2 naming the file.

Outputs go through the engine's ``--out`` policy (never the input, an existing file only with
``--overwrite``, parent folders created) and a temporary name renamed at the end, so a failed
run (a stream that breaks, say) never truncates an existing file.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ssmkit.engine.app import EvalContext
from ssmkit.engine.files import atomic_path, check_output
from ssmkit.engine.inputs import require_finite
from ssmkit.errors import DataError
from ssmkit_apps.anomaly import data as D
from ssmkit_apps.anomaly.scoring import score_series, stream

RANGE_TOLERANCE = 0.1  # share of the training span beyond either end that still counts as in range
RANGE_WARN = 0.01  # warn when more than this share of rows leaves the widened range


def range_report(raw: np.ndarray, state: dict[str, Any], source: str) -> tuple[float | None, str]:
    """(share of rows [T, C] with a channel outside the stored training range widened by
    RANGE_TOLERANCE of its span, a warning when that share exceeds RANGE_WARN, else "").
    (None, "") when the run stored no range (weights given without their run)."""
    lo, hi = state.get("train_min"), state.get("train_max")
    if lo is None or hi is None or len(lo) != raw.shape[1]:
        return None, ""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    pad = RANGE_TOLERANCE * (hi - lo)
    outside = ((raw < lo - pad) | (raw > hi + pad)).any(axis=1)
    share = float(outside.mean())
    if share <= RANGE_WARN:
        return share, ""
    cols = np.flatnonzero(((raw < lo - pad) | (raw > hi + pad)).any(axis=0))
    names = state.get("columns") or [str(c) for c in range(raw.shape[1])]
    return share, (
        f"{source}: {share:.1%} of rows lie outside the training range (columns "
        f"{[names[c] for c in cols[:5]]}, beyond the training min/max by more than "
        f"{RANGE_TOLERANCE:.0%} of their span); the scores may flag the drift rather than anomalies. "
        "Retrain on recent data, or use a detector that follows the level (model.instance_norm=mean, "
        "rolling_median, matrix_profile)"
    )


def select_columns(frame, path: str, state: dict[str, Any], n_channels: int, drop: set[str]) -> list[str]:
    """The value columns of ``frame`` that the model was trained on, by name where it can be."""
    trained = state.get("columns")
    headerless = all(c.startswith("value-") and c[6:].isdigit() for c in frame.columns)
    if trained and not headerless:
        missing = [c for c in trained if c not in frame.columns]
        if missing:
            have = [c for c in frame.columns if c not in drop]
            raise DataError(
                f"{path}: value columns {have[:8]} do not include the trained columns {missing[:8]} "
                f"(the model was trained on {trained[:8]}); rename the columns to match"
            )
        extra = [c for c in frame.columns if c not in trained and c not in drop]
        if extra:
            print(f"{path}: ignoring columns {extra[:8]} the model was not trained on", file=sys.stderr)
        return list(trained)
    cols = D.feature_columns(frame, path, drop)
    if len(cols) != n_channels:
        raise DataError(
            f"{path}: {len(cols)} value columns {cols[:8]}; the checkpoint was trained on "
            f"{n_channels} channels" + (f" {trained[:8]}" if trained else "")
        )
    return cols


def infer_file(app, model, args: argparse.Namespace, ctx: EvalContext) -> int:
    """Score ``args.file``; write index,score,flag to ``args.out`` (or stdout)."""
    out = check_output(args.out, inputs=[args.file], overwrite=args.overwrite) if args.out else None
    frame = D.read_csv(args.file)
    drop = {c for c in (args.label_column, args.timestamp_column) if c in frame.columns}
    cols = select_columns(frame, args.file, app.state, model.n_channels, drop)
    values = D.numeric_columns(frame, args.file, cols, app.cfg.data.nan_policy)
    if len(values) < model.window:
        raise DataError(f"{args.file}: {len(values)} rows is fewer than one window of {model.window} rows")
    thr = float(model.threshold) if args.threshold is None else args.threshold
    if math.isnan(thr):
        raise DataError("the checkpoint has no fitted threshold; pass --threshold")
    share, note = range_report(values, app.state, args.file)
    if note:
        warnings.warn(note, stacklevel=2)
    scores = score_series(model, values, app.hop, lag=app.cfg.score.lag, device=ctx.device, amp_dtype=ctx.amp_dtype)
    require_finite(scores, "scores", args.file, hint="its values may lie far outside the training range")
    index = D.integer_timestamps(args.file, args.timestamp_column) if args.timestamp_column in frame.columns else None
    import pandas as pd

    res = pd.DataFrame(
        {"score": scores, "flag": (scores > thr).astype(int)},
        index=pd.Index(index if index is not None else np.arange(len(scores)), name="index"),
    )
    if out is None:
        res.to_csv(sys.stdout, float_format="%.6g")
        return 0
    with atomic_path(out) as tmp:
        res.to_csv(tmp, float_format="%.6g")
    extra = f"; {share:.1%} of rows out of the training range" if share else ""
    print(f"wrote {len(res)} scores ({int(res.flag.sum())} flagged{extra}) to {out}", file=sys.stderr)
    return 0


def infer_stream(app, model, args: argparse.Namespace, ctx: EvalContext) -> int:
    """Score stdin rows as they arrive; with ``--out`` the file appears only when the stream ends."""
    kw = dict(
        hop=app.hop,
        lag=app.cfg.score.lag,
        threshold=args.threshold,
        device=ctx.device,
        columns=app.state.get("columns"),
        source="stdin",
    )
    if not args.out:
        n = stream(model, sys.stdin, sys.stdout, **kw)
    else:
        out = check_output(args.out, overwrite=args.overwrite)
        with atomic_path(out) as tmp, open(tmp, "w") as f:
            n = stream(model, sys.stdin, f, **kw)
    print(f"scored {n} rows" + (f" to {Path(args.out)}" if args.out else ""), file=sys.stderr)
    return 0
