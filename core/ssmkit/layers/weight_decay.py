"""Which parameters must not be weight-decayed, in the form optimiser factories read.

Weight decay pulls a parameter towards 0. On a projection matrix that regularises; on the
parameters that set a state-space layer's dynamics it changes the model instead: ``A_log -> 0``
makes every decay rate 1, ``D -> 0`` removes the skip, a step-size bias -> 0 fixes every step at
softplus(0). Layers flag such parameters with ``param._no_weight_decay = True``; biases and norm
gains (every parameter with at most one dimension) are left undecayed as well, as timm does.

timm's optimiser factory (``timm.optim.create_optimizer_v2``) calls ``model.no_weight_decay()``
on the model it is given and reads a set of parameter names relative to that model; it does not
look into children. :func:`no_weight_decay_names` therefore walks the whole module tree, so any
model that holds ssmkit blocks gets the right set by exposing it:

    >>> import torch
    >>> from ssmkit.layers import Mamba
    >>> class Net(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.mixer = Mamba(d_model=16)
    ...     def no_weight_decay(self):
    ...         return no_weight_decay_names(self)
    >>> sorted(Net().no_weight_decay())[:3]
    ['mixer.A_log', 'mixer.D', 'mixer.conv1d.bias']
"""

from __future__ import annotations

from torch import nn


def no_weight_decay_names(module: nn.Module, exclude_1d: bool = True) -> set[str]:
    """Names (relative to ``module``) of the parameters that should get no weight decay.

    Every parameter flagged ``_no_weight_decay`` anywhere below ``module``; with ``exclude_1d``
    also every parameter with at most one dimension (biases, norm weights, per-channel skips).
    """
    names = set()
    for name, p in module.named_parameters():
        if getattr(p, "_no_weight_decay", False) or (exclude_1d and p.ndim <= 1):
            names.add(name)
    return names


class NoWeightDecay:
    """Mixin for ``nn.Module`` subclasses: ``no_weight_decay()`` as timm's optimiser factory reads it."""

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to this module) to leave out of weight decay."""
        return no_weight_decay_names(self)  # type: ignore[arg-type]


__all__ = ["NoWeightDecay", "no_weight_decay_names"]
