"""Streaming scores equal batch scores; a long stream runs in bounded memory; bad rows are not fatal."""

from __future__ import annotations

import io
import os
import tracemalloc

import numpy as np
import pytest
import torch

from ssmkit_apps.anomaly.model import MAAT, DetectorBase
from ssmkit_apps.anomaly.scoring import StreamScorer, parse_rows, score_series, stream, window_plan


def tiny_model(window=12, channels=3):
    torch.manual_seed(0)
    m = MAAT(n_channels=channels, window=window, d_model=16, n_heads=2, n_layers=1, d_ff=16, mamba_layers=1, d_state=4)
    m.set_scaler(np.arange(channels, dtype=np.float32), np.full(channels, 2.0, dtype=np.float32))
    m.threshold.fill_(0.05)
    return m.eval()


def test_window_plan_covers_each_row_once():
    for T, W, h, g in [
        (12, 12, 12, 0),
        (30, 12, 12, 0),
        (31, 12, 5, 0),
        (100, 7, 1, 0),
        (13, 12, 3, 0),
        (31, 12, 4, 4),
        (50, 12, 2, 10),
        (12, 12, 4, 8),
        (40, 8, 1, 3),
    ]:
        cover = np.zeros(T, dtype=int)
        for s, a, b in window_plan(T, W, h, g):
            assert 0 <= s and s + W <= T and 0 <= a < b <= W
            cover[s + a : s + b] += 1
        assert (cover == 1).all(), (T, W, h, g)
    with pytest.raises(ValueError, match="lag"):
        window_plan(50, 12, 4, 9)
    with pytest.raises(ValueError, match="fewer than one window"):
        window_plan(5, 12, 12)
    with pytest.raises(ValueError, match="hop"):
        window_plan(50, 12, 13)


@pytest.mark.parametrize("T,hop,lag", [(12, 12, 0), (31, 12, 0), (31, 5, 0), (17, 1, 0), (31, 4, 4), (13, 2, 9)])
def test_stream_equals_batch(T, hop, lag):
    model = tiny_model()
    series = np.random.default_rng(T).normal(size=(T, 3)).astype(np.float32) * 3 + 1
    batch = score_series(model, series, hop, lag=lag, batch_size=1)
    batched = score_series(model, series, hop, lag=lag, batch_size=64)
    scorer = StreamScorer(model, hop, lag)
    got = np.full(T, np.nan, dtype=np.float32)
    for row in series:
        for i, v in scorer.push(row):
            assert np.isnan(got[i])
            got[i] = v
    for i, v in scorer.flush():
        got[i] = v
    assert not np.isnan(got).any()
    # Same windows, same arithmetic; only buffer alignment and batching can reorder float32 sums.
    np.testing.assert_allclose(got, batch, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got, batched, rtol=1e-4, atol=1e-7)


def test_rows_are_emitted_as_soon_as_their_window_completes():
    model = tiny_model(window=12)
    scorer = StreamScorer(model, hop=4)
    rows = np.random.default_rng(0).normal(size=(20, 3))
    emitted = [len(scorer.push(r)) for r in rows]
    assert emitted == [0] * 11 + [12, 0, 0, 0, 4, 0, 0, 0, 4]
    # with a lag, each row's score comes `lag` rows later and the tail arrives at flush
    scorer = StreamScorer(model, hop=4, lag=4)
    got = [[i for i, _ in scorer.push(r)] for r in rows]
    assert got[11] == list(range(8)) and got[15] == list(range(8, 12)) and got[19] == list(range(12, 16))
    assert [i for i, _ in scorer.flush()] == [16, 17, 18, 19]


def test_stream_text_reports_malformed_rows_and_keeps_going():
    model = tiny_model(window=12)
    rng = np.random.default_rng(0)
    lines = ["timestamp,a,b,c,is_anomaly"] + [
        f"{i},{','.join(f'{v:.4f}' for v in rng.normal(size=3))},0" for i in range(30)
    ]
    lines.insert(5, "4,1.0,oops,2.0,0")
    lines.insert(9, "7,1.0,2.0")
    lines.insert(12, "9,1.0,nan,2.0,0")
    out, err = io.StringIO(), io.StringIO()
    n = stream(model, iter(lines), out, hop=12, err=err)
    rows = out.getvalue().strip().splitlines()
    assert rows[0] == "index,score,flag" and n == 30 and len(rows) == 31
    idx = [int(r.split(",")[0]) for r in rows[1:]]
    assert idx == [i for i in range(33) if i not in (4, 8, 11)]
    msg = err.getvalue()
    assert (
        "row 4: non-numeric" in msg
        and "row 8: expected 5 fields, got 3" in msg
        and "row 11: a value is not finite" in msg
    )
    # flags follow the model's validation threshold
    for r in rows[1:]:
        _, s, f = r.split(",")
        assert int(f) == int(float(s) > 0.05)


def test_stream_header_contract():
    import io

    from ssmkit.errors import DataError

    # a header naming other columns than the trained ones is a contract error
    with pytest.raises(DataError, match=r"header columns \['x', 'y', 'z'\] differ from the trained columns"):
        list(parse_rows(iter(["timestamp,x,y,z"]), 3, columns=["a", "b", "c"]))
    # the trained names in another order are mapped by name
    got = list(parse_rows(iter(["c,timestamp,a,b", "3,0,1,2"]), 3, columns=["a", "b", "c"]))
    assert got[0][0] == 0 and got[0][1].tolist() == [1.0, 2.0, 3.0]
    # a first line that is neither numbers nor a usable header is skipped, and the stream goes on
    err = io.StringIO()
    got = list(parse_rows(iter(["timestamp,a,b", "1,2,3", "4,5,6"]), 3, err=err))
    assert [i for i, _ in got] == [0, 1] and "line 1 is neither a header" in err.getvalue()
    # 1e308 is finite in float64 but not in float32: skipped, never scored as inf
    err = io.StringIO()
    assert [i for i, _ in parse_rows(iter(["1,2,1e308", "1,2,3"]), 3, err=err)] == [1]
    assert "row 0: a value is not finite in float32" in err.getvalue()


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class _Sink(io.TextIOBase):
    """Counts output lines without keeping them (a long stream must not grow memory here)."""

    def __init__(self):
        self.lines = 0

    def write(self, s):
        self.lines += s.count("\n")
        return len(s)


class _SquaredDeviation(DetectorBase):
    """A detector whose score costs nothing, so the default test times the stream machinery
    (parsing, ring buffer, index map, output) rather than a network."""

    def score(self, x):
        return x.pow(2).mean(-1)


def _run_long_stream(n_rows: int, model=None) -> None:
    if model is None:
        model = _SquaredDeviation(n_channels=2, window=16)
        model.threshold.fill_(4.0)

    def rows():
        rng = np.random.default_rng(0)
        for i in range(n_rows):
            a, b = rng.normal(size=2)
            yield f"{a:.3f},{b:.3f}\n"
            if i == n_rows // 4:
                marks.append((_rss_mb(), tracemalloc.get_traced_memory()[0]))

    marks: list[tuple[float, int]] = []
    sink = _Sink()
    tracemalloc.start()
    try:
        n = stream(model, rows(), sink, hop=16, err=io.StringIO())
        end = (_rss_mb(), tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert n == n_rows and sink.lines == n_rows + 1
    (rss_q, py_q), (rss_end, py_end) = marks[0], end
    # Python-level allocations do not grow with the stream, and neither does the process.
    assert py_end - py_q < 256 * 1024, (py_q, py_end)
    assert rss_end - rss_q < 32, (rss_q, rss_end)


def test_stream_memory_is_bounded_20k_rows():
    _run_long_stream(20_000)


@pytest.mark.slow
def test_stream_memory_is_bounded_1m_rows_maat():
    _run_long_stream(1_000_000, tiny_model(window=16, channels=2))
