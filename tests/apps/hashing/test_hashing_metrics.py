"""Retrieval metrics against hand-computed rankings, and packed Hamming search against the definition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ssmkit_apps.hashing.hamming import hamming, hamming_naive, n_words, pack_codes, topk, unpack_codes
from ssmkit_apps.hashing.metrics import pr_curve, ranking_metrics, relevance


def test_map_and_precision_at_k_by_hand():
    # One query, five database items, no ties. Order by distance: items 1, 3, 0, 4, 2.
    # Relevant: items 3 and 4 -> ranks 2 and 4 -> AP = (1/2 + 2/4) / 2 = 0.5.
    dist = np.array([[2, 0, 4, 1, 3]])
    rel = np.array([[0, 0, 0, 1, 1]], dtype=bool)
    m = ranking_metrics(dist, rel, ks=(1, 2, 4))
    assert m["map"] == pytest.approx(0.5)
    assert m["map_tie"] == pytest.approx(0.5)  # no ties: both readings agree
    assert m["p@1"] == 0.0 and m["p@2"] == pytest.approx(0.5) and m["p@4"] == pytest.approx(0.5)

    # A second query, relevant at ranks 1 and 3 -> AP = (1 + 2/3) / 2; the mean over both queries.
    dist2 = np.vstack([dist, [[0, 1, 2, 3, 4]]])
    rel2 = np.vstack([rel, [[1, 0, 1, 0, 0]]])
    m2 = ranking_metrics(dist2, rel2, ks=(2,))
    assert m2["map"] == pytest.approx((0.5 + (1 + 2 / 3) / 2) / 2)
    assert m2["p@2"] == pytest.approx((0.5 + 0.5) / 2)


def test_ties_stable_order_and_tie_aware_expectation():
    # Items 0 and 1 tie at distance 0; only item 1 is relevant.
    dist = np.array([[0, 0, 1]])
    rel = np.array([[0, 1, 0]], dtype=bool)
    m = ranking_metrics(dist, rel, ks=(1,))
    assert m["map"] == pytest.approx(0.5)  # stable: item 0 first, the relevant item at rank 2
    assert m["map_tie"] == pytest.approx((1.0 + 0.5) / 2)  # either order, equally likely
    assert m["p@1"] == 0.0 and m["p@1_tie"] == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(4))
def test_tie_aware_map_equals_the_mean_over_all_tie_orders(seed):
    rng = np.random.default_rng(seed)
    dist = rng.integers(0, 3, size=(1, 7))
    rel = rng.random((1, 7)) < 0.5
    rel[0, 0] = True
    order_aps, order_p3 = [], []
    for perm in itertools.permutations(range(7)):
        d = dist[0, list(perm)]
        if np.all(d[:-1] <= d[1:]):
            rs = rel[0, list(perm)]
            hits = np.cumsum(rs)
            order_aps.append((hits / np.arange(1, 8))[rs].sum() / rs.sum())
            order_p3.append(rs[:3].mean())
    m = ranking_metrics(dist, rel, ks=(3,))
    assert m["map_tie"] == pytest.approx(np.mean(order_aps))
    assert m["p@3_tie"] == pytest.approx(np.mean(order_p3))


def test_queries_without_relevant_items_are_left_out():
    dist = np.array([[0, 1], [0, 1]])
    rel = np.array([[1, 0], [0, 0]], dtype=bool)
    m = ranking_metrics(dist, rel, ks=(1,))
    assert m["map"] == 1.0 and m["n_queries_no_relevant"] == 1.0


def test_relevance_is_label_overlap():
    q = np.array([[1, 0, 0], [0, 1, 1]])
    d = np.array([[1, 1, 0], [0, 0, 1], [0, 0, 0]])
    assert relevance(q, d).tolist() == [[True, False, False], [True, True, False]]
    with pytest.raises(ValueError, match="same C"):
        relevance(q, d[:, :2])


def test_pr_curve_by_hamming_radius():
    dist = np.array([[0, 1, 1, 2]])
    rel = np.array([[1, 0, 1, 0]], dtype=bool)
    prec, rec = pr_curve(dist, rel, bits=2)
    np.testing.assert_allclose(prec, [1.0, 2 / 3, 0.5])
    np.testing.assert_allclose(rec, [0.5, 1.0, 1.0])


@pytest.mark.parametrize("bits", [1, 16, 32, 63, 64, 65, 128])
def test_packed_hamming_matches_the_naive_definition(bits):
    rng = np.random.default_rng(bits)
    a, b = rng.standard_normal((9, bits)), rng.standard_normal((301, bits))
    pa, pb = pack_codes(a), pack_codes(b)
    assert pa.dtype == np.uint64 and pa.shape == (9, n_words(bits))
    np.testing.assert_array_equal(hamming(pa, pb), hamming_naive(a, b))
    np.testing.assert_array_equal(unpack_codes(pa, bits), np.where(a >= 0, 1, -1))
    # bit j of the code is bit j of the packed words
    assert int(pack_codes(np.eye(bits)[-1:] * 2 - 1)[0, (bits - 1) // 64]) == 1 << ((bits - 1) % 64)


@pytest.mark.parametrize("bits,k,chunk,n", [(64, 1, 64, 300), (64, 10, 7, 300), (16, 50, 1000, 300),
                                           (100, 5, 16, 300), (32, 400, 64, 300), (64, 3, 1000, 5121),
                                           (64, 4, 512, 4096), (130, 2, 999, 3000)])
def test_topk_equals_a_full_stable_sort(bits, k, chunk, n):
    rng = np.random.default_rng(k)
    # Few distinct codes -> many ties, the hard case for an exact top-k; n > 1024 k exercises the
    # block-minimum prefilter, 5121 its short last block.
    base = rng.standard_normal((20, bits))
    db = base[rng.integers(0, 20, n)] + 0.01 * rng.standard_normal((n, bits))
    q = rng.standard_normal((6, bits))
    idx, dist = topk(pack_codes(q), pack_codes(db), k, chunk=chunk)
    full = hamming_naive(q, db)
    ref = np.argsort(full, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(dist, np.take_along_axis(full, ref, 1))


def test_packing_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        pack_codes(np.zeros(5))
    with pytest.raises(TypeError, match="uint64"):
        hamming(np.zeros((1, 1), np.int64), np.zeros((1, 1), np.uint64))
    with pytest.raises(ValueError, match="same W"):
        hamming(pack_codes(np.ones((1, 64))), pack_codes(np.ones((1, 65))))


def test_topk_finds_a_planted_neighbour_in_the_last_short_block():
    rng = np.random.default_rng(0)
    db = rng.standard_normal((5121, 64))
    q = rng.standard_normal((1, 64))
    db[5120] = q[0]  # distance 0, in the block of one code after 5 full blocks
    db[7] = q[0]
    idx, dist = topk(pack_codes(q), pack_codes(db), 3)
    assert idx[0, :2].tolist() == [7, 5120] and dist[0, :2].tolist() == [0, 0]
    np.testing.assert_array_equal(idx, np.argsort(hamming_naive(q, db), axis=1, kind="stable")[:, :3])
