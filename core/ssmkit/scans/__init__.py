"""ssmkit.scans: 2-D/3-D scan strategies, invertible (scan, merge) pairs defined by index maps.

Strategies register themselves with ``ssmkit.registry.register_scan``; build one with
``ssmkit.registry.create_scan(name)`` and list them with ``list_scans()``.
"""

from ssmkit.ops.utils import inverse_permutation
from ssmkit.scans.base import ScanStrategy

__all__ = ["ScanStrategy", "inverse_permutation"]
