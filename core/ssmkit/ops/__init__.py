"""ssmkit.ops: functional kernels, one folder per op.

Each op has a plain-loop reference (the definition of correct, any dtype), fast paths (pure
PyTorch ``chunked``/``fft``, Triton on CUDA) and a public function that validates its inputs and
dispatches on ``backend="auto"|...`` (environment override ``SSMKIT_BACKEND``).

    >>> import torch
    >>> from ssmkit.ops import selective_scan
    >>> u, dt = torch.randn(1, 4, 9), torch.rand(1, 4, 9)
    >>> A, B, C = -torch.rand(4, 3), torch.randn(1, 1, 3, 9), torch.randn(1, 1, 3, 9)
    >>> selective_scan(u, dt, A, B, C).shape
    torch.Size([1, 4, 9])
"""

from ssmkit.ops.causal_conv1d import causal_conv1d
from ssmkit.ops.ema import ema, ema_step
from ssmkit.ops.gla import gla
from ssmkit.ops.path_scan import fused_path_scan
from ssmkit.ops.selective_scan import selective_scan, selective_state_update

__all__ = ["causal_conv1d", "ema", "ema_step", "fused_path_scan", "gla", "selective_scan", "selective_state_update"]
