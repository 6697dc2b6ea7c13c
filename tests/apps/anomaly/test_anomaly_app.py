"""A tiny train -> evaluate -> infer run through the engine commands, and the app's errors."""

from __future__ import annotations

import argparse
import io
import json
import sys

import numpy as np
import pandas as pd
import pytest

from ssmkit.engine import commands
from ssmkit.engine.app import DataError
from ssmkit.registry import list_apps
from ssmkit_apps.anomaly.app import AnomalyApp
from tests.apps.anomaly.tiny_overrides import TINY


def _infer_args(run, **kw):
    base = dict(
        run=str(run),
        ckpt=None,
        config=None,
        set=[],
        file=None,
        out=None,
        stream=False,
        threshold=None,
        label_column="is_anomaly",
        timestamp_column="timestamp",
        overwrite=False,
    )
    return argparse.Namespace(**{**base, **kw})


def test_app_is_registered():
    assert "anomaly" in list_apps()


def test_tiny_train_evaluate_infer(tmp_path, monkeypatch, capsys):
    run, val = commands.train(AnomalyApp, None, [*TINY, f"run.root={tmp_path}", "run.id=maat"], verbose=False)
    assert np.isfinite(val["rec_loss"]) and np.isfinite(val["threshold"])
    # the resolved channel count is persisted, so inference needs only the run directory
    assert "n_channels: 3" in (run / "config.yaml").read_text()
    test = commands.evaluate(AnomalyApp, run=run, split="test", verbose=False)
    for k in ("pa_f1", "f1", "auc_roc", "auc_pr", "vus_pr", "aff_precision", "aff_recall"):
        assert k in test and 0.0 <= test[k] <= 1.0, k
    assert json.loads((run / "eval_test.json").read_text())["f1"] == test["f1"]
    assert (run / "plots" / "synthetic_maat_test.png").stat().st_size > 10_000
    scores = pd.read_csv(run / "scores_test.csv")
    assert list(scores.columns) == ["index", "score", "flag", "label"] and len(scores) == 300

    # infer FILE.csv --out: the same series scores the same as the evaluation
    from ssmkit_apps.anomaly.data import make_synthetic

    s = make_synthetic(3, 300, 120, 300, seed=0)
    frame = pd.DataFrame(s.test, columns=["ch00", "ch01", "ch02"])
    frame.insert(0, "timestamp", np.arange(300))
    frame["is_anomaly"] = s.test_labels
    frame.to_csv(tmp_path / "new.csv", index=False)
    args = _infer_args(run, file=str(tmp_path / "new.csv"), out=str(tmp_path / "s.csv"))
    assert commands.infer(AnomalyApp, args) == 0
    got = pd.read_csv(tmp_path / "s.csv")
    np.testing.assert_allclose(got["score"], scores["score"], rtol=1e-4, atol=1e-6)

    # --stream: stdin rows in, one line per row out
    text = "ch00,ch01,ch02\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in s.test[:40]) + "\nbad,row\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert commands.infer(AnomalyApp, _infer_args(run, stream=True)) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[0] == "index,score,flag" and len(out.out.splitlines()) == 41
    assert "stdin row 40: expected 3 fields, got 2" in out.err

    # a file with another channel count is refused, naming the file
    frame.drop(columns=["ch02"]).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(
        DataError, match=r"two.csv: value columns \['ch00', 'ch01'\] do not include the trained columns \['ch02'\]"
    ):
        commands.infer(AnomalyApp, _infer_args(run, file=str(tmp_path / "two.csv")))
    frame.iloc[:10].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match="short.csv: 10 rows is fewer than one window of 16 rows"):
        commands.infer(AnomalyApp, _infer_args(run, file=str(tmp_path / "short.csv")))
    # evaluating on data with other channels than the checkpoint is refused too
    with pytest.raises(DataError, match="the data has 5 channels but model.n_channels=3"):
        commands.evaluate(AnomalyApp, run=run, split="test", overrides=["data.channels=5"], verbose=False)


def test_isolation_forest_through_the_same_commands(tmp_path):
    cfg = AnomalyApp.package_dir() / "configs" / "isolation_forest.yaml"
    ov = [
        *TINY,
        "model.window=8",
        "score.hop=1",
        "score.lag=0",
        f"run.root={tmp_path}",
        "run.id=if",
        "train.max_steps=1",
    ]
    run, val = commands.train(AnomalyApp, cfg, ov, verbose=False)
    assert np.isfinite(val["threshold"]) and "rec_loss" not in val
    test = commands.evaluate(AnomalyApp, run=run, split="test", verbose=False)
    assert 0.0 <= test["auc_pr"] <= 1.0


def test_missing_benchmark_folder_is_a_data_error(tmp_path):
    from ssmkit.engine.commands import app_config
    from ssmkit_apps.anomaly.app import load_split

    cfg = app_config(AnomalyApp, None, ["data.source=psm", f"data.root={tmp_path / 'nope'}"])
    with pytest.raises(DataError, match="nope/train.csv"):
        load_split(cfg.data)
    cfg = app_config(AnomalyApp, None, ["data.source=npy"])
    with pytest.raises(DataError, match="data.name=SMD"):
        load_split(cfg.data)


def test_any_csv_source_through_the_config(tmp_path):
    from ssmkit.engine.commands import app_config
    from ssmkit_apps.anomaly.app import load_split

    rng = np.random.default_rng(0)
    pd.DataFrame(rng.normal(size=(50, 2)), columns=["p", "q"]).to_csv(tmp_path / "normal.csv", index=False)
    test = pd.DataFrame(rng.normal(size=(30, 2)), columns=["p", "q"])
    test["fault"] = [0] * 25 + [1] * 5
    test.to_csv(tmp_path / "test.csv", index=False)
    ov = [
        "data.source=csv",
        f"data.train_file={tmp_path / 'normal.csv'}",
        f"data.test_file={tmp_path / 'test.csv'}",
        "data.label_column=fault",
    ]
    s = load_split(app_config(AnomalyApp, None, ov).data)
    assert s.channels == ["p", "q"] and s.train.shape == (40, 2) and s.test_labels.sum() == 5
    test.to_csv(tmp_path / "normal.csv", index=False)
    with pytest.raises(DataError, match="normal.csv: holds the label column 'fault'"):
        load_split(app_config(AnomalyApp, None, ov).data)


def test_minimax_step_trains_under_two_gloo_ranks_as_in_one_process(tmp_path):
    """MAAT's two losses of one forward under DDP (2 gloo ranks, same global batch) reach the
    weights of one process: one backward of their sum there, two passes here."""
    import os
    import subprocess

    import torch
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = [a for kv in [*TINY, "score.plots=false", "train.device=cpu", f"run.root={tmp_path}"] for a in ("--set", kv)]
    args = ["-m", "ssmkit", "anomaly", "train", "--quiet", *sets]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          *args, "--set", "run.id=two"], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one = subprocess.run([sys.executable, *args, "--set", "run.id=one"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    curves = {}
    for run in ("one", "two"):
        records = (json.loads(line) for line in (tmp_path / "anomaly" / run / "metrics.jsonl").read_text().splitlines())
        curves[run] = [(r["step"], r["loss"]) for r in records if r["split"] == "train"]
    assert [s for s, _ in curves["one"]] == [s for s, _ in curves["two"]] and curves["one"]
    for (_, x), (_, y) in zip(curves["one"], curves["two"]):
        assert abs(x - y) <= 1e-5 * max(1.0, abs(x)), (x, y)
    a = load_file(str(tmp_path / "anomaly" / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "anomaly" / "two" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        # atol: the key bias has a zero true gradient (softmax ignores a shift), so its update is
        # rounding noise that Adam scales up to a step of about lr; everything else agrees to 1e-5.
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=2e-4)
