"""An exponential moving average of a model's weights (``train.ema``), checkpointed with the run.

After every optimizer step each floating-point tensor of the state dict moves towards the live
weights: ``shadow = d * shadow + (1 - d) * live`` with ``d = min(decay, (1 + n) / (10 + n))`` after
``n`` updates, so a short run is not dominated by its random initialisation. Integer buffers
(BatchNorm's counter) are copied. Validation, the best checkpoint and the final weights use the
averaged weights when it is on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightEMA:
    """Shadow weights of ``model`` (on its device, in float32 for low-precision parameters)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema must be in (0, 1) to be enabled; got {decay!r}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                       for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(d).add_(v.detach().float(), alpha=1 - d)
            else:
                s.copy_(v)
        self.updates += 1

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Inside the block ``model`` holds the averaged weights; the live ones come back after."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict({k: self.shadow[k].to(live[k].dtype) for k in live})
        try:
            yield model
        finally:
            model.load_state_dict(live)

    def tensors(self) -> dict[str, torch.Tensor]:
        """For the checkpoint: ``ema/<key>`` -> tensor on the CPU."""
        return {f"ema/{k}": v.detach().to("cpu").contiguous().clone() for k, v in self.shadow.items()}

    def load(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        missing = [k for k in self.shadow if f"ema/{k}" not in tensors]
        if missing:
            raise KeyError(f"the checkpoint holds no averaged weights for {missing[:3]}")
        for k, s in self.shadow.items():
            s.copy_(tensors[f"ema/{k}"].to(s.device))
        self.updates = int(updates)


__all__ = ["WeightEMA"]
