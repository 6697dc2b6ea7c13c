"""One finiteness check for every inference entry point, in the compute dtype.

Values are cast to the dtype the model computes in *before* they are checked: ``1e308`` is
finite in float64 and ``inf`` in float32, so a check in the file's own precision lets it through.

- ``policy="reject"``: a :class:`NonFiniteError` naming the first bad cells (row, column).
- ``policy="interpolate"``: each bad cell is replaced by linear interpolation along the rows
  of its column (the nearest finite value at the ends), with one warning that names the cells.

:func:`require_finite` guards outputs: a non-finite score or prediction is never written.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ssmkit.errors import NonFiniteError

NanPolicy = Literal["reject", "interpolate"]
NAN_POLICIES = ("reject", "interpolate")


def _cells(bad: np.ndarray, columns: Sequence[str] | None, row_offset: int, row_name: str, limit: int = 5) -> str:
    rows, cols = np.nonzero(bad.reshape(bad.shape[0], -1))
    shown = []
    for r, c in zip(rows[:limit], cols[:limit]):
        col = columns[c] if columns is not None and c < len(columns) else str(int(c))
        shown.append(f"{row_name} {int(r) + row_offset} column {col}")
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(shown) + more


def _as_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values).astype(dtype, copy=False)


def finite_values(values: np.ndarray, source: str, policy: NanPolicy = "reject",
                  columns: Sequence[str] | None = None, dtype: np.dtype | type = np.float32,
                  row_offset: int = 0, row_name: str = "row") -> np.ndarray:
    """``values`` [rows, ...] cast to ``dtype``, with every non-finite cell rejected or filled.

    Args:
        values: numbers, rows first (a series [T, C], signals [N, L], an image [H, W, C]...).
        source: the file (or stream) the values came from, named in messages.
        policy: "reject" or "interpolate" (along axis 0, per column).
        columns: names of the trailing columns, for messages.
        row_offset: added to row numbers in messages (a header line, a stream position).

    >>> import warnings
    >>> x = np.array([[1.0, 10.0], [np.nan, 20.0], [3.0, 1e308]])
    >>> finite_values(x, "a.csv", "reject", columns=["a", "b"])
    Traceback (most recent call last):
    ...
    ssmkit.errors.NonFiniteError: a.csv: 2 non-finite value(s) ... at row 1 column a, row 2 column b; ...
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     finite_values(x, "a.csv", "interpolate")
    array([[ 1., 10.],
           [ 2., 20.],
           [ 3., 20.]], dtype=float32)
    """
    if policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {list(NAN_POLICIES)}; got {policy!r}")
    try:
        arr = _as_dtype(values, np.dtype(dtype))
    except (TypeError, ValueError) as err:
        raise NonFiniteError(f"{source}: values are not numbers ({err})") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    bad = ~np.isfinite(arr)
    if not bad.any():
        return arr
    where = _cells(bad, columns, row_offset, row_name)
    n_bad = int(bad.sum())
    if policy == "reject":
        raise NonFiniteError(f"{source}: {n_bad} non-finite value(s) (NaN, inf, or too large for "
                             f"{np.dtype(dtype).name}) at {where}; fix them or use nan_policy=interpolate")
    flat = arr.reshape(arr.shape[0], -1).copy()
    bad_flat = bad.reshape(arr.shape[0], -1)
    idx = np.arange(flat.shape[0])
    for c in np.nonzero(bad_flat.any(0))[0]:
        ok = ~bad_flat[:, c]
        if not ok.any():
            col = columns[c] if columns is not None and c < len(columns) else str(int(c))
            raise NonFiniteError(f"{source}: column {col} has no finite value to interpolate from")
        flat[~ok, c] = np.interp(idx[~ok], idx[ok], flat[ok, c])
    warnings.warn(f"{source}: interpolated {n_bad} non-finite value(s) at {where}", stacklevel=2)
    return flat.reshape(arr.shape)


def require_finite(values, what: str, source: str, hint: str = "") -> None:
    """Raise :class:`NonFiniteError` when ``values`` (array or tensor) holds NaN or inf."""
    arr = values.detach().float().cpu().numpy() if hasattr(values, "detach") else np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.argwhere(bad)[:3].tolist()
        extra = f"; {hint}" if hint else ""
        raise NonFiniteError(f"{source}: the model produced {int(bad.sum())} non-finite {what} "
                             f"(first at index {first}){extra}")


__all__ = ["NAN_POLICIES", "NanPolicy", "finite_values", "require_finite"]
