"""Attention-like and SSM blocks: GatedAttention, GLA, Mega, S4D, LRU and BiGS.

Each fast path inside a layer is checked against its reference (outputs and gradients, odd
sizes, float32 and bf16), and each block must learn a tiny task that a linear layer in its place
cannot: associative recall for the attention-like blocks, a delayed copy for the SSMs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.layers.bigs import BiGS
from ssmkit.layers.gated_attention import GatedAttention
from ssmkit.layers.gla import GLA
from ssmkit.layers.lru import LRU, lru_recurrence, lru_scan
from ssmkit.layers.mega import MegaLayer, relative_position_bucket
from ssmkit.layers.s4d import S4D, S4DKernel, fft_causal_conv, s4d_recurrence
from ssmkit.registry import create_block, list_blocks
from tests.conftest import assert_grads_close, rel_err

MINE = ["gated_attention", "gla", "mega", "s4d", "lru", "bigs"]


def _param_grads(module: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in module.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, params, allow_unused=True))


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", MINE)
def test_registered_block_builds_runs_and_is_deterministic(name):
    assert name in list_blocks()
    torch.manual_seed(1)
    block = create_block(name, d_model=16)
    assert getattr(block, "input_kind", "seq") == "seq"
    x = torch.randn(2, 11, 16, requires_grad=True)
    for mode in (True, False):
        block.train(mode)
        y = block(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        (gx,) = torch.autograd.grad(y.square().mean(), x)
        assert torch.isfinite(gx).all()
    torch.manual_seed(1)
    again = create_block(name, d_model=16).eval()
    assert torch.equal(again(x), block(x))


@pytest.mark.parametrize("name", MINE)
def test_block_runs_under_bf16_autocast(name):
    # apps train with bf16 autocast: complex (LRU) and FFT (S4D, BiGS, Mega) parts must opt out
    block = create_block(name, d_model=16)
    x = torch.randn(2, 19, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    (g,) = torch.autograd.grad(y.float().square().mean(), x)
    assert torch.isfinite(g).all()
    assert rel_err(y.float(), block(x)) < 3e-2


# ----------------------------------------------------------------------------- GatedAttention


def _manual_attention(m: GatedAttention, x, causal=False, allowed=None, gate=None):
    """softmax(Q K^T / sqrt(d) + mask) V with the module's own projections."""
    B, L, _ = x.shape
    H, Dh = m.num_heads, m.head_dim
    inner = H * Dh
    q = (x @ m.q_proj.weight[:inner].T + (m.q_proj.bias[:inner] if m.q_proj.bias is not None else 0))
    k, v = m.k_proj(x), m.v_proj(x)
    q, k, v = (t.view(B, L, H, Dh).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    if causal:
        scores = scores.masked_fill(~torch.ones(L, L, dtype=torch.bool).tril(), float("-inf"))
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    o = scores.softmax(-1) @ v
    if gate is not None:
        o = o * gate
    return m.o_proj(o.transpose(1, 2).reshape(B, L, inner))


@pytest.mark.parametrize("gate", ["headwise", "elementwise"])
@pytest.mark.parametrize("causal", [False, True])
def test_gate_fixed_at_one_equals_plain_attention(gate, causal):
    m = GatedAttention(d_model=24, num_heads=3, gate=gate, causal=causal, bias=True)
    inner = m.num_heads * m.head_dim
    with torch.no_grad():
        m.q_proj.weight[inner:] = 0
        m.q_proj.bias[inner:] = 50.0  # sigmoid(50) == 1.0 exactly in float32
    x = torch.randn(2, 13, 24)
    assert rel_err(m(x), _manual_attention(m, x, causal=causal)) < 1e-5
    plain = GatedAttention(d_model=24, num_heads=3, gate="none", causal=causal, bias=True)
    with torch.no_grad():
        for name in ("k_proj", "v_proj", "o_proj"):
            getattr(plain, name).load_state_dict(getattr(m, name).state_dict())
        plain.q_proj.weight.copy_(m.q_proj.weight[:inner])
        plain.q_proj.bias.copy_(m.q_proj.bias[:inner])
    assert rel_err(plain(x), m(x)) < 1e-6


def test_headwise_gate_is_sigmoid_of_query_side_projection():
    m = GatedAttention(d_model=16, num_heads=2, gate="headwise")
    x = torch.randn(2, 9, 16)
    inner = m.num_heads * m.head_dim
    gate = torch.sigmoid(x @ m.q_proj.weight[inner:].T).transpose(1, 2)[..., None]  # [B, H, L, 1]
    assert rel_err(m(x), _manual_attention(m, x, gate=gate)) < 1e-5


def test_masks_match_manual_and_empty_rows_are_zero():
    m = GatedAttention(d_model=16, num_heads=2, gate="elementwise")
    x = torch.randn(2, 7, 16, requires_grad=True)
    inner = m.num_heads * m.head_dim
    gate = torch.sigmoid(x @ m.q_proj.weight[inner:].T).view(2, 7, 2, 8).transpose(1, 2)
    key_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    attn_mask = torch.rand(7, 7) > 0.3
    attn_mask[:, 0] = True  # every row keeps key 0, so the manual softmax stays finite
    allowed = attn_mask[None, None] & key_mask[:, None, None, :]
    out = m(x, attn_mask=attn_mask, key_mask=key_mask)
    assert rel_err(out, _manual_attention(m, x, allowed=allowed, gate=gate)) < 1e-5
    # a float additive mask of -inf is the same as the boolean one
    float_mask = torch.zeros(7, 7).masked_fill(~attn_mask, float("-inf"))
    assert rel_err(m(x, attn_mask=float_mask, key_mask=key_mask), out) < 1e-6
    # a sequence with no valid key: zero attention output and finite gradients
    empty = torch.zeros(2, 7, dtype=torch.bool)
    empty[1] = True
    y = m(x, key_mask=empty)
    assert torch.allclose(y[0], torch.zeros_like(y[0]))  # o_proj has no bias
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(g).all()


def test_cross_attention_and_bf16():
    m = GatedAttention(d_model=16, num_heads=4)
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 9, 16)
    assert m(x, context=ctx).shape == (2, 5, 16)
    y32 = m(x)
    y16 = m.to(torch.bfloat16)(x.bfloat16())
    assert y16.dtype == torch.bfloat16 and rel_err(y16, y32) < 3e-2


def test_gated_attention_rejects_bad_input():
    with pytest.raises(ValueError, match="gate must be one of"):
        GatedAttention(16, gate="sigmoid")
    with pytest.raises(ValueError, match="must divide d_model"):
        GatedAttention(16, num_heads=3)
    m = GatedAttention(16, causal=True)
    with pytest.raises(ValueError, match=r"x \[B, L, 16\]"):
        m(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="self-attention"):
        m(torch.randn(2, 5, 16), context=torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="key_mask"):
        GatedAttention(16)(torch.randn(2, 5, 16), key_mask=torch.ones(2, 4, dtype=torch.bool))


# ----------------------------------------------------------------------------- GLA layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gla_layer_chunked_matches_reference(dtype):
    torch.manual_seed(3)
    fast = GLA(d_model=24, num_heads=3, backend="chunked", chunk_size=16).to(dtype)
    ref = GLA(d_model=24, num_heads=3, backend="reference").to(dtype)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 37, 24).to(dtype)
    h0 = torch.randn(2, 3, 4, 8)
    y_f, s_f = fast(x, initial_state=h0, output_final_state=True)
    y_r, s_r = ref(x, initial_state=h0, output_final_state=True)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert rel_err(y_f, y_r) < tol and rel_err(s_f, s_r) < tol
    w = torch.randn_like(y_f, dtype=torch.float32)
    for a, e in zip(_param_grads(fast, (y_f.float() * w).sum()), _param_grads(ref, (y_r.float() * w).sum())):
        assert rel_err(a, e) < tol * 3


def test_gla_layer_varlen_and_bad_config():
    m = GLA(d_model=16, num_heads=2)
    x = torch.randn(1, 20, 16)
    cu = torch.tensor([0, 7, 20])
    y = m(x, cu_seqlens=cu)
    assert rel_err(y[:, 7:], m(x[:, 7:])) < 1e-5 and rel_err(y[:, :7], m(x[:, :7])) < 1e-5
    with pytest.raises(ValueError, match="whole multiple of num_heads"):
        GLA(d_model=16, num_heads=3)
    with pytest.raises(ValueError, match="backend"):
        GLA(d_model=16, backend="triton")


# ----------------------------------------------------------------------------- Mega


def test_mega_chunked_with_one_chunk_equals_full_and_ema_fast_path(monkeypatch):
    torch.manual_seed(4)
    full = MegaLayer(d_model=16, chunk_size=None)
    chunked = MegaLayer(d_model=16, chunk_size=64)
    chunked.load_state_dict(full.state_dict())
    x = torch.randn(2, 29, 16)
    assert rel_err(chunked(x), full(x)) < 1e-6
    # small chunks really restrict attention (and padded keys of the last chunk stay masked)
    small = MegaLayer(d_model=16, chunk_size=8)
    small.load_state_dict(full.state_dict())
    assert rel_err(small(x), full(x)) > 1e-3
    assert rel_err(small(x[:, :24])[:, :24], small(x)[:, :24]) < 1e-5
    # the FFT EMA inside the layer against the recurrence: outputs and every parameter gradient
    y_fft = full(x)
    g_fft = _param_grads(full, y_fft.square().sum())
    monkeypatch.setenv("SSMKIT_BACKEND", "reference")
    y_ref = full(x)
    g_ref = _param_grads(full, y_ref.square().sum())
    assert rel_err(y_fft, y_ref) < 1e-5
    assert all(rel_err(a, e) < 1e-4 for a, e in zip(g_fft, g_ref))


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_mega_causal_output_ignores_the_future(chunk_size):
    m = MegaLayer(d_model=16, causal=True, chunk_size=chunk_size)
    x = torch.randn(1, 17, 16)
    x2 = x.clone()
    x2[:, 11:] += torch.randn(1, 6, 16)
    y, y2 = m(x), m(x2)
    assert (y[:, :11] - y2[:, :11]).abs().max() < 1e-5  # FFT round-off only
    assert (y[:, 11:] - y2[:, 11:]).abs().max() > 1e-3


def test_mega_bidirectional_sees_the_future_and_relative_buckets():
    m = MegaLayer(d_model=16, bidirectional=True, chunk_size=4)
    x = torch.randn(1, 12, 16)
    x2 = x.clone()
    x2[:, -1] += torch.randn(16)  # not a constant shift: the pre-norm would remove that
    assert (m(x)[:, 0] - m(x2)[:, 0]).abs().max() > 1e-4  # the backward EMA carries it across chunks
    rel = torch.arange(-300, 301)
    for bidir in (True, False):
        b = relative_position_bucket(rel, bidir, 32, 128)
        assert b.min() >= 0 and b.max() < 32
    b = relative_position_bucket(rel, True, 32, 128)
    assert (b[rel < 0] < 16).all() and (b[rel > 0] >= 16).all()
    with pytest.raises(ValueError, match="bidirectional"):
        MegaLayer(16, causal=True, bidirectional=True)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("L,S", [(7, 7), (5, 9), (9, 4), (1, 1)])
def test_relative_bias_is_the_bucket_lookup_of_every_pair(L, S, bidirectional):
    # The Toeplitz view must equal indexing the weight with each (q, k) pair's bucket, values and
    # gradients (the gradient is where the view's unfold replaces a per-pair index_put).
    from ssmkit.layers.mega import T5RelativeBias

    rb = T5RelativeBias(num_buckets=8, max_distance=6, bidirectional=bidirectional)
    with torch.no_grad():
        rb.weight.copy_(torch.randn(8))
    pairs = torch.arange(S)[None, :] - torch.arange(L)[:, None]
    want_w = rb.weight.detach().clone().requires_grad_(True)
    want = want_w[relative_position_bucket(pairs, bidirectional, 8, 6)]
    got = rb(L, S)
    assert got.shape == (L, S)
    assert torch.equal(got, want)
    g = torch.randn(L, S)
    (gw,) = torch.autograd.grad(got, rb.weight, g)
    (want_gw,) = torch.autograd.grad(want, want_w, g)
    assert torch.allclose(gw, want_gw, atol=1e-6)


# ----------------------------------------------------------------------------- S4D, LRU, BiGS


@pytest.mark.parametrize("init", ["lin", "real"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_s4d_fft_kernel_matches_recurrence(init, dtype):
    kern = S4DKernel(5, d_state=8, init=init, dt_max=0.5)
    u = torch.randn(2, 5, 63).to(dtype)
    y_fft = fft_causal_conv(u, kern(63))
    y_rec = s4d_recurrence(u, kern.log_dt, kern.log_A_real, kern.A_imag, kern.C)
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    assert rel_err(y_fft, y_rec) < tol
    w = torch.randn_like(y_rec)
    params = [p for p in kern.parameters() if p.requires_grad]
    g_fft = torch.autograd.grad((y_fft * w).sum(), params)
    g_rec = torch.autograd.grad((y_rec * w).sum(), params)
    assert all(rel_err(a, e) < tol for a, e in zip(g_fft, g_rec))


@pytest.mark.parametrize("magnitude", [1e-3, 0.088, 0.9999])
def test_s4d_long_kernel_stays_finite(magnitude):
    # |exp(dt A)| ** l underflows float32 at long L for small magnitudes; the Vandermonde kernel,
    # the FFT convolution and every parameter gradient must stay finite and match the float64
    # recurrence. The magnitude is set through dt: |exp(dt A)| = exp(-dt exp(log_A_real)).
    import math

    L = 1000
    kern = S4DKernel(3, d_state=4, init="lin")
    with torch.no_grad():
        kern.log_A_real.fill_(math.log(0.5))
        kern.log_dt.fill_(math.log(-math.log(magnitude) / 0.5))
    u = torch.randn(2, 3, L)
    w = torch.randn(2, 3, L)
    params = [p for p in kern.parameters() if p.requires_grad]
    y = fft_causal_conv(u, kern(L))
    g = torch.autograd.grad((y * w).sum(), params)
    p64 = [p.detach().double().requires_grad_() for p in (kern.log_dt, kern.log_A_real, kern.A_imag, kern.C)]
    y64 = s4d_recurrence(u.double(), *p64)
    g64 = torch.autograd.grad((y64 * w.double()).sum(), p64)
    assert torch.isfinite(y).all(), "S4D output is not finite"
    assert rel_err(y, y64) < 1e-3
    names = {id(kern.log_dt): "log_dt", id(kern.log_A_real): "log_A_real", id(kern.A_imag): "A_imag", id(kern.C): "C"}
    by_name = dict(zip(("log_dt", "log_A_real", "A_imag", "C"), g64))
    assert_grads_close(g, [by_name[names[id(p)]] for p in params], [names[id(p)] for p in params], 1e-3)


def test_s4d_layer_causal_and_bidirectional():
    x = torch.randn(1, 20, 16)
    x2 = x.clone()
    x2[:, 15:] += torch.randn(5, 16)
    causal, bidir = S4D(16), S4D(16, bidirectional=True)
    assert (causal(x)[:, :15] - causal(x2)[:, :15]).abs().max() < 1e-5
    assert (bidir(x)[:, :15] - bidir(x2)[:, :15]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="even"):
        S4D(16, d_state=7)


@pytest.mark.parametrize("L", [1, 2, 63, 130])
def test_lru_scan_matches_recurrence(L):
    lam = torch.polar(torch.rand(6) * 0.999, torch.rand(6) * 6.28).requires_grad_()
    b = torch.randn(3, L, 6, dtype=torch.complex64, requires_grad=True)
    h0 = torch.randn(3, 6, dtype=torch.complex64, requires_grad=True)
    x_s, x_r = lru_scan(lam, b, h0), lru_recurrence(lam, b, h0)
    assert rel_err(torch.view_as_real(x_s), torch.view_as_real(x_r)) < 1e-5
    w = torch.randn(3, L, 6, dtype=torch.complex64)
    g_s = torch.autograd.grad((x_s * w).real.sum(), (lam, b, h0))
    g_r = torch.autograd.grad((x_r * w).real.sum(), (lam, b, h0))
    assert_grads_close(g_s, g_r, ("lam", "b", "h0"), 1e-4)


@pytest.mark.parametrize("L", [130, 1000])
@pytest.mark.parametrize("magnitude", [1e-3, 0.088, 0.5, 0.9999])
def test_lru_scan_long_sequences_stay_finite(L, magnitude):
    # |lam| ** L underflows float32 for small |lam| at long L; the scan and every gradient
    # must stay finite and exact (the float64 recurrence is the oracle).
    lam = torch.polar(torch.full((4,), magnitude), torch.linspace(0.1, 3.0, 4)).requires_grad_()
    b = torch.randn(2, L, 4, dtype=torch.complex64, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=torch.complex64, requires_grad=True)
    w = torch.randn(2, L, 4, dtype=torch.complex64)
    x_s = lru_scan(lam, b, h0)
    g_s = torch.autograd.grad((x_s * w).real.sum(), (lam, b, h0))
    leaves64 = [t.detach().to(torch.complex128).requires_grad_() for t in (lam, b, h0)]
    x_r = lru_recurrence(*leaves64)
    g_r = torch.autograd.grad((x_r * w.to(torch.complex128)).real.sum(), leaves64)
    assert torch.isfinite(torch.view_as_real(x_s)).all(), "lru_scan output is not finite"
    assert rel_err(torch.view_as_real(x_s), torch.view_as_real(x_r)) < 1e-4
    assert_grads_close(g_s, g_r, ("lam", "b", "h0"), 1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lru_layer_streams_and_ring_init(dtype):
    m = LRU(d_model=16, d_state=24, r_min=0.5, r_max=0.9)
    mag = m.lam().abs()
    assert (mag >= 0.5 - 1e-5).all() and (mag <= 0.9 + 1e-5).all()
    assert torch.allclose(torch.exp(m.gamma_log[0]), torch.sqrt(1 - mag ** 2), atol=1e-6)
    m = m.to(dtype)
    x = torch.randn(2, 33, 16).to(dtype)
    y = m(x)
    assert y.dtype == dtype
    # running the second half from the first half's state equals the full run
    u = x.float()
    bu = torch.complex(u @ m.B[0, ..., 0].float().T, u @ m.B[0, ..., 1].float().T) * m.gamma_log[0].float().exp()
    state = lru_scan(m.lam(), bu[:, :20])[:, -1]
    assert rel_err(m(x[:, 20:], initial_state=state), y[:, 20:]) < (1e-5 if dtype == torch.float32 else 2e-2)


def test_bigs_is_bidirectional_and_uses_both_ssms():
    m = BiGS(d_model=16)
    x = torch.randn(1, 20, 16, requires_grad=True)
    y = m(x)
    (g_first,) = torch.autograd.grad(y[0, 0].sum(), x, retain_graph=True)
    (g_last,) = torch.autograd.grad(y[0, -1].sum(), x)
    assert g_first[0, -1].abs().sum() > 0 and g_last[0, 0].abs().sum() > 0
    grads = _param_grads(m, m(x).square().sum())
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


# ----------------------------------------------------------------------------- learnability


class _Probe(nn.Module):
    """Embedding -> x + mixer(x) -> head: the smallest model around a mixer."""

    def __init__(self, mixer: nn.Module, d_in: int, d: int, n_out: int):
        super().__init__()
        self.emb, self.mixer, self.head = nn.Linear(d_in, d), mixer, nn.Linear(d, n_out)

    def forward(self, x):
        h = self.emb(x)
        return self.head(h + self.mixer(h))


def _recall_batch(n, gen, pairs=6, n_keys=8, n_vals=8):
    """Associative recall: ``pairs`` (key, value) tokens, then a query key; answer its value."""
    keys = torch.argsort(torch.rand(n, n_keys, generator=gen), dim=1)[:, :pairs]
    vals = torch.randint(0, n_vals, (n, pairs), generator=gen)
    pick = torch.randint(0, pairs, (n,), generator=gen)
    x = torch.zeros(n, pairs + 1, n_keys + n_vals + 1)
    x.scatter_(2, keys[..., None], 1.0)
    x[:, :pairs].scatter_(2, (n_keys + vals)[..., None], 1.0)
    x[torch.arange(n), pairs, keys.gather(1, pick[:, None])[:, 0]] = 1.0
    x[:, pairs, -1] = 1.0  # query marker
    return x, vals.gather(1, pick[:, None])[:, 0]


def _fit_recall(mixer: nn.Module, d=32, steps=300, lr=3e-3) -> float:
    gen = torch.Generator().manual_seed(0)
    net = _Probe(mixer, 17, d, 8)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        x, y = _recall_batch(64, gen)
        loss = F.cross_entropy(net(x)[:, -1], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = _recall_batch(512, gen)
    with torch.no_grad():
        return (net(x)[:, -1].argmax(-1) == y).float().mean().item()


def _fit_delayed_copy(mixer: nn.Module, d=32, steps=300, lr=1e-2, L=24, delay=6, vocab=6) -> float:
    """Output at step t the token seen at t - delay (scored where t >= delay)."""
    gen = torch.Generator().manual_seed(0)
    net = _Probe(mixer, vocab, d, vocab)
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def batch(n):
        tok = torch.randint(0, vocab, (n, L), generator=gen)
        return F.one_hot(tok, vocab).float(), tok

    for _ in range(steps):
        x, tok = batch(32)
        loss = F.cross_entropy(net(x)[:, delay:].reshape(-1, vocab), tok[:, :-delay].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, tok = batch(256)
    with torch.no_grad():
        return (net(x)[:, delay:].argmax(-1) == tok[:, :-delay]).float().mean().item()


def test_linear_layer_cannot_do_recall_or_delayed_copy():
    # the baselines every block below is measured against: chance is 1/8 and 1/6
    assert _fit_recall(nn.Linear(32, 32), steps=120) < 0.3
    assert _fit_delayed_copy(nn.Linear(32, 32), steps=100) < 0.3


def test_gated_attention_learns_associative_recall():
    assert _fit_recall(GatedAttention(d_model=32, num_heads=2)) > 0.95


def test_lru_learns_delayed_copy():
    assert _fit_delayed_copy(LRU(d_model=32), steps=200) > 0.95


@pytest.mark.slow
def test_gla_learns_associative_recall():
    assert _fit_recall(GLA(d_model=32, num_heads=2), steps=250, lr=1e-2) > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_mega_learns_associative_recall(chunk_size):
    if chunk_size is None:
        assert _fit_recall(MegaLayer(d_model=32)) > 0.9
    else:
        # chunk_size=4 < sequence length 7: the query's chunk holds only 2 of the 6 pairs, so
        # in-chunk attention alone tops out at 2/6 + 4/6 * 1/8 = 0.42 and the rest must come
        # through the EMA across the chunk boundary (measured 0.48 here). The bound is kept a
        # little under 0.42 so that a different CPU's rounding cannot make the test flaky; it
        # is still three times chance (1/8), where the linear layer stays.
        acc = _fit_recall(MegaLayer(d_model=32, chunk_size=chunk_size, ema_dim=16), steps=600)
        assert acc > 0.38


@pytest.mark.parametrize("block", ["s4d", pytest.param("bigs", marks=pytest.mark.slow)])
def test_ssm_learns_delayed_copy(block):
    assert _fit_delayed_copy(create_block(block, d_model=32), steps=300) > 0.85


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_paths_match_cpu_references(cuda_device):
    # GLA layer: "auto" on CUDA is fla when installed (else chunked) against the chunked CPU form
    torch.manual_seed(5)
    layer = GLA(d_model=256, num_heads=4)
    x = torch.randn(2, 300, 256)
    y_cpu = layer(x)
    y_gpu = layer.to(cuda_device)(x.to(cuda_device))
    assert rel_err(y_gpu.cpu(), y_cpu) < 5e-3  # fla runs its matmuls in tf32
    # GatedAttention on SDPA's CUDA kernels (causal flash path) against the CPU math path
    attn = GatedAttention(d_model=64, num_heads=4, causal=True)
    xa = torch.randn(2, 77, 64)
    y_ref = attn(xa)
    y16 = attn.to(cuda_device, torch.bfloat16)(xa.to(cuda_device, torch.bfloat16))
    assert rel_err(y16.float().cpu(), y_ref) < 3e-2
    # Mega (EMA through cuFFT) and BiGS
    for block in (MegaLayer(d_model=32, chunk_size=16), BiGS(d_model=32), S4D(d_model=32), LRU(d_model=32)):
        xb = torch.randn(2, 50, 32)
        y_ref = block(xb)
        assert rel_err(block.to(cuda_device)(xb.to(cuda_device)).cpu(), y_ref) < 1e-3
