"""ssmkit.scans: 2-D/3-D scan strategies, invertible (scan, merge) pairs defined by index maps.

Strategies register themselves with ``ssmkit.registry.register_scan``; build one with
``ssmkit.registry.create_scan(name)`` and list them with ``list_scans()``.

    >>> import torch
    >>> from ssmkit.scans import Cross
    >>> x = torch.randn(2, 3, 4, 5)
    >>> seqs = Cross().scan(x)
    >>> torch.allclose(Cross().merge(seqs, (4, 5)), 4 * x)
    True
"""

from ssmkit.ops.utils import inverse_permutation
from ssmkit.scans.base import ScanStrategy
from ssmkit.scans.strategies import SASS, Bidirectional, Cross, Diagonal, MultiOrder, Raster, Snake, TriOrient

__all__ = ["SASS", "Bidirectional", "Cross", "Diagonal", "MultiOrder", "Raster", "ScanStrategy", "Snake",
           "TriOrient", "inverse_permutation"]
