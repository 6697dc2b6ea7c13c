"""VUS-ROC / VUS-PR against the TSB-AD 1.5 reference, on committed reference outputs.

fixtures/vus_reference.json holds each case's labels and scores and the reference's values;
fixtures/make_vus_reference.py is the command (and names the version) that wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ssmkit_apps.anomaly import metrics as M

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "vus_reference.json").read_text())


@pytest.mark.parametrize("row", REFERENCE["results"], ids=lambda r: f"{r['case']}-w{r['window']}")
def test_vus_matches_the_reference(row):
    case = REFERENCE["cases"][row["case"]]
    roc, pr = M.vus(np.array(case["scores"]), np.array(case["labels"]), max_buffer=row["window"])
    assert roc == pytest.approx(row["vus_roc"], abs=1e-9)
    assert pr == pytest.approx(row["vus_pr"], abs=1e-9)


def test_reference_cases_cover_the_protocol():
    names = set(REFERENCE["cases"])
    assert {"random", "constant", "perfect", "shifted_5", "range_anomaly_random"} <= names
    assert "TSB-AD 1.5" in REFERENCE["reference"]


def _events(T: int, ranges) -> np.ndarray:
    y = np.zeros(T, dtype=int)
    for s, e in ranges:
        y[s:e] = 1
    return y


def test_constant_score_is_no_better_than_random():
    # The old curve ran from (recall 0, precision 1) straight to the all-flagged point, which gave
    # a constant score a VUS-PR above a perfect detector's.
    y = _events(4000, [(500, 540), (1200, 1201), (2500, 2600), (3300, 3310)])
    rng = np.random.default_rng(0)
    const_roc, const_pr = M.vus(np.zeros(4000), y)
    randoms = np.array([M.vus(rng.random(4000), y) for _ in range(4)])
    assert const_pr <= randoms[:, 1].mean()
    assert y.mean() < const_pr < M.soft_labels(y, 100).mean()  # the anomaly rate, widened by the buffers
    assert const_roc == pytest.approx(0.5, abs=0.02)
    assert M.vus(y.astype(float), y) == (1.0, 1.0)
    assert M.vus_pr(np.roll(y, 300).astype(float), y) <= const_pr  # flags in the wrong place gain nothing


def test_vus_rewards_near_misses_and_needs_an_event():
    y = _events(200, [(100, 110)])
    near, far = np.zeros(200), np.zeros(200)
    near[112], far[10] = 1.0, 1.0  # just after the event / far from it
    assert M.range_auc(near, y, buffer=0) == pytest.approx(M.range_auc(far, y, buffer=0))
    assert M.vus_pr(near, y, max_buffer=20) > M.vus_pr(far, y, max_buffer=20)
    assert all(np.isnan(v) for v in M.vus(np.arange(200.0), np.zeros(200, dtype=int)))
