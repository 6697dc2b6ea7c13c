"""Gated convolution and fusion blocks: GBC, HGConv, GatedFusion, GambaCell and GambaBlock.

Beyond shapes and gradients, the tests pin down what makes each block what it is: the gating
of GBC and HGConv is a product (zero the gate and the interaction vanishes; scale it and the
interaction scales to the power of the number of gating steps), GatedFusion's gates are
probabilities and both its branches matter, GambaCell really uses both channel halves, and each
block learns a small task that the same network with a linear layer in its place cannot.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.layers.gamba import GambaBlock, GambaCell
from ssmkit.layers.gated_conv import GBC, GnConv, HGConv
from ssmkit.layers.gated_fusion import GatedFusion
from ssmkit.registry import create_block, list_blocks
from tests.conftest import rel_err

MINE = ["gbc", "hgconv", "gated_fusion", "gamba_cell", "gamba_block"]


def _example(block: nn.Module, batch: int = 2):
    if hasattr(block, "example_input"):
        return block.example_input(batch)
    return torch.randn(batch, 16, 7, 5) if block.input_kind == "image2d" else torch.randn(batch, 16, 3, 5, 4)


def _call(block: nn.Module, x):
    return block(*x) if isinstance(x, tuple) else block(x)


def _as_tuple(y) -> tuple[torch.Tensor, ...]:
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def _grads(module: nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor | None]:
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n: g for (n, _), g in zip(named, grads)}


def _nonzero(g: torch.Tensor | None) -> bool:
    return g is not None and bool(g.abs().sum() > 0)


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", MINE)
def test_registered_block_runs_train_and_eval_and_is_deterministic(name):
    assert name in list_blocks()
    torch.manual_seed(3)
    block = create_block(name, d_model=16)
    torch.manual_seed(3)
    again = create_block(name, d_model=16)
    x = _example(block)
    # Same seed, same weights, same output (checked before training mode moves BatchNorm stats).
    for y1, y2 in zip(_as_tuple(_call(again.eval(), x)), _as_tuple(_call(block.eval(), x))):
        assert torch.equal(y1, y2)
    for mode in (True, False):
        block.train(mode)
        ys = _as_tuple(_call(block, x))
        xs = x if isinstance(x, tuple) else (x,)
        assert [y.shape for y in ys] == [t.shape for t in xs]
        assert all(torch.isfinite(y).all() for y in ys)
        grads = _grads(block, sum(y.square().mean() for y in ys))
        assert all(g is None or torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("name", MINE)
def test_bf16_forward_tracks_float32(name):
    torch.manual_seed(4)
    block = create_block(name, d_model=16).eval()
    x = _example(block)
    y32 = _as_tuple(_call(block, x))
    low = block.to(torch.bfloat16)
    xb = tuple(t.bfloat16() for t in x) if isinstance(x, tuple) else x.bfloat16()
    for a, b in zip(_as_tuple(_call(low, xb)), y32):
        assert a.dtype == torch.bfloat16 and rel_err(a.float(), b) < 6e-2


# ----------------------------------------------------------------------------- GBC


@pytest.mark.parametrize("shape", [(2, 16, 9, 7), (1, 16, 1, 5), (3, 16, 4, 1)])
@pytest.mark.parametrize("norm", ["batch", "group", "layer"])
def test_gbc_shapes_and_gradients(shape, norm):
    block = GBC(16, norm=norm)
    x = torch.randn(shape, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0


def test_gbc_gate_is_multiplicative():
    block = GBC(16).eval()
    x = torch.randn(2, 16, 6, 5)
    seen: list[torch.Tensor] = []
    block.proj.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    scale = {"value": 0.0}
    block.gate.register_forward_hook(lambda m, args, out: out * scale["value"])

    # Gate zeroed: the product fed to the projection is exactly zero, so the main branch can no
    # longer influence the output (an additive gate would still pass it through).
    y0 = block(x)
    assert torch.equal(seen[-1], torch.zeros_like(seen[-1]))
    grads = _grads(block, y0.square().sum())
    assert all(not _nonzero(g) for n, g in grads.items() if n.startswith("main."))
    assert _nonzero(grads["proj.0.reduce.bias"])

    # Scaling the gate scales the interaction linearly.
    scale["value"] = 1.0
    block(x)
    once = seen[-1]
    scale["value"] = 2.5
    block(x)
    assert once.abs().sum() > 0 and torch.allclose(seen[-1], 2.5 * once, rtol=1e-5, atol=1e-6)


def test_gbc_rejects_bad_input():
    with pytest.raises(ValueError, match="C=16"):
        GBC(16)(torch.randn(2, 8, 5, 5))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        GBC(16)(torch.randn(2, 16, 5))
    with pytest.raises(ValueError, match="norm"):
        GBC(16, norm="instance")
    with pytest.raises(ValueError, match="kernel_size"):
        GBC(16, kernel_size=4)


# ----------------------------------------------------------------------------- HGConv


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 16, 9, 7)), (2, (1, 16, 1, 4)), (3, (2, 16, 3, 5, 4))])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_hgconv_shapes_and_gradients(spatial_dims, shape, order):
    block = HGConv(16, order=order, kernel_size=5, spatial_dims=spatial_dims)
    assert block.input_kind == ("image2d" if spatial_dims == 2 else "volume3d")
    x = torch.randn(shape, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    grads = _grads(block, y.square().sum())
    assert all(_nonzero(g) for n, g in grads.items() if "gnconv" in n)
    (gx,) = torch.autograd.grad(block(x).sum(), x)
    assert torch.isfinite(gx).all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("order", [1, 3])
def test_gnconv_gating_is_multiplicative(spatial_dims, order):
    """Zeroing the gate branch zeroes the interaction; scaling it by c scales it by c**order.

    The published MambaClinix code adds the gates: there a zero gate would leave the main
    branch in place and scaling would change the output affinely, not by c**order.
    """
    torch.manual_seed(5)
    op = GnConv(16, order=order, kernel_size=3, spatial_dims=spatial_dims)
    with torch.no_grad():
        for pw in op.pws:
            pw.bias.zero_()  # biases inside the recursion would add lower-order terms
    x = torch.randn((2, 16) + (4, 5, 3)[:spatial_dims])
    c = {"value": 0.0}
    op.dwconv.register_forward_hook(lambda m, args, out: out * c["value"])

    p_n = op.interaction(x)
    assert torch.equal(p_n, torch.zeros_like(p_n))
    bias = op.proj_out.bias.view((1, -1) + (1,) * spatial_dims)
    assert torch.allclose(op(x), bias.expand_as(op(x)))
    grads = _grads(op, op(x).square().sum())
    assert not _nonzero(grads["proj_in.weight"]) and not _nonzero(grads["dwconv.weight"])

    c["value"] = 1.0
    base = op.interaction(x)
    c["value"] = 1.7
    assert base.abs().sum() > 0
    assert rel_err(op.interaction(x), 1.7**order * base) < 1e-5

    if order == 1:  # p_1 = p_0 * q_0 exactly
        c["value"] = 1.0
        p0, q = torch.split(op.proj_in(x), (op.dims[0], sum(op.dims)), dim=1)
        assert rel_err(op.interaction(x), p0 * op.dwconv(q) * op.scale) < 1e-6


def test_hgconv_rejects_bad_config_and_input():
    with pytest.raises(ValueError, match="2\\*\\*\\(order-1\\)"):
        HGConv(12, order=4)
    with pytest.raises(ValueError, match="spatial_dims"):
        HGConv(16, spatial_dims=1)
    with pytest.raises(ValueError, match=r"\[B, C, D, H, W\]"):
        HGConv(16, spatial_dims=3)(torch.randn(2, 16, 5, 5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        HGConv(16)([1.0])


# ----------------------------------------------------------------------------- GatedFusion


@pytest.mark.parametrize("la,lb,pairing", [(6, 6, "auto"), (7, 3, "auto"), (5, 5, "concat"), (1, 4, "concat")])
def test_gated_fusion_shapes_gates_and_cross_stream_flow(la, lb, pairing):
    block = GatedFusion(16, pairing=pairing)
    a = torch.randn(2, la, 16, requires_grad=True)
    b = torch.randn(2, lb, 16, requires_grad=True)
    a2, b2, g = block(a, b, return_gates=True)
    assert a2.shape == a.shape and b2.shape == b.shape and g.shape == (2, la + lb, 16)
    assert bool(((g >= 0) & (g <= 1)).all())
    # Every output token of a sees every token of b, in both scan directions: the first token of
    # a depends on the last of b, and the last of b on the first of a.
    (gb,) = torch.autograd.grad(a2[:, 0].sum(), b, retain_graph=True)
    (ga,) = torch.autograd.grad(b2[:, -1].sum(), a)
    assert gb[:, -1].abs().sum() > 0 and ga[:, 0].abs().sum() > 0
    assert torch.equal(torch.cat(block((a, b)), 1), torch.cat((a2, b2), 1))  # tuple call


def test_gated_fusion_gates_select_between_both_branches():
    torch.manual_seed(6)
    block = GatedFusion(16).eval()
    with torch.no_grad():  # trained-looking gate weights so the gate varies per token
        block.gate.weight.normal_(0, 0.3)
        block.gate.bias.normal_(0, 0.3)
    a, b = block.example_input(2)
    y_mix = torch.cat(block(a, b), 1)
    _, _, g = block(a, b, return_gates=True)
    g = g.detach()
    assert 0.0 < float(g.min()) and float(g.max()) < 1.0 and float(g.std()) > 0.05

    grads = _grads(block, y_mix.square().sum())
    for prefix in ("ssm_fwd.", "ssm_bwd.", "transformer.", "gate."):
        assert any(_nonzero(v) for n, v in grads.items() if n.startswith(prefix)), prefix

    def forced(bias: float) -> torch.Tensor:
        with torch.no_grad():
            block.gate.weight.zero_()
            block.gate.bias.fill_(bias)
        return torch.cat(block(a, b), 1)

    y_ssm, y_attn = forced(40.0), forced(-40.0)  # gate ~1: the SSM branch; gate ~0: the transformer
    assert rel_err(y_ssm, y_attn) > 1e-2
    assert rel_err(y_mix, y_ssm) > 1e-3 and rel_err(y_mix, y_attn) > 1e-3
    half = forced(0.0)
    assert rel_err(half, 0.5 * (y_ssm + y_attn)) < 1e-5


def test_gated_fusion_rejects_bad_input():
    block = GatedFusion(16)
    with pytest.raises(ValueError, match=r"\[B, L, 16\]"):
        block(torch.randn(2, 5, 8), torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="same batch"):
        block(torch.randn(2, 5, 16), torch.randn(3, 5, 16))
    with pytest.raises(ValueError, match="equal lengths"):
        GatedFusion(16, pairing="interleave")(torch.randn(2, 5, 16), torch.randn(2, 4, 16))
    with pytest.raises(TypeError, match="two streams"):
        block(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="pairing"):
        GatedFusion(16, pairing="zip")


# ----------------------------------------------------------------------------- Gamba


@pytest.mark.parametrize("shape", [(2, 16, 7, 5), (1, 16, 1, 6), (2, 16, 3, 3)])
def test_gamba_cell_and_block_shapes(shape):
    x = torch.randn(shape, requires_grad=True)
    for block in (GambaCell(16), GambaBlock(16), GambaCell(9, n_heads=5)):
        if block.d_model != shape[1]:
            x = torch.randn((shape[0], block.d_model) + shape[2:], requires_grad=True)
        y = block(x)
        assert y.shape == x.shape
        (gx,) = torch.autograd.grad(y.square().sum(), x)
        assert torch.isfinite(gx).all()


def test_gamba_cell_uses_both_halves_globally():
    torch.manual_seed(7)
    cell = GambaCell(16).eval()
    x = torch.randn(1, 16, 6, 7, requires_grad=True)
    y, g = cell(x, return_gates=True)
    assert bool(((g > 0) & (g < 1)).all())
    # The output at the top-left pixel depends on the bottom-right pixel through each half.
    (gx,) = torch.autograd.grad(y[0, :, 0, 0].sum(), x, retain_graph=True)
    far = gx[0, :, -1, -1].abs()
    assert far[: cell.d_ssm].sum() > 0 and far[cell.d_ssm:].sum() > 0
    grads = _grads(cell, y.square().sum())
    for prefix in ("ssm.", "ssm_gate.", "attn.attn.", "attn.registers", "fuse_gate."):
        assert any(_nonzero(v) for n, v in grads.items() if n.startswith(prefix)), prefix
    # Silencing either half changes the output: both reach it through the fusion.
    s, t = cell.branches(x)
    assert rel_err(cell.fuse(torch.zeros_like(s), t), y) > 1e-3
    assert rel_err(cell.fuse(s, torch.zeros_like(t)), y) > 1e-3


def test_gamba_rejects_bad_input():
    with pytest.raises(ValueError, match="C=16"):
        GambaCell(16)(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match=">= 2"):
        GambaCell(1)
    with pytest.raises(ValueError, match="n_heads"):
        GambaCell(16, n_heads=3)
    with pytest.raises(ValueError, match="reduction"):
        GambaBlock(16, reduction=0)


# ----------------------------------------------------------------------------- learnability
#
# Each task's label is a product of two input features (same colour / same symbol), so a
# network whose mixer is linear cannot beat chance: pooled features are then a sum of a function
# of each marked item, and "same" vs "different" is an XOR over those sums.


def _pair_images(n: int, size: int, g: torch.Generator, far: bool):
    """Two marked pixels, colours +-1 in channel 0, markers in channel 1; label: same colour.

    ``far=False``: the second pixel is one of the 8 neighbours of the first (a local task).
    ``far=True``: the pixels sit in opposite quarters of the columns (distance >= size / 2).
    """
    if far:
        rows = torch.randint(0, size, (n, 2), generator=g)
        left = torch.randint(0, max(size // 4, 1), (n,), generator=g)
        right = torch.randint(size - max(size // 4, 1), size, (n,), generator=g)
        swap = torch.rand(n, generator=g) < 0.5
        cols = torch.stack((torch.where(swap, right, left), torch.where(swap, left, right)), 1)
        p1, p2 = torch.stack((rows[:, 0], cols[:, 0]), 1), torch.stack((rows[:, 1], cols[:, 1]), 1)
    else:
        p1 = torch.randint(1, size - 1, (n, 2), generator=g)
        off = torch.randint(-1, 2, (n, 2), generator=g)
        off[(off == 0).all(1), 0] = 1
        p2 = p1 + off
    colour = torch.randint(0, 2, (n, 2), generator=g).float() * 2 - 1
    x = torch.zeros(n, 2, size, size)
    i = torch.arange(n)
    x[i, 0, p1[:, 0], p1[:, 1]] = colour[:, 0]
    x[i, 0, p2[:, 0], p2[:, 1]] = colour[:, 1]
    x[i, 1, p1[:, 0], p1[:, 1]] = 1.0
    x[i, 1, p2[:, 0], p2[:, 1]] = 1.0
    return (x,), (colour[:, 0] == colour[:, 1]).float()


_SYMBOLS = 6


def _matching_streams(n: int, g: torch.Generator, la: int = 6, lb: int = 5):
    """One symbol hidden among blanks in each stream; label: the two symbols are equal."""
    a = torch.full((n, la), _SYMBOLS)
    b = torch.full((n, lb), _SYMBOLS)
    sa = torch.randint(0, _SYMBOLS, (n,), generator=g)
    same = torch.rand(n, generator=g) < 0.5
    sb = torch.where(same, sa, (sa + torch.randint(1, _SYMBOLS, (n,), generator=g)) % _SYMBOLS)
    i = torch.arange(n)
    a[i, torch.randint(0, la, (n,), generator=g)] = sa
    b[i, torch.randint(0, lb, (n,), generator=g)] = sb
    return (a, b), same.float()


class _ImageNet(nn.Module):
    """1x1 stem -> mixer (or nothing: the linear baseline) -> mean pool -> linear logit."""

    def __init__(self, mixer: nn.Module | None, d: int):
        super().__init__()
        self.stem, self.mixer, self.head = nn.Conv2d(2, d, 1), mixer, nn.Linear(d, 1)

    def forward(self, x):
        h = self.stem(x)
        h = self.mixer(h) if self.mixer is not None else h
        return self.head(h.mean((2, 3))).squeeze(-1)


class _StreamNet(nn.Module):
    """Embedding -> fusion (or nothing) -> mean pool per stream -> linear logit."""

    def __init__(self, fusion: nn.Module | None, d: int):
        super().__init__()
        self.embed, self.fusion, self.head = nn.Embedding(_SYMBOLS + 1, d), fusion, nn.Linear(2 * d, 1)

    def forward(self, a, b):
        a, b = self.embed(a), self.embed(b)
        if self.fusion is not None:
            a, b = self.fusion(a, b)
        return self.head(torch.cat((a.mean(1), b.mean(1)), -1)).squeeze(-1)


class _PreNormResidual(nn.Module):
    """x + mixer(BatchNorm(x)): how a cell sits inside a network (GambaBlock does the same)."""

    def __init__(self, mixer: nn.Module, d: int):
        super().__init__()
        self.norm, self.mixer = nn.BatchNorm2d(d), mixer

    def forward(self, x):
        return x + self.mixer(self.norm(x))


def _fit_accuracy(net: nn.Module, task, steps: int, lr: float, batch: int = 32) -> float:
    g = torch.Generator().manual_seed(11)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        inputs, y = task(batch, g)
        loss = F.binary_cross_entropy_with_logits(net(*inputs), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    inputs, y = task(512, g)
    net.eval()
    with torch.no_grad():
        return float(((net(*inputs) > 0).float() == y).float().mean())


_LOCAL = lambda n, g: _pair_images(n, 8, g, far=False)  # noqa: E731
_FAR = lambda n, g: _pair_images(n, 6, g, far=True)  # noqa: E731

_LEARN = {
    # name: (make network, task, steps, lr, batch). HGConv's third-order product starts near
    # zero, so it needs the larger batch to leave the constant-prediction plateau reliably.
    "gbc": (lambda: _ImageNet(GBC(16), 16), _LOCAL, 300, 5e-3, 32),
    "hgconv": (lambda: _ImageNet(HGConv(16), 16), _LOCAL, 300, 3e-3, 64),
    "gamba_block": (lambda: _ImageNet(GambaBlock(16), 16), _FAR, 200, 3e-3, 32),
    "gamba_cell": (lambda: _ImageNet(_PreNormResidual(GambaCell(16), 16), 16), _FAR, 200, 3e-3, 32),
    "gated_fusion": (lambda: _StreamNet(GatedFusion(16), 16), _matching_streams, 200, 3e-3, 32),
}
_BASELINE = {
    "local pixels": (lambda: _ImageNet(None, 16), _LOCAL),
    "distant pixels": (lambda: _ImageNet(None, 16), _FAR),
    "cross-stream match": (lambda: _StreamNet(None, 16), _matching_streams),
}


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread; on a shared 2-core box its spin-waits cost."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(_LEARN))
def test_block_learns_a_task_a_linear_mixer_cannot(name, one_thread):
    make, task, steps, lr, batch = _LEARN[name]
    torch.manual_seed(0)
    assert _fit_accuracy(make(), task, steps, lr, batch) >= 0.9


@pytest.mark.parametrize("task", sorted(_BASELINE))
def test_linear_mixer_cannot_learn_the_tasks(task, one_thread):
    make, fn = _BASELINE[task]
    torch.manual_seed(0)
    assert _fit_accuracy(make(), fn, 300, 1e-2) <= 0.65


# ----------------------------------------------------------------------------- bench sizing


def test_bench_sizes_inputs_in_each_blocks_own_layout():
    """``ssmkit bench blocks`` keeps a block's layout and resizes only its non-channel axes."""
    from ssmkit.bench.blocks import make_input

    sizes = {"batch": 3, "d_model": 16, "length": 10, "image": (4, 6), "volume": (2, 3, 5)}
    a, b = make_input(GatedFusion(16), 16, sizes, "cpu", torch.float32)
    assert a.shape == b.shape == (3, 5, 16)  # two streams share the token budget
    assert make_input(GBC(16), 16, sizes, "cpu", torch.float32).shape == (3, 16, 4, 6)
    assert make_input(HGConv(16, spatial_dims=3), 16, sizes, "cpu", torch.float32).shape == (3, 16, 2, 3, 5)

    class ChannelsLast(nn.Module):
        def example_input(self, batch):
            return torch.randn(batch, 7, 5, 16)

    assert make_input(ChannelsLast(), 16, sizes, "cpu", torch.bfloat16).shape == (3, 4, 6, 16)
