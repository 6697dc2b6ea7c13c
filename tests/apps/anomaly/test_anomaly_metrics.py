"""Each metric against a hand-computed example (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssmkit_apps.anomaly import metrics as M


def test_precision_recall_f1_and_point_adjust_by_hand():
    labels = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 0])
    pred = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    # tp = 1 of 2 predicted, 5 true: P = 1/2, R = 1/5, F1 = 2PR/(P+R) = 0.2/0.7
    p, r, f = M.precision_recall_f1(pred, labels)
    assert (p, r) == (0.5, 0.2) and f == pytest.approx(0.2 / 0.7)
    # the hit at step 2 lights the whole first segment; the second segment stays missed
    adj = M.point_adjust(pred, labels)
    assert adj.tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 0, 1]
    p, r, f = M.precision_recall_f1(adj, labels)
    assert (p, r) == (0.75, 0.6) and f == pytest.approx(2 * 0.75 * 0.6 / 1.35)


def test_segments_half_open():
    assert M.segments(np.array([1, 1, 0, 0, 1, 0, 1])) == [(0, 2), (4, 5), (6, 7)]


def test_auc_roc_and_pr_by_hand():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1])
    # ranked: 0.8(+) 0.4(-) 0.35(+) 0.1(-): AP = 0.5*1 + 0.5*(2/3); ROC: 3 of 4 pairs ordered
    assert M.auc_pr(scores, labels) == pytest.approx(0.5 + 1 / 3)
    assert M.auc_roc(scores, labels) == pytest.approx(0.75)
    assert math.isnan(M.auc_roc(scores, np.zeros(4, dtype=int)))


def test_soft_labels_sqrt_ramp():
    soft = M.soft_labels(np.array([0, 0, 0, 1, 0, 0, 0]), buffer=4)
    a, b = math.sqrt(1 - 1 / 4), math.sqrt(1 - 2 / 4)
    np.testing.assert_allclose(soft, [0, b, a, 1, a, b, 0])


def test_range_auc_by_hand():
    labels = np.array([0, 0, 1, 1, 0, 0])
    # perfect ranking: recall reaches 1 at precision 1
    assert M.range_auc(np.array([0, 0.1, 0.9, 0.8, 0.2, 0]), labels, buffer=0, n_thresholds=6)[1] == pytest.approx(1.0)
    # thresholds .9: (R .5, P 1); .8: (R .5, P .5); .2: (R 1, P 2/3); then R stays 1.
    # PR area = each recall step times the precision reached there: .5 * 1 + .5 * 2/3
    got = M.range_auc(np.array([0, 0.1, 0.9, 0.2, 0.8, 0]), labels, buffer=0, n_thresholds=6)[1]
    assert got == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_affiliation_single_event_by_hand():
    labels = np.zeros(10, dtype=int)
    labels[4:6] = 1
    pred = np.zeros(10, dtype=int)
    pred[8] = 1
    # zone = 0..9; distances to event {4,5}: 4 3 2 1 0 0 1 2 3 4; pred at distance 3,
    # 6 zone steps are closer -> precision 1 - 6/10. Recall: y=4 (pred 4 away) -> 3/10 of
    # steps at >= 4; y=5 (3 away) -> 5/10; mean 0.4.
    p, r = M.affiliation(pred, labels)
    assert p == pytest.approx(0.4) and r == pytest.approx(0.4)
    assert M.affiliation(labels, labels) == (1.0, 1.0)


def test_affiliation_two_zones_by_hand():
    labels = np.zeros(20, dtype=int)
    labels[2:4] = 1
    labels[14:16] = 1
    pred = np.zeros(20, dtype=int)
    pred[[3, 10]] = 1
    # zones split at the gap midpoint: [0, 9) and [9, 20).
    # zone 1: pred inside the event -> precision 1; recall (8/9 + 1)/2.
    # zone 2: pred 4 from the event, 8 of 11 steps closer -> 3/11; recall (4/11 + 2/11)/2.
    p, r = M.affiliation(pred, labels)
    assert p == pytest.approx((1 + 3 / 11) / 2)
    assert r == pytest.approx((17 / 18 + 3 / 11) / 2)
    # a zone with no prediction contributes recall 0 and no precision term
    only_first = np.zeros(20, dtype=int)
    only_first[2] = 1
    p, r = M.affiliation(only_first, labels)
    assert p == 1.0 and r == pytest.approx(((1 + 8 / 9) / 2 + 0) / 2)


def test_ucr_protocol_margin():
    labels = np.zeros(400, dtype=int)
    labels[250:261] = 1
    s = np.zeros(400)
    s[150] = 1.0
    assert M.ucr_hit(s, labels)["hit"]
    s[150], s[149] = 0.0, 1.0
    assert not M.ucr_hit(s, labels)["hit"]
    s[149], s[360] = 0.0, 1.0
    assert M.ucr_hit(s, labels) == {"hit": True, "argmax": 360, "range": [250, 260], "margin": 100}


def test_fit_threshold_uses_validation_only():
    assert M.fit_threshold(np.arange(101.0), percentile=99) == pytest.approx(99.0)
    assert M.fit_threshold(np.array([0.1, 0.2, 0.9, 0.8]), val_labels=np.array([0, 0, 1, 1])) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="percentile"):
        M.fit_threshold(np.arange(3.0), percentile=100)


def test_evaluate_scores_keys_and_bad_input():
    labels = np.array([0, 0, 1, 1, 0, 0, 0, 0])
    out = M.evaluate_scores(np.array([0, 0, 3, 2, 0, 1, 0, 0.0]), labels, threshold=1.5)
    assert out["f1"] == 1.0 and out["pa_f1"] == 1.0 and out["aff_precision"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        M.evaluate_scores(np.zeros(5), labels, 0.5)
    with pytest.raises(ValueError, match="0/1"):
        M.precision_recall_f1(np.array([0, 2]), np.array([0, 1]))
