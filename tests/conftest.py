"""Shared test fixtures: seeded RNG per test, few threads (CI has 2 cores), device helpers."""

from __future__ import annotations

import pytest
import torch

# One intra-op thread: test tensors are small, and on a 2-core CI box extra threads mostly
# add synchronisation cost (measured: 17x slower registry tests under load with 2 threads).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts on one intra-op thread again, whatever an earlier test (a bench run with
    --threads, say) left behind."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Each test starts from the same seed, so a failure reproduces; inputs are still fresh per test."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def cuda_device():
    # gpu tests are deselected by default; run on purpose without a GPU, they fail loudly.
    if not torch.cuda.is_available():
        raise RuntimeError("this test is marked gpu and needs a CUDA device; run it on a GPU machine")
    return torch.device("cuda")


@pytest.fixture
def no_tf32():
    """fp32 convolutions and matmuls in full precision on CUDA for one test, restored after it.
    (Plain assignment: torch.backends.cuda.matmul resolves allow_tf32 dynamically, so
    monkeypatch.setattr cannot undo it.)"""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |a - e| / max(max |e|, tiny): the relative-error measure used across the op tests."""
    a, e = actual.detach().double(), expected.detach().double()
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-12)) if e.numel() else 0.0


def assert_grads_close(actual, expected, names, tol: float) -> None:
    """Every gradient in ``actual`` matches ``expected`` within ``tol`` (``rel_err``).

    Finiteness is checked first and named: a NaN would otherwise only show up as a failed
    ``nan < tol`` comparison that does not say which input went bad.
    """
    actual, expected, names = list(actual), list(expected), list(names)
    assert len(actual) == len(expected) == len(names), "one name per gradient pair"
    for a, e, n in zip(actual, expected, names):
        assert a is not None, f"no gradient reached {n}"
        a_r = torch.view_as_real(a) if a.is_complex() else a
        e_r = torch.view_as_real(e) if e.is_complex() else e
        assert torch.isfinite(e_r).all(), f"the reference gradient of {n} is not finite"
        bad = (~torch.isfinite(a_r)).sum().item()
        assert bad == 0, f"the gradient of {n} has {bad} non-finite values"
        err = rel_err(a_r, e_r)
        assert err < tol, f"the gradient of {n} differs: rel err {err:.3g} >= {tol:g}"
