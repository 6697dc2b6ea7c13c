"""Helpers shared by the ops: index permutations, tensor layouts and shapes, compute dtypes and
packed-sequence boundaries (``cu_seqlens``).

They sit below every op folder and import none of them, so any op (and the scan strategies
above the ops) can use them without one op importing another for a helper.
"""

from ssmkit.ops.utils.cu_seqlens import check_cu_seqlens, sequence_spans
from ssmkit.ops.utils.dtype import compute_dtype
from ssmkit.ops.utils.permutation import inverse_permutation, pairwise_sum
from ssmkit.ops.utils.shapes import channels_last_map, format_shape

__all__ = ["channels_last_map", "check_cu_seqlens", "compute_dtype", "format_shape", "inverse_permutation",
           "pairwise_sum", "sequence_spans"]
