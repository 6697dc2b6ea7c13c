"""The configurable score (combine_scores), MAAT's forecasting head, the validation error
scales, and the dev study: its offline rescoring is the pipeline's own computation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ssmkit.engine import commands
from ssmkit_apps.anomaly import devstudy
from ssmkit_apps.anomaly.app import AnomalyApp
from ssmkit_apps.anomaly.compare import run_comparison
from ssmkit_apps.anomaly.losses import minimax_losses
from ssmkit_apps.anomaly.model import MAAT, anomaly_transformer, combine_scores
from ssmkit_apps.anomaly.scoring import StreamScorer, channel_error_scale, score_series
from tests.apps.anomaly.tiny_overrides import TINY as TINY_TRAIN

TINY = [*TINY_TRAIN, "score.plots=false"]


def _windows():
    x = torch.zeros(1, 5, 3)
    recon = torch.zeros(1, 5, 3)
    recon[0, :, 0] = torch.tensor([1.0, 0.0, 2.0, 0.0, 0.0])  # squared errors 1, 0, 4, 0, 0 on channel 0
    recon[0, :, 1] = torch.tensor([0.0, 3.0, 0.0, 0.0, 1.0])  # 0, 9, 0, 0, 1 on channel 1
    return x, recon


def test_combine_scores_by_hand():
    x, recon = _windows()
    scale = torch.tensor([1.0, 9.0, 1.0])
    mean = combine_scores(x, recon, None, None, assoc=False)
    torch.testing.assert_close(mean, torch.tensor([[1.0, 9.0, 4.0, 0.0, 1.0]]) / 3)
    mx = combine_scores(x, recon, None, None, assoc=False, channels="max")
    torch.testing.assert_close(mx, torch.tensor([[1.0, 9.0, 4.0, 0.0, 1.0]]))
    # normalised: channel 1's errors are divided by 9, so channel 0 wins at step 2 and ties nothing
    nmx = combine_scores(x, recon, None, scale, assoc=False, channels="max", normalize=True)
    torch.testing.assert_close(nmx, torch.tensor([[1.0, 1.0, 4.0, 0.0, 1.0 / 9]]))
    # top4 over 3 channels is the mean
    torch.testing.assert_close(combine_scores(x, recon, None, None, assoc=False, channels="top4"), mean)
    # smoothing: centred width 3, edges average the steps that exist
    sm = combine_scores(x, recon, None, None, assoc=False, channels="max", smooth=3)
    torch.testing.assert_close(sm, torch.tensor([[5.0, 14 / 3, 13 / 3, 5 / 3, 0.5]]))
    # association weighting: softmax over the window of -temperature * discrepancy
    dis = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    w = torch.softmax(-2.0 * dis, -1)
    torch.testing.assert_close(combine_scores(x, recon, dis, None, temperature=2.0, channels="max"), w * mx)


def test_combine_scores_forecast_alignment_and_errors():
    x, recon = _windows()
    fc = torch.zeros(1, 5, 3)
    fc[0, 1, 2] = 2.0  # row 1 predicts row 2: a squared error of 4 on channel 2 at step 2
    s = combine_scores(
        x, torch.zeros_like(x), None, None, assoc=False, channels="max", forecast=fc, forecast_weight=0.5
    )
    torch.testing.assert_close(s, torch.tensor([[0.0, 0.0, 2.0, 0.0, 0.0]]))
    # fc_scale normalises the forecast error per channel
    s = combine_scores(
        x,
        torch.zeros_like(x),
        None,
        torch.ones(3),
        assoc=False,
        channels="max",
        normalize=True,
        forecast=fc,
        fc_scale=torch.tensor([1.0, 1.0, 4.0]),
        forecast_weight=1.0,
    )
    torch.testing.assert_close(s, torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="channels='sum'"):
        combine_scores(x, recon, None, None, assoc=False, channels="sum")
    with pytest.raises(ValueError, match="smooth=4"):
        combine_scores(x, recon, None, None, assoc=False, smooth=4)
    with pytest.raises(ValueError, match="err_scale"):
        combine_scores(x, recon, None, None, assoc=False, normalize=True)
    with pytest.raises(ValueError, match="discrepancy"):
        combine_scores(x, recon, None, None, assoc=True)
    with pytest.raises(ValueError, match="forecast=True"):
        combine_scores(x, recon, None, None, assoc=False, forecast_weight=1.0)


def _forecaster(**kw):
    torch.manual_seed(0)
    return MAAT(
        n_channels=3,
        window=12,
        d_model=16,
        n_heads=2,
        n_layers=1,
        d_ff=16,
        mamba_layers=1,
        d_state=4,
        forecast=True,
        **kw,
    )


def test_forecast_head_is_causal_and_trained():
    model = _forecaster()
    x = torch.randn(2, 12, 3)
    out = model(x)
    x2 = x.clone()
    x2[:, 7] += 5.0
    moved = (model(x2)["forecast"] - out["forecast"]).abs().sum((0, 2))
    # the forecast made at row t has read rows <= t only
    assert (moved[:7] == 0).all() and moved[7:].sum() > 0
    # the forecast loss is part of the reconstruction objective and reaches the head
    a, b, logs = minimax_losses(out, x, k=3.0)
    (a + b).backward()
    assert model.forecast_head.weight.grad.abs().sum() > 0 and model.causal_embed.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs the Mamba path"):
        MAAT(n_channels=3, window=12, d_model=16, n_heads=2, mamba_layers=0, forecast=True)
    with pytest.raises(ValueError, match="score_forecast=1.0 needs a model built with forecast=True"):
        MAAT(n_channels=3, window=12, d_model=16, n_heads=2, mamba_layers=1, score_forecast=1.0)
    # the Anomaly Transformer is MAAT without the Mamba path, forecasting head included
    at = anomaly_transformer(n_channels=3, window=12, d_model=16, n_heads=2, forecast=True, score_forecast=1.0)
    assert at.forecast_head is None and at.fusion is None and "forecast" not in at(x)


def test_stream_equals_batch_with_every_score_option():
    model = _forecaster(
        score_assoc=True, score_channels="max", score_normalize=True, score_smooth=5, score_forecast=0.7
    )
    model.set_scaler(np.zeros(3, np.float32), np.ones(3, np.float32))
    model.set_err_scale([0.5, 1.0, 2.0], [1.5, 0.3, 1.0])
    model.eval()
    series = np.random.default_rng(5).normal(size=(41, 3)).astype(np.float32)
    batch = score_series(model, series, 4, lag=5)
    scorer = StreamScorer(model, 4, 5)
    got = np.full(41, np.nan, dtype=np.float32)
    for row in series:
        for i, v in scorer.push(row):
            got[i] = v
    for i, v in scorer.flush():
        got[i] = v
    np.testing.assert_allclose(got, batch, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="fc_scale must be 3 positive"):
        model.set_err_scale([1.0, 1.0, 1.0], [1.0, 0.0, 1.0])


def test_channel_error_scale_by_hand():
    model = _forecaster().eval()
    series = np.random.default_rng(1).normal(size=(30, 3)).astype(np.float32)
    rec, fc = channel_error_scale(model, series, 12, lag=0)
    x = torch.from_numpy(series)
    wins = torch.stack([x[0:12], x[12:24], x[18:30]])  # hop 12 plan: [0, 12), [12, 24), last window's rows 24..29
    with torch.no_grad():
        out = model(wins)
    e = (out["recon"] - wins).pow(2)
    f = (out["forecast"][:, :-1] - wins[:, 1:]).pow(2)
    want_rec = torch.cat([e[0], e[1], e[2, 6:]]).mean(0)
    want_fc = torch.cat([f[0], f[1], f[2, 5:]]).mean(0)  # step 0 of a window has no forecast
    np.testing.assert_allclose(rec, want_rec.numpy(), rtol=1e-5)
    np.testing.assert_allclose(fc, want_fc.numpy(), rtol=1e-5)


def test_dev_rescoring_equals_the_pipeline(tmp_path):
    ov = [
        *TINY,
        "data.data_seed=101",
        "model.forecast=true",
        "score.assoc=true",
        "score.normalize=true",
        "score.channels=max",
        "score.smooth=5",
        "score.forecast_weight=0.5",
        f"run.root={tmp_path}",
        "run.id=dev",
    ]
    run, val = commands.train(AnomalyApp, None, ov, verbose=False)
    commands.evaluate(AnomalyApp, run=run, split="test", verbose=False)
    v, t = devstudy.raw_outputs(run, "val"), devstudy.raw_outputs(run, "test")
    assert (run / "raw_test.npz").is_file()
    # the app fitted the error scales on validation exactly as the study computes them
    from ssmkit.engine.checkpoint import load_weights

    weights = load_weights(run / "checkpoints" / "best.safetensors")
    rec_scale, fc_scale = devstudy.channel_scale(v)
    np.testing.assert_allclose(weights["err_scale"].numpy(), rec_scale, rtol=1e-4)
    np.testing.assert_allclose(weights["fc_scale"].numpy(), fc_scale, rtol=1e-4)
    kw = dict(assoc=True, channels="max", normalize=True, smooth=5, forecast_weight=0.5)
    offline = devstudy.variant_scores(t, (rec_scale, fc_scale), kw)
    pipeline = pd.read_csv(run / "scores_test.csv")["score"].to_numpy()
    np.testing.assert_allclose(offline, pipeline, rtol=1e-3, atol=1e-6)
    val_scores = devstudy.variant_scores(v, (rec_scale, fc_scale), kw)
    np.testing.assert_allclose(np.percentile(val_scores, 99.0), val["threshold"], rtol=1e-3)
    with pytest.raises(SystemExit, match="seed 0 is the official test series"):
        devstudy.main(["--seeds", "0,101", "--quick"])


def test_comparison_runs_do_not_nest_the_app_folder(tmp_path):
    res = run_comparison(
        tmp_path / "anomaly", [*TINY], models=("maat",), series=("synthetic",), verbose=False, run_root=tmp_path
    )
    assert (tmp_path / "anomaly" / "synthetic-maat" / "config.yaml").is_file()
    assert not (tmp_path / "anomaly" / "anomaly").exists()
    saved = json.loads((tmp_path / "anomaly" / "results.json").read_text())
    assert saved["synthetic"]["maat"]["f1"] == res["synthetic"]["maat"]["f1"]


def test_dev_selection_rule():
    def items(f1, ap):
        return [{"seed": 1, "f1": f1, "auc_pr": ap}, {"seed": 2, "f1": f1, "auc_pr": ap}]

    rows = {
        # "mse" is best averaged over both models although MAAT alone prefers "norm-max"
        "maat e5": {"mse": items(0.5, 0.5), "norm-max": items(0.7, 0.7)},
        "anomaly_transformer e5": {"mse": items(0.6, 0.6), "norm-max": items(0.2, 0.2)},
        "maat e5f": {"mse": items(0.4, 0.4), "+fc mse": items(0.55, 0.65)},
    }
    for r in rows.values():  # the rule only reads the variants present; fill the others low
        for v in devstudy.VARIANTS:
            r.setdefault(v, items(0.0, 0.0))
    choice = devstudy.select({"rows": rows, "trainings": ["e5", "e5f"]})
    assert choice["shared"]["training"] == "e5" and choice["shared"]["score"] == "mse"
    assert choice["shared"]["criterion"] == pytest.approx(0.55)
    assert choice["maat"] == {"training": "e5f", "score": "+fc mse", "criterion": pytest.approx(0.6)}
    with pytest.raises(ValueError, match="no training ran for every model"):
        devstudy.select({"rows": {"maat e5f": rows["maat e5f"]}, "trainings": ["e5f"]})


def test_forecast_weight_without_the_head_is_a_config_error():
    from ssmkit.engine.commands import app_config
    from ssmkit.engine.config import ConfigError

    cfg = app_config(AnomalyApp, None, [*TINY, "model.forecast=false", "score.forecast_weight=1.0"])
    with pytest.raises(ConfigError, match="forecast_weight=1.0 .* model.forecast=false; set score.forecast_weight=0"):
        AnomalyApp(cfg).build_model()
    # the Anomaly Transformer config drops the head and its score term on its own
    at_cfg = AnomalyApp.package_dir() / "configs" / "anomaly_transformer.yaml"
    at = AnomalyApp(app_config(AnomalyApp, at_cfg, TINY)).build_model()
    assert at.forecast_head is None and at.score_kw["forecast_weight"] == 0.0
