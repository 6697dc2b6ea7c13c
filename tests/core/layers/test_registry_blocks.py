"""Every registered block, present and future: build, forward and backward in train and eval mode.

Each block is built with ``create_block(name, d_model=16)`` and fed the input its class asks
for (the convention is documented in docs/contributing.md, "Registered blocks"):

- ``example_input(batch) -> Tensor | tuple[Tensor, ...]``, a method on the block, wins if present;
- otherwise ``input_kind``: ``"seq"`` [B, L, d_model] (the default), ``"image2d"``
  [B, d_model, H, W] or ``"volume3d"`` [B, d_model, D, H, W].

A block maps its input to an output of the same shape (a tuple of inputs to a tuple of outputs
of the same shapes), keeps every value finite, gives every trainable parameter a gradient and is
deterministic on CPU under a fixed seed.
"""

from __future__ import annotations

import pytest
import torch

from ssmkit.registry import create_block, list_blocks

D_MODEL = 16
BATCH = 2
# Odd, distinct sizes so a transposed or mixed-up axis cannot pass by accident.
INPUT_SHAPES = {
    "seq": lambda b, c: (b, 11, c),
    "image2d": lambda b, c: (b, c, 6, 7),
    "volume3d": lambda b, c: (b, c, 3, 5, 6),
}


def example_inputs(block: torch.nn.Module, batch: int = BATCH) -> tuple[torch.Tensor, ...]:
    """The inputs the registry convention says ``block`` takes, as a tuple of positional args."""
    if callable(getattr(block, "example_input", None)):
        x = block.example_input(batch)
        return tuple(x) if isinstance(x, (tuple, list)) else (x,)
    kind = getattr(block, "input_kind", "seq")
    if kind not in INPUT_SHAPES:
        raise ValueError(f"{type(block).__name__}.input_kind={kind!r}; expected one of {sorted(INPUT_SHAPES)} "
                         "(or define example_input(batch))")
    return (torch.randn(*INPUT_SHAPES[kind](batch, D_MODEL)),)


def _build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    block = create_block(name, d_model=D_MODEL)
    assert isinstance(block, torch.nn.Module), f"block {name!r} built a {type(block).__name__}, not an nn.Module"
    return block


def _inputs(block: torch.nn.Module, seed: int = 1) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(seed)
    xs = example_inputs(block)
    return tuple(x.detach().clone().requires_grad_(x.is_floating_point()) for x in xs)


def _forward_backward(block: torch.nn.Module, xs: tuple[torch.Tensor, ...], seed: int = 2) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(seed)
    out = block(*xs)
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    assert all(isinstance(o, torch.Tensor) for o in outs), \
        f"forward returned {type(out).__name__}; expected a Tensor or a tuple of Tensors"
    gen = torch.Generator().manual_seed(seed)
    # Random cotangents, not out.sum(): a normalised output can have a constant sum.
    loss = sum((o * torch.randn(o.shape, generator=gen).to(o.dtype)).sum() for o in outs)
    loss.backward()
    return outs


def test_registry_lists_the_mamba_blocks():
    assert {"mamba", "bimamba", "mamba_block"} <= set(list_blocks())


@pytest.mark.parametrize("name", list_blocks())
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_block_forward_backward_deterministic(name, mode):
    # Two blocks built and run under the same seeds must agree bit for bit (CPU), so one run
    # checks shapes, finiteness and gradients and the other checks determinism.
    a, b = _build(name), _build(name)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), \
        f"{name}: initialisation depends on more than the seed"
    a.train(mode == "train")
    b.train(mode == "train")
    xs = _inputs(a)
    outs = _forward_backward(a, xs)  # train mode too: dropout and the like draw from the seeded RNG

    in_shapes, out_shapes = [list(x.shape) for x in xs], [list(o.shape) for o in outs]
    assert out_shapes == in_shapes, f"{name}: inputs {in_shapes} -> outputs {out_shapes}"
    assert all(torch.isfinite(o).all() for o in outs), f"{name} produced NaN or inf in {mode} mode"
    for i, x in enumerate(xs):
        if x.requires_grad:
            assert x.grad is not None and torch.isfinite(x.grad).all(), \
                f"{name}: input {i} gradient missing or not finite"
    for pname, p in a.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: parameter {pname} gets no gradient in {mode} mode"
            assert torch.isfinite(p.grad).all(), f"{name}: parameter {pname} has a non-finite gradient"

    outs_b = _forward_backward(b, _inputs(b))
    assert all(torch.equal(oa, ob) for oa, ob in zip(outs, outs_b)), f"{name}: two seeded runs differ ({mode})"
    for (pname, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.grad is not None:
            assert torch.equal(pa.grad, pb.grad), f"{name}: gradient of {pname} differs between seeded runs"


@pytest.mark.parametrize("name", list_blocks())
def test_block_batch_size_follows_example_input(name):
    block = _build(name).eval()
    with torch.no_grad():
        xs = example_inputs(block, batch=3)
        assert xs[0].shape[0] == 3, f"{name}: example_input ignores its batch argument"
        out = block(*xs)
        outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        assert [o.shape for o in outs] == [x.shape for x in xs]
