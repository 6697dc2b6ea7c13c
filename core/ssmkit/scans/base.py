"""Scan strategies: invertible maps between a feature map and K 1-D sequences.

A strategy is defined by one index permutation per path: ``index[k, t]`` is the flat (raster)
position of the voxel that path ``k`` visits at step ``t``. Everything else follows from it:

- ``scan(x)``   [B, C, *S] -> [B, K, C, L]   gathers the map along each path;
- ``merge(y)``  [B, K, C, L] -> [B, C, *S]   gathers each path's output at the inverse
  permutation and sums (or averages) the K results.

Because both directions are pure gathers by a permutation and its exact inverse,
``merge(scan(x)) == K * x`` holds bit-for-bit, which the tests check for every registered
strategy at odd shapes. Index maps are built once per (spatial shape, device) and cached.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

import torch

from ssmkit._checks import one_of
from ssmkit.ops.utils import format_shape as _shape
from ssmkit.ops.utils import inverse_permutation, pairwise_sum

_CACHE_SIZE = 64  # distinct (shape, device) pairs kept per strategy; a model uses a handful


def _dims_name(n: int) -> str:
    return {2: "[B, C, H, W]", 3: "[B, C, D, H, W]"}.get(n, f"[B, C, <{n} spatial dims>]")


class ScanStrategy:
    """Base class of the registered scan strategies.

    Subclasses set ``name``, ``spatial_dims`` (the numbers of spatial dimensions they support)
    and implement :meth:`build`, which returns the [K, L] permutation on the CPU for one
    spatial shape. Instances are cheap; the cache of index maps lives on the class, so every
    instance of a strategy shares it.
    """

    name: ClassVar[str] = ""
    spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)
    _cache: ClassVar[OrderedDict]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._cache = OrderedDict()

    # -- definition -------------------------------------------------------------------------
    def build(self, shape: tuple[int, ...]) -> torch.Tensor:
        """[K, L] int64 permutation rows for spatial ``shape`` (CPU). Overridden by strategies."""
        raise TypeError(f"{type(self).__name__} does not define build(); subclasses of ScanStrategy must")

    def supports(self, ndim: int) -> bool:
        """Whether the strategy is defined for ``ndim`` spatial dimensions."""
        return ndim in self.spatial_dims

    def num_paths(self, ndim: int) -> int:
        """K, the number of paths, for ``ndim`` spatial dimensions."""
        self._check_ndim(ndim)
        return int(self.index((1,) * ndim, torch.device("cpu")).shape[0])

    # -- cached index maps ------------------------------------------------------------------
    def _check_ndim(self, ndim: int) -> None:
        if not self.supports(ndim):
            dims = " or ".join(f"{d}-D {_dims_name(d)}" for d in self.spatial_dims)
            raise ValueError(f"scan strategy {self.name!r} is defined for {dims} inputs; got {ndim} spatial dims")

    def _maps(self, shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        shape = tuple(int(s) for s in shape)
        if any(s < 1 for s in shape):
            raise ValueError(f"spatial shape must have positive sizes; got {list(shape)}")
        self._check_ndim(len(shape))
        key = (shape, str(device))
        cache = type(self)._cache
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        index = self.build(shape).to(torch.int64)
        L = 1
        for s in shape:
            L *= s
        if index.dim() != 2 or index.shape[1] != L:
            raise RuntimeError(f"strategy {self.name!r} built an index of shape {_shape(index)}; expected [K, {L}]")
        inv = inverse_permutation(index)
        # Every row must be a permutation; a wrong map would silently corrupt merges.
        if not bool((index.gather(-1, inv) == torch.arange(L).expand_as(index)).all()):
            raise RuntimeError(f"strategy {self.name!r} built an index that is not a permutation for {list(shape)}")
        maps = (index.to(device), inv.to(device))
        cache[key] = maps
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
        return maps

    def index(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
        """[K, L] source positions visited by each path (cached per shape and device)."""
        return self._maps(shape, torch.device(device))[0]

    def inverse(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
        """[K, L] step at which each path visits each position: ``inverse[k, index[k, t]] = t``."""
        return self._maps(shape, torch.device(device))[1]

    # -- scan / merge -----------------------------------------------------------------------
    def _check_map(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"scan expects a torch.Tensor [B, C, *spatial]; got {type(x).__name__}")
        if x.dim() - 2 not in self.spatial_dims:
            forms = " or ".join(_dims_name(d) for d in self.spatial_dims)
            raise ValueError(f"scan strategy {self.name!r} expects {forms}; got a tensor of shape {_shape(x)}")

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, *S] -> [B, K, C, L]: the map read along each of the K paths (a copy per path)."""
        self._check_map(x)
        batch, chans = x.shape[:2]
        shape = tuple(x.shape[2:])
        index = self.index(shape, x.device)
        K, L = index.shape
        flat = x.reshape(batch, chans, 1, L).transpose(1, 2)  # [B, 1, C, L] view
        # One gather writes [B, K, C, L] directly; on the CPU it is several times faster than
        # index_select along the last axis followed by a transposing copy.
        return flat.expand(batch, K, chans, L).gather(-1, index.view(1, K, 1, L).expand(batch, K, chans, L))

    def merge(self, y: torch.Tensor, shape: tuple[int, ...], reduce: str = "sum") -> torch.Tensor:
        """[B, K, C, L] -> [B, C, *shape]: each path's output put back in place, summed or averaged.

        ``reduce="sum"`` adds the paths pairwise (exact for equal terms, K <= 6); ``"mean"`` divides by K.
        """
        one_of(reduce, ("sum", "mean"), "reduce", f"{self.name} merge")
        if not isinstance(y, torch.Tensor) or y.dim() != 4:
            raise ValueError(f"merge expects y of shape [B, K, C, L]; got {_shape(y)}")
        shape = tuple(int(s) for s in shape)
        index_inv = self.inverse(shape, y.device)
        K, L = index_inv.shape
        if y.shape[1] != K or y.shape[3] != L:
            raise ValueError(
                f"merge for {self.name!r} at spatial shape {list(shape)} expects y [B, {K}, C, {L}]; got {_shape(y)}"
            )
        B_, C_ = y.shape[0], y.shape[2]
        out = pairwise_sum(y[:, k].gather(-1, index_inv[k].expand(B_, C_, L)) for k in range(K))
        if reduce == "mean":
            out = out / K
        return out.reshape(y.shape[0], y.shape[2], *shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, spatial_dims={self.spatial_dims})"


# -- building blocks for index maps ---------------------------------------------------------
def grid(shape: tuple[int, ...]) -> torch.Tensor:
    """Raster positions laid out on the grid: ``grid(shape)[i, j, ...]`` is the flat index."""
    L = 1
    for s in shape:
        L *= s
    return torch.arange(L, dtype=torch.int64).view(*shape)


def axis_order(shape: tuple[int, ...], order: tuple[int, ...]) -> torch.Tensor:
    """[L] raster traversal with axes nested outer-to-inner as ``order`` (last = fastest)."""
    return grid(shape).permute(*order).reshape(-1)


def serpentine(shape: tuple[int, ...], order: tuple[int, ...]) -> torch.Tensor:
    """[L] boustrophedon traversal with axes nested as ``order``; consecutive steps are neighbours.

    Every odd slab along an axis is walked backwards as a whole, so the path never jumps.
    """

    def walk(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 1:
            return t
        if t.dim() == 2:
            rows = t.clone()
            rows[1::2] = rows[1::2].flip(-1)
            return rows.reshape(-1)
        parts = [walk(t[i]) for i in range(t.shape[0])]
        return torch.cat([p if i % 2 == 0 else p.flip(0) for i, p in enumerate(parts)])

    return walk(grid(shape).permute(*order))


def antidiagonal_zigzag(height: int, width: int) -> torch.Tensor:
    """[H*W] zig-zag over anti-diagonals starting at the top-left corner.

    Anti-diagonal s = i + j is walked with i rising when s is even (from its top-right end
    down-left) and with i falling when s is odd (from its bottom-left end up-right), so the
    path turns at the border like a JPEG zig-zag.
    """
    i = torch.arange(height).view(-1, 1).expand(height, width)
    j = torch.arange(width).view(1, -1).expand(height, width)
    s = i + j
    within = torch.where(s % 2 == 0, i, height - 1 - i)
    key = (s * height + within).reshape(-1)
    return torch.argsort(key, stable=True)
