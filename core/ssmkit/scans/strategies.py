"""The registered scan strategies (2-D and 3-D), each a set of index permutations.

Spatial axes are numbered as in the tensor: 2-D (H, W) = (0, 1), 3-D (D, H, W) = (0, 1, 2).
"Raster" order is the tensor's own flattening (last axis fastest).

| name            | dims | K (2-D / 3-D) | paths |
|-----------------|------|---------------|-------|
| ``raster``        | 2, 3 | 1 / 1 | raster order |
| ``bidirectional`` | 2, 3 | 2 / 2 | raster, reversed raster |
| ``cross``         | 2, 3 | 4 / 6 | raster with each axis fastest in turn, then all reversed (VMamba) |
| ``snake``         | 2, 3 | 2 / 3 | boustrophedon with each axis fastest in turn |
| ``diagonal``      | 2    | 2     | anti-diagonal zig-zag from the top-left corner, and its mirror |
| ``sass``          | 2    | 4     | SCSegamba's structure-aware paths (see :class:`SASS`) |
| ``tri_orient``    | 3    | 3     | forward, reverse and inter-slice (SegMamba's tri-orientated scan) |
| ``multi_order``   | 2, 3 | 2 / 6 | raster under every nesting order of the axes |
"""

from __future__ import annotations

import itertools

import torch

from ssmkit.registry import register_scan
from ssmkit.scans.base import ScanStrategy, antidiagonal_zigzag, axis_order, grid, serpentine


def _fastest_axis_orders(ndim: int) -> list[tuple[int, ...]]:
    """One nesting order per axis with that axis fastest, the others in their natural order."""
    orders = []
    for fast in reversed(range(ndim)):  # raster (last axis fastest) first
        outer = tuple(a for a in range(ndim) if a != fast)
        orders.append(outer + (fast,))
    return orders


@register_scan("raster")
class Raster(ScanStrategy):
    """One path in raster order (K=1)."""

    name = "raster"

    def build(self, shape):
        return axis_order(shape, tuple(range(len(shape))))[None]


@register_scan("bidirectional")
class Bidirectional(ScanStrategy):
    """Raster order and its reverse (K=2), as in Vision Mamba."""

    name = "bidirectional"

    def build(self, shape):
        fwd = axis_order(shape, tuple(range(len(shape))))
        return torch.stack([fwd, fwd.flip(0)])


@register_scan("cross")
class Cross(ScanStrategy):
    """VMamba's cross scan: rows, columns, and both reversed (K=4 in 2-D).

    In 3-D the same construction gives K=6: raster with each of W, H, D fastest, then reversed.
    """

    name = "cross"

    def build(self, shape):
        paths = [axis_order(shape, o) for o in _fastest_axis_orders(len(shape))]
        return torch.stack(paths + [p.flip(0) for p in paths])


@register_scan("snake")
class Snake(ScanStrategy):
    """Boustrophedon scans (K=2 in 2-D, 3 in 3-D): row snake, column snake (and slice snake).

    Each path starts at the origin corner, walks its fastest axis, and reverses direction at
    every turn, so consecutive steps are always spatial neighbours.
    """

    name = "snake"

    def build(self, shape):
        return torch.stack([serpentine(shape, o) for o in _fastest_axis_orders(len(shape))])


@register_scan("diagonal")
class Diagonal(ScanStrategy):
    """Anti-diagonal zig-zag from the top-left corner, and its left-right mirror (K=2, 2-D)."""

    name = "diagonal"
    spatial_dims = (2,)

    def build(self, shape):
        height, width = shape
        zz = antidiagonal_zigzag(height, width)
        return torch.stack([grid(shape).reshape(-1)[zz], grid(shape).flip(-1).reshape(-1)[zz]])


@register_scan("sass")
class SASS(ScanStrategy):
    """SCSegamba's structure-aware scan (K=4, 2-D), path by path:

    1. a row snake starting at the bottom row: rows from bottom to top, row ``r`` walked
       right-to-left when ``r`` is even, so the path ends at the top-left corner;
    2. a column snake starting top-left: columns left to right, column ``c`` walked downwards
       when ``c`` is even;
    3. an anti-diagonal zig-zag starting top-left (see :func:`antidiagonal_zigzag`);
    4. the same zig-zag starting top-right (path 3 mirrored left-right).

    The published code inverts path 3 with a map that sends every pixel to the last output;
    here every path is inverted by its exact inverse permutation.
    """

    name = "sass"
    spatial_dims = (2,)

    def build(self, shape):
        height, width = shape
        pos = grid(shape)
        rows = pos.flip(0).clone()  # bottom row first
        # After the flip, row index r = H-1-step; walk right-to-left when the original r is even.
        rev = torch.tensor([(height - 1 - step) % 2 == 0 for step in range(height)])
        rows[rev] = rows[rev].flip(-1)
        row_snake = rows.reshape(-1)
        col_snake = serpentine(shape, (1, 0))
        zz = antidiagonal_zigzag(height, width)
        diag_tl = pos.reshape(-1)[zz]
        diag_tr = pos.flip(-1).reshape(-1)[zz]
        return torch.stack([row_snake, col_snake, diag_tl, diag_tr])


@register_scan("tri_orient")
class TriOrient(ScanStrategy):
    """SegMamba's tri-orientated scan of a volume (K=3, 3-D): forward raster, reverse raster,
    and the inter-slice order that visits all D slices of one in-plane position before moving
    to the next (depth fastest)."""

    name = "tri_orient"
    spatial_dims = (3,)

    def build(self, shape):
        fwd = axis_order(shape, (0, 1, 2))
        inter_slice = axis_order(shape, (1, 2, 0))
        return torch.stack([fwd, fwd.flip(0), inter_slice])


@register_scan("multi_order")
class MultiOrder(ScanStrategy):
    """Raster under every nesting order of the spatial axes (K = 2 in 2-D, 6 in 3-D)."""

    name = "multi_order"

    def build(self, shape):
        orders = itertools.permutations(range(len(shape)))
        return torch.stack([axis_order(shape, o) for o in orders])
