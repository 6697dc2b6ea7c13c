"""The simple detectors: residuals by hand, the matrix profile against stumpy's committed
output, stream == batch, and each one through the same train -> evaluate commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssmkit.engine import commands
from ssmkit.registry import create_model, list_models
from ssmkit_apps.anomaly.app import SIMPLE_MODELS, AnomalyApp
from ssmkit_apps.anomaly.detectors import poly_weights
from ssmkit_apps.anomaly.scoring import StreamScorer, score_series

FIXTURES = Path(__file__).parent / "fixtures"


def _fit(name: str, series: np.ndarray, **kw):
    model = create_model(name, n_channels=series.shape[1], **kw)
    return model.fit_series(series)


def test_every_simple_detector_is_registered_and_scores_windows():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 2)).astype(np.float32)
    for name in SIMPLE_MODELS:
        assert name in list_models()
        model = _fit(name, train, window=16)
        s = model.score(torch.from_numpy(train[:64]).unfold(0, 16, 16).transpose(1, 2))
        assert s.shape == (4, 16) and torch.isfinite(s).all(), name
    with pytest.raises(ValueError, match="not fitted"):
        create_model("rolling_median", n_channels=1, window=8).score(torch.zeros(1, 8, 1))


def test_residuals_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 10.0, 5.0])[None, :, None]  # [1, 5, 1]
    med = create_model("rolling_median", n_channels=1, window=4)
    # past of step 3 = [1, 2, 3] -> median 2 -> residual 8; step 4: past [2, 3, 10] -> 3 -> 2;
    # step 1: past [1] -> 1; step 2: [1, 2] -> lower median 1 -> 2; step 0: no past -> 0
    np.testing.assert_allclose(med.residuals(x)[0, :, 0].numpy(), [0, 1, 4, 64, 4])
    diff = create_model("first_difference", n_channels=1, window=4)
    np.testing.assert_allclose(diff.residuals(x)[0, :, 0].numpy(), [0, 1, 1, 49, 25])
    z = create_model("zscore", n_channels=1, window=4)
    np.testing.assert_allclose(z.residuals(x)[0, :, 0].numpy(), (x**2)[0, :, 0].numpy())


def test_poly_extrapolates_a_cubic_exactly():
    w = poly_weights(10, 3)
    t = np.arange(-10, 1, dtype=np.float64)
    y = 0.5 * t**3 - t**2 + 2 * t - 4
    assert float(w.double() @ torch.from_numpy(y[:-1])) == pytest.approx(y[-1], abs=1e-3)
    with pytest.raises(ValueError, match="poly_degree=5 needs more than 5 past steps"):
        poly_weights(5, 5)


def test_matrix_profile_matches_stumpy():
    ref = json.loads((FIXTURES / "mp_reference.json").read_text())
    m = ref["m"]
    train = np.array(ref["train"], dtype=np.float32)[:, None]
    test = torch.tensor(ref["test"], dtype=torch.float32)
    mp = _fit("matrix_profile", train, window=m, reference_rows=400)
    got = mp.distances(test.unfold(0, m, 1)[:, :, None])[:, 0].numpy()
    np.testing.assert_allclose(got, ref["profile"], atol=1e-4)
    assert "stumpy" in ref["reference"]


def test_sub_pca_scores_off_subspace_windows():
    rng = np.random.default_rng(1)
    t = np.arange(600)
    train = (np.sin(2 * np.pi * t / 20) + 0.01 * rng.normal(size=600)).astype(np.float32)[:, None]
    model = _fit("sub_pca", train, window=20, pca_variance=0.99)
    normal = torch.from_numpy(train[100:120])[None]
    odd = normal.clone()
    odd[0, 7, 0] += 1.0
    assert float(model.score(odd)[0, 0]) > 50 * float(model.score(normal)[0, 0])


@pytest.mark.parametrize("name", ["rolling_median", "poly", "matrix_profile"])
def test_stream_equals_batch(name):
    rng = np.random.default_rng(2)
    train = rng.normal(size=(200, 2)).astype(np.float32)
    model = _fit(name, train, window=12)
    model.set_scaler(np.zeros(2), np.ones(2))
    rows = rng.normal(size=(70, 2)).astype(np.float32)
    lag = 6 if name == "matrix_profile" else 0
    batch = score_series(model, rows, hop=1, lag=lag)
    scorer = StreamScorer(model, hop=1, lag=lag)
    got = dict(p for r in rows for p in scorer.push(r))
    got.update(scorer.flush())
    np.testing.assert_allclose([got[i] for i in range(70)], batch, rtol=1e-5, atol=1e-6)


def test_simple_detectors_through_the_commands_on_a_trended_series(tmp_path):
    """On a seasonal series with trend and point outliers, the rolling median finds the outliers
    (the plain z-score cannot: the trend leaves the training range)."""
    results = {}
    for name in ("rolling_median", "zscore"):
        cfg = AnomalyApp.package_dir() / "configs" / f"{name}.yaml"
        ov = [
            "data.source=seasonal_trend",
            "data.n_train=600",
            "data.n_val=200",
            "data.n_test=1000",
            "score.plots=false",
            f"run.root={tmp_path}",
            f"run.id={name}",
        ]
        run, _ = commands.train(AnomalyApp, cfg, ov, verbose=False)
        with pytest.warns(UserWarning, match="outside the training range"):
            results[name] = commands.evaluate(AnomalyApp, run=run, split="test", verbose=False)
    rm, z = results["rolling_median"], results["zscore"]
    assert rm["auc_pr"] > 0.95 and rm["f1"] > 0.6 and rm["flagged"] < 0.03
    # the z-score flags the drift: a large share of rows at the validation threshold, F1 near 0
    assert z["flagged"] > 0.2 and z["f1"] < 0.2 and z["out_of_range"] > 0.15
