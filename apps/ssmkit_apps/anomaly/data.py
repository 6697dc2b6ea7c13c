"""Time-series anomaly data: benchmark loaders, the embedded generator and window datasets.

Every loader returns a :class:`SeriesSplit` of float32 arrays shaped [T, C] (time, channel)
with int8 labels shaped [T]. Train data is treated as normal; a validation part is carved
from the end of train when a benchmark ships none, so thresholds never see test data
(the evaluation protocol of docs/design.md). The on-disk layouts are in ``data/anomaly.md``.

Every problem with a user's file raises :class:`ssmkit.errors.DataError` naming the file (the
CLI exits 2); finiteness is checked in float32, the dtype the models compute in.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ssmkit.engine.inputs import finite_values
from ssmkit.errors import DataError
from ssmkit.registry import register_dataset

NAN_POLICIES = ("interpolate", "reject")


@dataclass
class SeriesSplit:
    """One anomaly-detection problem. Arrays are [T, C] float32; labels are [T] int8 (1 = anomaly)."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    val_labels: np.ndarray | None = None
    channels: list[str] = field(default_factory=list)
    source: str = ""
    #: The test rows' own integer timestamps [T] where the file has them (UCR/TimeEval files
    #: count from 0 over the whole series); None: row positions.
    test_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            arr = getattr(self, part)
            if arr.ndim != 2:
                raise ValueError(f"{self.name}: {part} must be [T, C], got shape {arr.shape}")
        c = self.train.shape[1]
        for part in ("val", "test"):
            if getattr(self, part).shape[1] != c:
                raise DataError(f"{self.name}: {part} has {getattr(self, part).shape[1]} channels, train has {c}")
        _check_label_length(self.test_labels, self.test, f"{self.name} test labels")
        if self.val_labels is not None:
            _check_label_length(self.val_labels, self.val, f"{self.name} validation labels")
        if not self.channels:
            self.channels = [f"value-{i}" for i in range(c)]
        if self.test_index is not None and len(self.test_index) != len(self.test):
            raise ValueError(f"{self.name}: {len(self.test_index)} test timestamps for {len(self.test)} test rows")

    def test_position(self, row: int) -> int:
        """Row ``row`` of the test part in the file's own timestamps (integers), else the row."""
        return int(self.test_index[row]) if self.test_index is not None else int(row)

    @property
    def n_channels(self) -> int:
        return int(self.train.shape[1])


def _check_label_length(labels: np.ndarray, series: np.ndarray, what: str) -> None:
    if labels.ndim != 1 or labels.shape[0] != series.shape[0]:
        raise DataError(
            f"{what}: {labels.shape[0] if labels.ndim else 0} labels for a series of "
            f"{series.shape[0]} rows; expected one label per row"
        )


# --------------------------------------------------------------------------------------------
# cleaning: one place that turns a table into a finite float32 [T, C] array
# --------------------------------------------------------------------------------------------


def clean_array(
    values: np.ndarray, *, source: str, columns: list[str] | None = None, nan_policy: str = "interpolate"
) -> np.ndarray:
    """Return ``values`` as finite float32 [T, C], interpolating (with a warning naming the
    cells) or rejecting NaN/inf. The cast to float32 comes first, so a value such as 1e308
    that only float64 can hold is caught as the inf it becomes.

    ``source`` and ``columns`` only make the messages point at the right file and column.
    """
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy={nan_policy!r}; expected one of {NAN_POLICIES}")
    arr = np.asarray(values)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{source}: expected a [T, C] table, got an array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{source}: expected real numeric values, got dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise DataError(f"{source}: no rows")
    out = finite_values(arr, source, nan_policy, columns=columns, dtype=np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


def read_csv(path: str | os.PathLike):
    """A CSV as a pandas frame with stripped column names. A file without a header line (its
    first row is all numbers) gets columns ``value-1..k``. Raises DataError naming the file when
    it is missing, empty or not CSV."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}" + (" (it is a folder; expected a CSV file)" if path.is_dir() else ""))
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path}: the file is empty; expected a CSV with a header line and one row per time step"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    names = [str(c).strip() for c in frame.columns]
    if names and all(_is_number(c) for c in names):
        frame = pd.read_csv(path, skipinitialspace=True, header=None)
        names = [f"value-{i + 1}" for i in range(frame.shape[1])]
    frame.columns = names
    if frame.shape[0] == 0:
        raise DataError(f"{path}: the file has a header but no rows")
    return frame


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def numeric_columns(frame, path, columns: list[str], nan_policy: str) -> np.ndarray:
    """The named columns of ``frame`` as finite float32 [T, C] (see :func:`clean_array`); text
    in a value column is an error naming the file, column and row, never a silent NaN."""
    import pandas as pd

    for name in columns:
        col = frame[name]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            converted = pd.to_numeric(col, errors="coerce")
            # Non-numeric text (not just empty cells) is an error, never a silent NaN.
            bad = converted.isna() & col.notna() & (col.astype(str).str.strip() != "")
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(
                    f"{path}: column {name!r} is not numeric (row {row} holds {col.iloc[row]!r}); "
                    "fix the value, drop the column, or name it as the timestamp/label column"
                )
            frame[name] = converted
    return clean_array(frame[columns].to_numpy(), source=str(path), columns=columns, nan_policy=nan_policy)


def _labels_from(values, path, column: str) -> np.ndarray:
    import pandas as pd

    col = pd.Series(values)
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        text = col.astype(str).str.strip().str.lower().str.replace(" ", "", regex=False)
        # SWaT writes "Normal" / "Attack" (and the odd "A ttack"), so text labels are mapped.
        mapping = {"normal": 0, "attack": 1, "anomaly": 1, "true": 1, "false": 0, "0": 0, "1": 1}
        unknown = sorted(set(text) - set(mapping))
        if unknown:
            raise DataError(f"{path}: label column {column!r} holds {unknown[:3]!r}; expected 0/1 or Normal/Attack")
        return text.map(mapping).to_numpy().astype(np.int8)
    arr = col.to_numpy(dtype=np.float64)
    if not np.isfinite(arr).all() or not np.isin(arr, (0.0, 1.0)).all():
        bad = arr[~np.isin(arr, (0.0, 1.0))][:3]
        raise DataError(f"{path}: label column {column!r} must hold only 0 and 1, found {bad.tolist()}")
    return arr.astype(np.int8)


def split_validation(train: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split the last ``fraction`` of train off as validation (time order kept, never shuffled)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {fraction}")
    cut = int(round(train.shape[0] * (1.0 - fraction)))
    if cut < 1 or cut >= train.shape[0]:
        raise DataError(
            f"the training data has {train.shape[0]} rows, too few to carve a {fraction:.0%} validation "
            "part (data.val_fraction)"
        )
    return train[:cut], train[cut:]


# --------------------------------------------------------------------------------------------
# benchmark layouts
# --------------------------------------------------------------------------------------------


def _load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"no such file: {path} ({what})")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:  # object arrays need pickle, which is never loaded
        raise DataError(f"{path}: cannot be read without pickle ({err}); save it as a plain numeric array") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npy file ({err or type(err).__name__})") from None


def load_npy_benchmark(
    root: str | os.PathLike, name: str, *, val_fraction: float = 0.2, nan_policy: str = "interpolate"
) -> SeriesSplit:
    """SMD / MSL / SMAP as distributed with the Anomaly-Transformer code: ``<root>/<NAME>_train.npy``,
    ``<NAME>_test.npy`` ([T, C]) and ``<NAME>_test_label.npy`` ([T])."""
    root = Path(root)
    stem = name.upper()
    paths = {k: root / f"{stem}_{k}.npy" for k in ("train", "test", "test_label")}
    train_p, test_p, label_p = paths["train"], paths["test"], paths["test_label"]
    train = clean_array(_load_npy(train_p, "train"), source=str(train_p), nan_policy=nan_policy)
    test = clean_array(_load_npy(test_p, "test"), source=str(test_p), nan_policy=nan_policy)
    raw_labels = _load_npy(label_p, "test labels")
    if raw_labels.ndim == 2 and raw_labels.shape[1] == 1:
        raw_labels = raw_labels[:, 0]
    if raw_labels.ndim != 1:
        raise DataError(f"{label_p}: expected labels shaped [T], got {raw_labels.shape}")
    if raw_labels.shape[0] != test.shape[0]:
        raise DataError(f"{label_p}: {raw_labels.shape[0]} labels but {test_p} has {test.shape[0]} rows")
    labels = _labels_from(raw_labels, label_p, "labels")
    if train.shape[1] != test.shape[1]:
        raise DataError(f"{test_p}: {test.shape[1]} channels but {train_p} has {train.shape[1]}")
    tr, va = split_validation(train, val_fraction)
    return SeriesSplit(stem, tr, va, test, labels, source=str(root))


def load_psm(root: str | os.PathLike, *, val_fraction: float = 0.2, nan_policy: str = "interpolate") -> SeriesSplit:
    """PSM: ``train.csv`` and ``test.csv`` (first column ``timestamp_(min)``, then feature_0..24) and
    ``test_label.csv`` (``timestamp_(min),label``)."""
    root = Path(root)
    train_f, test_f, label_f = (read_csv(root / n) for n in ("train.csv", "test.csv", "test_label.csv"))
    feats = list(train_f.columns[1:])
    if list(test_f.columns[1:]) != feats:
        raise DataError(f"{root / 'test.csv'}: columns {list(test_f.columns[1:])} differ from train.csv {feats}")
    train = numeric_columns(train_f, root / "train.csv", feats, nan_policy)
    test = numeric_columns(test_f, root / "test.csv", feats, nan_policy)
    label_col = "label" if "label" in label_f.columns else label_f.columns[-1]
    if len(label_f) != len(test):
        raise DataError(f"{root / 'test_label.csv'}: {len(label_f)} labels but test.csv has {len(test)} rows")
    labels = _labels_from(label_f[label_col].to_numpy(), root / "test_label.csv", label_col)
    tr, va = split_validation(train, val_fraction)
    return SeriesSplit("PSM", tr, va, test, labels, channels=feats, source=str(root))


def feature_columns(frame, path, exclude: set[str]) -> list[str]:
    """The value columns of ``frame``: all but ``exclude`` and a textual time column."""
    import pandas as pd

    cols = []
    for c in frame.columns:
        if c in exclude:
            continue
        if not pd.api.types.is_numeric_dtype(frame[c]) and c.lower().strip() in (
            "timestamp",
            "time",
            "date",
            "datetime",
        ):
            continue  # a textual time column is an index, not a channel
        cols.append(c)
    if not cols:
        raise DataError(f"{path}: no value columns left after removing {sorted(exclude)}")
    return cols


def load_labelled_csv(
    path: str | os.PathLike,
    *,
    label_column: str | None = None,
    timestamp_column: str | None = None,
    nan_policy: str = "interpolate",
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Any CSV through pandas: returns (values [T, C], labels [T] or None, channel names).

    ``label_column`` may be a name or ``"@last"`` (SWaT's convention: the last column)."""
    path = Path(path)
    frame = read_csv(path)
    if label_column == "@last":
        label_column = frame.columns[-1]
    if label_column is not None and label_column not in frame.columns:
        raise DataError(f"{path}: no label column {label_column!r}; columns are {list(frame.columns)}")
    if timestamp_column is not None and timestamp_column not in frame.columns:
        raise DataError(f"{path}: no timestamp column {timestamp_column!r}; columns are {list(frame.columns)}")
    exclude = {c for c in (label_column, timestamp_column) if c is not None}
    cols = feature_columns(frame, path, exclude)
    values = numeric_columns(frame, path, cols, nan_policy)
    labels = _labels_from(frame[label_column].to_numpy(), path, label_column) if label_column else None
    return values, labels, cols


def load_swat(
    train_csv: str | os.PathLike,
    test_csv: str | os.PathLike,
    *,
    val_fraction: float = 0.2,
    nan_policy: str = "interpolate",
) -> SeriesSplit:
    """SWaT: CSV files whose last column is the label (``Normal``/``Attack`` or 0/1); a leading
    ``Timestamp`` text column is dropped."""
    train, _, cols = load_labelled_csv(train_csv, label_column="@last", nan_policy=nan_policy)
    test, labels, test_cols = load_labelled_csv(test_csv, label_column="@last", nan_policy=nan_policy)
    if test_cols != cols:
        raise DataError(f"{test_csv}: value columns {test_cols} differ from {train_csv} {cols}")
    tr, va = split_validation(train, val_fraction)
    return SeriesSplit("SWaT", tr, va, test, labels, channels=cols, source=str(test_csv))


def load_timeeval(
    test_csv: str | os.PathLike,
    train_csv: str | os.PathLike | None = None,
    *,
    train_rows: int | None = None,
    val_fraction: float = 0.2,
    nan_policy: str = "interpolate",
) -> SeriesSplit:
    """TimeEval / UCR / NAB CSV: ``timestamp,value-1..k,is_anomaly``.

    The training data is ``train_csv`` when given, else the first ``train_rows`` rows of the test
    file (the UCR archive encodes that count in its file names)."""
    test, labels, cols = load_labelled_csv(
        test_csv, label_column="is_anomaly", timestamp_column="timestamp", nan_policy=nan_policy
    )
    assert labels is not None
    if train_csv is not None:
        train, train_labels, train_cols = load_labelled_csv(
            train_csv, label_column="is_anomaly", timestamp_column="timestamp", nan_policy=nan_policy
        )
        if train_cols != cols:
            raise DataError(f"{train_csv}: value columns {train_cols} differ from {test_csv} {cols}")
        if train_labels is not None and train_labels.any():
            warnings.warn(f"{train_csv}: {int(train_labels.sum())} training rows are labelled anomalous", stacklevel=2)
    elif train_rows is not None:
        if not 0 < train_rows < len(test):
            raise DataError(f"data.train_rows={train_rows} must lie in (0, {len(test)}) for {test_csv}")
        train = test[:train_rows]
    else:
        raise DataError(
            f"{test_csv}: say which rows are training data: data.train_file=FILE.csv (normal data in the "
            "same layout) or data.train_rows=N (the first N rows of the test file, as UCR file names encode)"
        )
    tr, va = split_validation(train, val_fraction)
    return SeriesSplit(
        Path(test_csv).stem,
        tr,
        va,
        test,
        labels,
        channels=cols,
        source=str(test_csv),
        test_index=integer_timestamps(test_csv),
    )


def integer_timestamps(path: str | os.PathLike, column: str = "timestamp") -> np.ndarray | None:
    """The file's ``column`` as integers when it holds whole numbers (UCR/TimeEval), else None."""
    import pandas as pd

    frame = read_csv(path)
    if column not in frame.columns or not pd.api.types.is_numeric_dtype(frame[column]):
        return None
    ts = frame[column].to_numpy(dtype=np.float64)
    if not np.isfinite(ts).all() or not np.array_equal(ts, np.round(ts)):
        return None
    return ts.astype(np.int64)


def ucr_internal_bleeding16_paths() -> tuple[Path, Path]:
    """Paths of UCR series 135 (InternalBleeding16) inside the installed ``aeon`` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the 'aeon' package is not installed; it ships the InternalBleeding16 series "
            "(pip install 'ssmkit[anomaly]')"
        )
    base = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "KDD-TSAD_135"
    stem = "135_UCR_Anomaly_InternalBleeding16"
    train, test = base / f"{stem}_TRAIN.csv", base / f"{stem}_TEST.csv"
    for p in (train, test):
        if not p.is_file():
            raise DataError(f"expected {p} in the aeon wheel; is aeon >= 1.0 installed?")
    return train, test


def load_internal_bleeding16(*, val_fraction: float = 0.2) -> SeriesSplit:
    """UCR InternalBleeding16: TRAIN is the first 1,200 (normal) points; TEST is the whole
    7,501-point series (it repeats the training prefix) with one labelled anomaly.

    The evaluation scores the whole TEST file, as the UCR protocol does; the training prefix
    is known-normal, so it only adds true negatives."""
    train_p, test_p = ucr_internal_bleeding16_paths()
    split = load_timeeval(test_p, train_p, val_fraction=val_fraction)
    split.name = "InternalBleeding16"
    return split


# --------------------------------------------------------------------------------------------
# embedded generator
# --------------------------------------------------------------------------------------------

ANOMALY_TYPES = ("point_global", "point_contextual", "shapelet", "seasonal", "trend")


def make_synthetic(
    n_channels: int = 16,
    n_train: int = 4000,
    n_val: int = 1000,
    n_test: int = 4000,
    *,
    seed: int = 0,
    anomaly_rate: float = 1 / 250,
    types: tuple[str, ...] = ANOMALY_TYPES,
    noise: float = 0.15,
) -> SeriesSplit:
    """Correlated multivariate series with labelled anomalies injected into the test part only.

    Channels mix a few shared latent sources (each with two or three seasonalities), add a
    per-channel trend, own seasonality and noise, so channels are correlated but not copies.
    ``anomaly_rate`` is the number of anomalous events per test time step (0: none).
    """
    if not 1 <= n_channels <= 1024:
        raise ValueError(f"n_channels must be in [1, 1024], got {n_channels}")
    if min(n_train, n_val, n_test) < 64:
        raise ValueError(f"each split needs >= 64 rows, got train={n_train} val={n_val} test={n_test}")
    unknown = set(types) - set(ANOMALY_TYPES)
    if unknown or not types:
        raise ValueError(f"anomaly types {sorted(unknown) or '[]'} unknown; expected a subset of {ANOMALY_TYPES}")
    rng = np.random.default_rng(seed)
    total = n_train + n_val + n_test
    t = np.arange(total, dtype=np.float64)
    n_src = max(2, n_channels // 4)
    periods = np.array([24.0, 50.0, 100.0, 168.0, 365.0])
    sources = np.zeros((n_src, total))
    for k in range(n_src):
        for p in rng.choice(periods, size=rng.integers(2, 4), replace=False):
            sources[k] += rng.uniform(0.4, 1.2) * np.sin(2 * math.pi * t / p + rng.uniform(0, 2 * math.pi))
    mix = rng.normal(size=(n_channels, n_src)) / math.sqrt(n_src)
    own_period = rng.choice([12.0, 36.0, 72.0], size=n_channels)
    own_phase = rng.uniform(0, 2 * math.pi, size=n_channels)
    own_amp = rng.uniform(0.1, 0.5, size=n_channels)
    seasonal = mix @ sources + own_amp[:, None] * np.sin(
        2 * math.pi * t[None] / own_period[:, None] + own_phase[:, None]
    )
    trend = rng.uniform(-1.0, 1.0, size=(n_channels, 1)) * t[None] / total
    level = rng.normal(scale=2.0, size=(n_channels, 1))
    # AR(1) noise: real sensors drift a little, white noise alone would be too easy to model.
    eps = rng.normal(scale=noise, size=(n_channels, total))
    ar = np.empty_like(eps)
    ar[:, 0] = eps[:, 0]
    for i in range(1, total):
        ar[:, i] = 0.5 * ar[:, i - 1] + eps[:, i]
    x = (level + trend + seasonal + ar).T.copy()  # [T, C]

    train_part = x[:n_train]
    lo, hi = train_part.min(axis=0), train_part.max(axis=0)
    spread = hi - lo
    test = x[n_train + n_val :].copy()
    labels = np.zeros(n_test, dtype=np.int8)
    # A positive rate places at least one event of each type; rate 0 gives the clean series.
    n_events = max(len(types), int(round(n_test * anomaly_rate))) if anomaly_rate > 0 else 0
    lengths = {
        "point_global": (1, 1),
        "point_contextual": (1, 1),
        "shapelet": (15, 40),
        "seasonal": (30, 80),
        "trend": (30, 80),
    }
    offset = n_train + n_val
    kinds = [types[i % len(types)] for i in range(n_events)]
    rng.shuffle(kinds)
    occupied = np.zeros(n_test, dtype=bool)
    margin = 24
    for kind in kinds:
        a, b = lengths[kind]
        length = int(rng.integers(a, b + 1))
        for _ in range(200):  # rejection-sample a free spot so events stay separate
            start = int(rng.integers(margin, n_test - length - margin))
            if not occupied[start - margin : start + length + margin].any():
                break
        else:
            continue
        stop = start + length
        occupied[start:stop] = True
        labels[start:stop] = 1
        chans = rng.choice(n_channels, size=int(rng.integers(1, max(2, n_channels // 4) + 1)), replace=False)
        for c in chans:
            seg = test[start:stop, c]
            if kind == "point_global":
                sign = rng.choice([-1.0, 1.0])
                seg[:] = (hi[c] if sign > 0 else lo[c]) + sign * rng.uniform(0.3, 0.6) * spread[c]
            elif kind == "point_contextual":
                # Stays inside the channel's normal range, so only the local context reveals it.
                shift = rng.uniform(0.35, 0.5) * spread[c]
                up = seg[0] + shift
                seg[:] = up if up <= hi[c] else seg[0] - shift
            elif kind == "shapelet":
                u = np.linspace(0.0, 1.0, length)
                shape = np.sign(np.sin(2 * math.pi * u * rng.uniform(1.5, 3.0)))
                seg[:] = seg.mean() + shape * max(seg.std(), 0.15 * spread[c])
            elif kind == "seasonal":
                s = seasonal[c, offset + start : offset + stop]
                idx = np.arange(offset + start, offset + stop)
                faster = mix[c] @ sources[:, (offset + start + 2 * (idx - idx[0])) % total]
                faster = faster + own_amp[c] * np.sin(2 * math.pi * (2 * idx) / own_period[c] + own_phase[c])
                seg[:] = seg - s + faster
            else:  # trend
                seg[:] = seg + np.linspace(0.0, rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.5) * spread[c], length)
    channels = [f"ch{i:02d}" for i in range(n_channels)]
    return SeriesSplit(
        "synthetic",
        x[:n_train].astype(np.float32),
        x[n_train:offset].astype(np.float32),
        test.astype(np.float32),
        labels,
        channels=channels,
        source=f"generator(seed={seed}, channels={n_channels})",
    )


def make_seasonal_trend(
    n_train: int = 2000,
    n_val: int = 500,
    n_test: int = 2000,
    *,
    seed: int = 0,
    outlier_rate: float = 0.01,
    trend: float = 3.0,
    noise: float = 0.1,
) -> SeriesSplit:
    """A univariate seasonal series with a linear trend and single-point outliers in test only.

    Two seasonalities (periods 50 and 12, amplitudes 1 and 0.3), AR(1) noise of scale
    ``noise`` and a trend of ``trend`` units over the whole series, so the test part drifts above
    the training range the way web traffic grows. Each outlier is one step shifted by 3 to 5 (up
    or down): beyond the local seasonal swing (+-1.3), but inside the range the trend reaches, so
    a detector must compare a step with its neighbours, not with the training range.
    ``outlier_rate`` 0 gives the clean series.
    """
    if min(n_train, n_val, n_test) < 64:
        raise ValueError(f"each split needs >= 64 rows, got train={n_train} val={n_val} test={n_test}")
    rng = np.random.default_rng(seed)
    total = n_train + n_val + n_test
    t = np.arange(total, dtype=np.float64)
    seasonal = np.sin(2 * math.pi * t / 50 + rng.uniform(0, 2 * math.pi)) + 0.3 * np.sin(
        2 * math.pi * t / 12 + rng.uniform(0, 2 * math.pi)
    )
    eps = rng.normal(scale=noise, size=total)
    ar = np.empty_like(eps)
    ar[0] = eps[0]
    for i in range(1, total):
        ar[i] = 0.5 * ar[i - 1] + eps[i]
    x = 5.0 + trend * t / total + seasonal + ar
    test = x[n_train + n_val :].copy()
    labels = np.zeros(n_test, dtype=np.int8)
    n_out = int(round(n_test * outlier_rate))
    if n_out:
        spots = rng.choice(np.arange(5, n_test - 5, 10), size=n_out, replace=False)  # >= 10 steps apart
        test[spots] += rng.choice([-1.0, 1.0], size=n_out) * rng.uniform(3.0, 5.0, size=n_out)
        labels[spots] = 1
    return SeriesSplit(
        "seasonal_trend",
        x[:n_train, None].astype(np.float32),
        x[n_train : n_train + n_val, None].astype(np.float32),
        test[:, None].astype(np.float32),
        labels,
        channels=["value"],
        source=f"generator(seasonal_trend, seed={seed})",
    )


# --------------------------------------------------------------------------------------------
# registry entries and windows
# --------------------------------------------------------------------------------------------


@register_dataset("anomaly/synthetic")
def synthetic_dataset(**kw) -> SeriesSplit:
    """Embedded generator: correlated multichannel series, five anomaly types in test only."""
    return make_synthetic(**kw)


@register_dataset("anomaly/seasonal_trend")
def seasonal_trend_dataset(**kw) -> SeriesSplit:
    """Embedded generator: one seasonal channel with a trend, single-point outliers in test."""
    return make_seasonal_trend(**kw)


@register_dataset("anomaly/internal_bleeding16")
def internal_bleeding16_dataset(**kw) -> SeriesSplit:
    """UCR InternalBleeding16 from the aeon wheel (one labelled anomaly, UCR protocol)."""
    return load_internal_bleeding16(**kw)


class Scaler:
    """Per-channel standardisation fitted on train only; stored in checkpoints as two vectors."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    @classmethod
    def fit(cls, train: np.ndarray) -> Scaler:
        std = train.std(axis=0)
        # A constant channel would divide by zero; leaving it unscaled keeps it at a fixed value.
        return cls(train.mean(axis=0), np.where(std > 1e-8, std, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape[-1] != self.mean.shape[0]:
            raise DataError(f"series has {x.shape[-1]} channels, the model was fitted on {self.mean.shape[0]}")
        return ((x - self.mean) / self.std).astype(np.float32)


class WindowDataset(torch.utils.data.Dataset):
    """Sliding windows over a [T, C] series: item i is rows [i*stride, i*stride + window) as a
    [window, C] float32 tensor. A last window ending at row T-1 is added when the stride does
    not land there, so every row is covered."""

    def __init__(self, series: np.ndarray, window: int, stride: int = 1, *, source: str = "series") -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if series.ndim != 2:
            raise ValueError(f"{source}: expected [T, C], got shape {series.shape}")
        if series.shape[0] < window:
            raise DataError(f"{source}: {series.shape[0]} rows is fewer than one window of {window} rows")
        self.series = torch.from_numpy(np.ascontiguousarray(series, dtype=np.float32))
        self.window = window
        starts = list(range(0, series.shape[0] - window + 1, stride))
        if starts[-1] != series.shape[0] - window:
            starts.append(series.shape[0] - window)
        self.starts = starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> torch.Tensor:
        s = self.starts[i]
        return self.series[s : s + self.window]
