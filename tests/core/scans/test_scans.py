"""Scan strategies: exact inversion, hand-checked visit orders, adjointness, caching, errors.

Parametrized over the registry, so a newly registered strategy is tested with no edit here.
"""

from __future__ import annotations

import pytest
import torch

from ssmkit.registry import create_scan, list_scans
from ssmkit.scans import ScanStrategy

SHAPES_2D = [(4, 4), (7, 5), (5, 7), (1, 6), (6, 1), (1, 1), (2, 3)]
SHAPES_3D = [(3, 5, 4), (1, 2, 3), (2, 1, 1), (4, 3, 2)]
EXPECTED_K = {  # (K in 2-D, K in 3-D); None = not defined for those dims
    "raster": (1, 1), "bidirectional": (2, 2), "cross": (4, 6), "snake": (2, 3),
    "diagonal": (2, None), "sass": (4, None), "tri_orient": (None, 3), "multi_order": (2, 6),
}


def _cases():
    for name in list_scans():
        strategy = create_scan(name)
        for shape in SHAPES_2D + SHAPES_3D:
            if strategy.supports(len(shape)):
                yield pytest.param(name, shape, id=f"{name}-{'x'.join(map(str, shape))}")


CASES = list(_cases())


def _pos(shape, index):
    """Grid coordinates of raster positions: [len(index), ndim]."""
    return torch.stack(torch.unravel_index(index, shape), dim=-1)


def test_every_strategy_is_covered():
    assert set(list_scans()) >= set(EXPECTED_K)
    for name in list_scans():
        s = create_scan(name)
        assert isinstance(s, ScanStrategy) and s.name == name
        assert any(s.supports(d) for d in (2, 3))


@pytest.mark.parametrize("name", sorted(EXPECTED_K))
def test_num_paths(name):
    s = create_scan(name)
    for ndim, k in zip((2, 3), EXPECTED_K[name]):
        if k is None:
            assert not s.supports(ndim)
            with pytest.raises(ValueError, match=name):
                s.num_paths(ndim)
        else:
            assert s.num_paths(ndim) == k


@pytest.mark.parametrize("name,shape", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_of_scan_is_exactly_k_times_x(name, shape, dtype):
    s = create_scan(name)
    x = torch.randn(2, 3, *shape).to(dtype)
    xs = s.scan(x)
    K = s.num_paths(len(shape))
    L = x[0, 0].numel()
    assert xs.shape == (2, K, 3, L) and xs.dtype == dtype
    assert torch.equal(s.merge(xs, shape), K * x)
    # Dividing by a power of two is exact; dividing by 3 or 6 rounds once more.
    rtol = 0.0 if K in (1, 2, 4) else (1e-2 if dtype == torch.bfloat16 else 1e-6)
    torch.testing.assert_close(s.merge(xs, shape, reduce="mean"), x, rtol=rtol, atol=0.0)


@pytest.mark.parametrize("name,shape", CASES)
def test_index_rows_are_permutations_with_exact_inverse(name, shape):
    s = create_scan(name)
    index, inv = s.index(shape), s.inverse(shape)
    L = index.shape[1]
    assert index.dtype == torch.int64 and inv.shape == index.shape
    assert torch.equal(index.sort(-1).values, torch.arange(L).expand_as(index))
    # Each path on its own round-trips exactly (SCSegamba's diagonal inverse fails this).
    x = torch.randn(2, 3, *shape)
    xs = s.scan(x)
    for k in range(index.shape[0]):
        assert torch.equal(xs[:, k].index_select(-1, inv[k]).reshape(x.shape), x)
        assert torch.equal(inv[k][index[k]], torch.arange(L))


@pytest.mark.parametrize("name,shape", CASES)
def test_scan_and_merge_match_explicit_loops(name, shape):
    s = create_scan(name)
    index = s.index(shape)
    K, L = index.shape
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    flat = x.reshape(2, 3, L)
    xs = s.scan(x)
    y = torch.randn(2, K, 3, L, dtype=torch.float64)
    expected = torch.zeros(2, 3, L, dtype=torch.float64)
    for k in range(K):
        for t in range(L):
            p = int(index[k, t])
            assert torch.equal(xs[:, k, :, t], flat[:, :, p])
            expected[:, :, p] += y[:, k, :, t]
    torch.testing.assert_close(s.merge(y, shape).reshape(2, 3, L), expected, rtol=1e-12, atol=1e-12)
    # merge is the adjoint of scan: <scan(x), y> == <x, merge(y)>
    torch.testing.assert_close((xs * y).sum(), (x * s.merge(y, shape)).sum(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,shape", [(n, (3, 4) if n != "tri_orient" else (2, 3, 2)) for n in sorted(EXPECTED_K)])
def test_gradients_flow_through_scan_and_merge(name, shape):
    s = create_scan(name)
    x = torch.randn(1, 2, *shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: s.merge(s.scan(t).sin(), shape, reduce="mean"), (x,))


# ------------------------------------------------------------------ hand-written visit orders
def test_sass_visit_order_4x4():
    # Grid positions on a 4x4 map:   0  1  2  3
    #                                4  5  6  7
    #                                8  9 10 11
    #                               12 13 14 15
    expected = [
        # 1. row snake from the bottom row, ending at the top-left corner
        [12, 13, 14, 15, 11, 10, 9, 8, 4, 5, 6, 7, 3, 2, 1, 0],
        # 2. column snake from the top-left corner
        [0, 4, 8, 12, 13, 9, 5, 1, 2, 6, 10, 14, 15, 11, 7, 3],
        # 3. anti-diagonal zig-zag from the top-left corner
        [0, 4, 1, 2, 5, 8, 12, 9, 6, 3, 7, 10, 13, 14, 11, 15],
        # 4. the same zig-zag from the top-right corner
        [3, 7, 2, 1, 6, 11, 15, 10, 5, 0, 4, 9, 14, 13, 8, 12],
    ]
    assert create_scan("sass").index((4, 4)).tolist() == expected


def test_sass_row_snake_odd_height_starts_bottom_right():
    # 3x2 map: 0 1 / 2 3 / 4 5. Bottom row walked right-to-left so the path ends top-left.
    assert create_scan("sass").index((3, 2))[0].tolist() == [5, 4, 2, 3, 1, 0]


def test_cross_visit_order_2x3():
    # 0 1 2 / 3 4 5
    assert create_scan("cross").index((2, 3)).tolist() == [
        [0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5], [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0],
    ]


def test_snake_and_diagonal_visit_order_3x3():
    # 0 1 2 / 3 4 5 / 6 7 8
    assert create_scan("snake").index((3, 3)).tolist() == [
        [0, 1, 2, 5, 4, 3, 6, 7, 8], [0, 3, 6, 7, 4, 1, 2, 5, 8],
    ]
    assert create_scan("diagonal").index((3, 3)).tolist() == [
        [0, 3, 1, 2, 4, 6, 7, 5, 8], [2, 5, 1, 0, 4, 8, 7, 3, 6],
    ]


def test_3d_visit_orders_2x2x2():
    # position = 4*d + 2*h + w
    assert create_scan("tri_orient").index((2, 2, 2)).tolist() == [
        [0, 1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0], [0, 4, 1, 5, 2, 6, 3, 7],
    ]
    assert create_scan("snake").index((2, 2, 2)).tolist() == [
        [0, 1, 3, 2, 6, 7, 5, 4], [0, 2, 3, 1, 5, 7, 6, 4], [0, 4, 5, 1, 3, 7, 6, 2],
    ]
    orders = create_scan("multi_order").index((2, 2, 2)).tolist()
    assert orders[0] == list(range(8)) and orders[-1] == [0, 4, 2, 6, 1, 5, 3, 7]  # (d,h,w) .. (w,h,d)


@pytest.mark.parametrize("shape", [(5, 7), (6, 4), (1, 5), (3, 4, 5), (2, 3, 3)])
def test_snake_paths_only_step_to_neighbours(shape):
    s = create_scan("snake")
    for row in s.index(shape):
        steps = (_pos(shape, row[1:]) - _pos(shape, row[:-1])).abs().sum(-1)
        assert bool((steps == 1).all())


@pytest.mark.parametrize("shape", [(5, 7), (6, 4), (4, 4), (1, 5), (5, 1)])
def test_sass_and_diagonal_paths_are_connected(shape):
    sass = create_scan("sass").index(shape)
    for k, row in enumerate(sass):
        steps = (_pos(shape, row[1:]) - _pos(shape, row[:-1])).abs()
        if k < 2:  # the snakes move to 4-neighbours
            assert bool((steps.sum(-1) == 1).all())
        else:  # the zig-zags move to 8-neighbours (diagonal steps and turns at the border)
            assert bool((steps.max(-1).values == 1).all())
    assert torch.equal(create_scan("diagonal").index(shape), sass[2:])


# ------------------------------------------------------------------------- caching, errors
def test_index_maps_are_cached_per_shape_and_device():
    s = create_scan("cross")
    a = s.index((6, 5))
    assert s.index((6, 5)) is a and create_scan("cross").index((6, 5)) is a
    assert s.index((5, 6)) is not a
    assert s.inverse((6, 5), "cpu") is s.inverse((6, 5))


def test_errors_name_the_problem():
    s = create_scan("sass")
    with pytest.raises(ValueError, match=r"\[2, 3, 3, 4, 5\]"):
        s.scan(torch.randn(2, 3, 3, 4, 5))
    with pytest.raises(ValueError, match="sass"):
        s.index((3, 4, 5))
    with pytest.raises(TypeError, match="list"):
        s.scan([1, 2, 3])
    cross = create_scan("cross")
    with pytest.raises(ValueError, match=r"\[B, 4, C, 12\]"):
        cross.merge(torch.randn(1, 3, 2, 12), (3, 4))
    with pytest.raises(ValueError, match="reduce"):
        cross.merge(torch.randn(1, 4, 2, 12), (3, 4), reduce="max")
    with pytest.raises(ValueError, match="positive"):
        cross.index((0, 4))
    with pytest.raises(ValueError, match="tri_orient"):
        create_scan("tri_orient").scan(torch.randn(1, 2, 3, 4))
    with pytest.raises(ValueError, match="Did you mean 'sass'"):
        create_scan("sas")
