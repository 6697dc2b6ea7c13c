"""MAAT, its baselines and the minimax losses: shapes, gradients, block sparsity, stop-gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssmkit.registry import create_model, list_models
from ssmkit_apps.anomaly.forest import WindowIsolationForest
from ssmkit_apps.anomaly.losses import minimax_losses
from ssmkit_apps.anomaly.model import MAAT, AnomalyAttention, block_sparse_mask

TINY = dict(n_channels=3, window=12, d_model=16, n_heads=2, n_layers=1, d_ff=16, mamba_layers=1, d_state=4)
NEURAL = ["maat", "anomaly_transformer", "mamba_recon"]


def test_models_are_registered():
    assert set(NEURAL + ["isolation_forest"]) <= set(list_models())


@pytest.mark.parametrize("name", NEURAL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_backward_and_score(name, dtype):
    kw = dict(TINY)
    if name == "mamba_recon":
        kw = {k: kw[k] for k in ("n_channels", "window", "d_model", "mamba_layers", "d_state")}
    model = create_model(name, **kw)
    x = model.example_input(batch=2)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = model(x)
        a, b, logs = minimax_losses(out, x, k=3.0)
    assert out["recon"].shape == (2, 12, 3)
    assert torch.isfinite(a) and torch.isfinite(b) and torch.isfinite(logs["rec_loss"])
    (a + b).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        s = model.score(x)
    assert s.shape == (2, 12) and (s >= 0).all()
    with pytest.raises(ValueError, match="4 channels, the model was built for 3"):
        model(torch.zeros(1, 12, 4))


def test_anomaly_transformer_is_maat_without_mamba():
    at = create_model("anomaly_transformer", **TINY)
    assert isinstance(at, MAAT) and at.fusion is None and len(at.mamba) == 0
    maat = create_model("maat", **TINY)
    assert maat.fusion is not None and len(maat.mamba) == 1


def test_prior_and_series_are_distributions():
    torch.manual_seed(1)
    attn = AnomalyAttention(16, 2)
    _, series, prior = attn(torch.randn(2, 9, 16))
    torch.testing.assert_close(series.sum(-1), torch.ones(2, 2, 9))
    torch.testing.assert_close(prior.sum(-1), torch.ones(2, 2, 9))
    # the Gaussian prior peaks on the diagonal
    assert (prior.argmax(-1) == torch.arange(9)).all()


def test_block_sparse_mask_pattern():
    m = block_sparse_mask(6, block=2, reach=0)
    expect = torch.zeros(6, 6, dtype=torch.bool)
    for b in range(3):
        expect[2 * b : 2 * b + 2, 2 * b : 2 * b + 2] = True
    assert torch.equal(m, expect)
    g = block_sparse_mask(6, block=2, reach=0, n_global=1)
    assert g[0].all() and g[:, 0].all() and not g[1, 4]
    assert block_sparse_mask(9, block=3, reach=1)[0].tolist() == [True] * 6 + [False] * 3


def test_block_sparse_attention_masks_blocks_and_changes_the_pattern():
    torch.manual_seed(0)
    dense = AnomalyAttention(16, 2)
    sparse = AnomalyAttention(16, 2, sparse_block=4, sparse_reach=0)
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(1, 12, 16)
    _, s_dense, _ = dense(x)
    out, s_sparse, p_sparse = sparse(x)
    allowed = block_sparse_mask(12, 4, 0)
    assert (s_dense[..., ~allowed] > 0).all()  # dense attends everywhere
    assert (s_sparse[..., ~allowed] == 0).all() and (p_sparse[..., ~allowed] == 0).all()
    torch.testing.assert_close(s_sparse.sum(-1), torch.ones(1, 2, 12))
    # changing a token in the last block cannot move the outputs of the first block
    x2 = x.clone()
    x2[:, 10] += 5.0
    out2, _, _ = sparse(x2)
    torch.testing.assert_close(out2[:, :4], out[:, :4])
    assert not torch.allclose(out2[:, 8:], out[:, 8:])
    d1, _, _ = dense(x)
    d2, _, _ = dense(x2)
    assert not torch.allclose(d2[:, :4], d1[:, :4])


def test_minimax_stop_gradients():
    torch.manual_seed(0)
    model = create_model("anomaly_transformer", **TINY)
    x = model.example_input(2)
    attn = model.layers[0].attn

    def grads(loss):
        model.zero_grad()
        loss.backward(retain_graph=True)
        return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}

    out = model(x)
    series_phase, prior_phase, _ = minimax_losses(out, x, k=3.0)
    rec = torch.nn.functional.mse_loss(out["recon"], x)
    g_series, g_prior, g_rec = grads(series_phase), grads(prior_phase), grads(rec)
    # series phase: the prior (sigma) gets no gradient; prior phase: the series side (q, k)
    # gets only the reconstruction gradient
    assert torch.count_nonzero(g_series["layers.0.attn.sigma.weight"]) == 0
    assert torch.count_nonzero(g_prior["layers.0.attn.sigma.weight"]) > 0
    torch.testing.assert_close(g_prior["layers.0.attn.qkv.weight"], g_rec["layers.0.attn.qkv.weight"])
    assert not torch.allclose(g_series["layers.0.attn.qkv.weight"], g_rec["layers.0.attn.qkv.weight"])
    assert attn.sigma.weight.shape[0] == 2


def test_isolation_forest_tensor_port_matches_sklearn():
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(0)
    wins = rng.normal(size=(300, 5, 3)).astype(np.float32)
    ours = WindowIsolationForest(n_channels=3, window=5, n_estimators=20, max_samples=128, seed=3).fit(wins)
    ref = IsolationForest(n_estimators=20, max_samples=128, random_state=3).fit(wins.reshape(300, -1))
    test = (rng.normal(size=(50, 5, 3)) * rng.uniform(0.5, 3, size=(50, 1, 1))).astype(np.float32)
    got = ours.score(torch.from_numpy(test))
    assert got.shape == (50, 5) and torch.equal(got[:, 0], got[:, 4])
    np.testing.assert_allclose(got[:, 0].numpy(), -ref.score_samples(test.reshape(50, -1)), rtol=1e-6)
    # safetensors-style round trip into a fresh, unfitted model
    fresh = WindowIsolationForest(n_channels=3, window=5, n_estimators=20, max_samples=128)
    assert not fresh.fitted
    fresh.load_state_dict(ours.state_dict())
    torch.testing.assert_close(fresh.score(torch.from_numpy(test)), got)
    with pytest.raises(ValueError, match="not fitted"):
        WindowIsolationForest(n_channels=3, window=5).score(torch.from_numpy(test))


@pytest.mark.parametrize("name", ["maat", "mamba_recon"])
def test_instance_norm_makes_scores_level_invariant(name):
    from ssmkit.registry import create_model

    torch.manual_seed(0)
    kw = dict(n_channels=3, window=16, d_model=16, mamba_layers=1, d_state=4, score_channels="max")
    if name == "maat":
        kw.update(n_heads=2, n_layers=1, d_ff=16, forecast=True, score_assoc=False, score_forecast=1.0)
    x = torch.randn(2, 16, 3)
    shift = torch.tensor([5.0, -3.0, 40.0])  # a level the training data never reached
    model = create_model(name, instance_norm="mean", **kw).eval()
    torch.testing.assert_close(model.score(x + shift), model.score(x), rtol=1e-4, atol=1e-4)
    plain = create_model(name, instance_norm="none", **kw).eval()
    assert not torch.allclose(plain.score(x + shift), plain.score(x), rtol=1e-2)
    with pytest.raises(ValueError, match="instance_norm='off'"):
        create_model(name, instance_norm="off", **kw)
