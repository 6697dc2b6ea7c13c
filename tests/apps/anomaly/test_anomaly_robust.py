"""Bad inputs and outputs through the real CLI: exit 2 with the file named, or a documented
warning; never a NaN score, never an overwritten input, never a truncated output."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file, save_file

from ssmkit.cli import main
from ssmkit_apps.anomaly.data import make_seasonal_trend, make_synthetic
from tests.apps.anomaly.tiny_overrides import TINY as TINY_TRAIN
from tests.apps.anomaly.tiny_overrides import TINY_MODEL

TINY = [*TINY_TRAIN, "score.plots=false"]
COLS = ["ch00", "ch01", "ch02"]


def _set(values):
    return [a for v in values for a in ("--set", v)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["anomaly", "train", "--quiet", *_set([*TINY, f"run.root={root}", "run.id=tiny"])]) == 0
    return root / "anomaly" / "tiny"


@pytest.fixture
def series_csv(tmp_path):
    s = make_synthetic(3, 300, 120, 300, seed=0)
    frame = pd.DataFrame(s.test, columns=COLS)
    frame.insert(0, "timestamp", np.arange(300))
    path = tmp_path / "series.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _infer(run, *args):
    return main(["anomaly", "infer", "--run", str(run), *args])


def test_out_policy(run, series_csv, tmp_path, capsys):
    path, _ = series_csv
    out = tmp_path / "new" / "folder" / "scores.csv"  # missing parents are created
    assert _infer(run, str(path), "--out", str(out)) == 0
    first = out.read_text()
    assert first.splitlines()[0] == "index,score,flag" and len(first.splitlines()) == 301
    assert _infer(run, str(path), "--out", str(out)) == 2  # exists: refused
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert _infer(run, str(path), "--out", str(out), "--overwrite") == 0
    before = path.read_bytes()
    assert _infer(run, str(path), "--out", str(path), "--overwrite") == 2  # never the input
    assert "is the input" in capsys.readouterr().err and path.read_bytes() == before


@pytest.mark.parametrize("seed", range(6))
def test_random_bad_cells_exit_2_or_warn_and_never_write_nan(run, series_csv, tmp_path, capsys, seed):
    _, frame = series_csv
    rng = np.random.default_rng(seed)
    bad = frame.astype(object)
    kinds = ["nan", "inf", "-inf", "1e308", "text", ""]
    cells = [
        (int(rng.integers(300)), COLS[int(rng.integers(3))], kinds[int(rng.integers(len(kinds)))])
        for _ in range(int(rng.integers(1, 4)))
    ]
    for r, c, k in cells:
        bad.loc[r, c] = k
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    for policy in ("interpolate", "reject"):
        out = tmp_path / f"scores-{policy}.csv"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = _infer(run, str(path), "--out", str(out), "--set", f"data.nan_policy={policy}")
        err = capsys.readouterr().err
        if any(k == "text" for *_, k in cells):
            assert code == 2 and "bad.csv" in err and "is not numeric" in err
        elif policy == "reject":
            assert code == 2 and "bad.csv" in err and "non-finite" in err
        else:
            assert code == 0 and any("interpolated" in str(w.message) for w in caught)
        if code == 0:
            scores = pd.read_csv(out)["score"].to_numpy()
            assert len(scores) == 300 and np.isfinite(scores).all()
        else:
            assert not out.exists()


def test_value_too_large_for_float32_is_caught(run, series_csv, tmp_path, capsys):
    _, frame = series_csv
    frame = frame.copy()
    frame.loc[100, "ch01"] = 1e308  # finite in float64, inf in float32
    frame.to_csv(tmp_path / "big.csv", index=False)
    assert _infer(run, str(tmp_path / "big.csv"), "--set", "data.nan_policy=reject") == 2
    assert "row 100 column ch01" in capsys.readouterr().err


def test_zero_scale_in_the_weights_is_refused(run, series_csv, tmp_path, capsys):
    path, _ = series_csv
    state = load_file(str(run / "model.safetensors"))
    state["scale_std"] = state["scale_std"] * 0
    save_file(state, str(tmp_path / "damaged.safetensors"))
    assert _infer(run, str(path), "--ckpt", str(tmp_path / "damaged.safetensors")) == 2
    err = capsys.readouterr().err
    assert "damaged.safetensors" in err and "scale_std" in err


def test_column_contract_by_name(run, series_csv, tmp_path, capsys):
    path, frame = series_csv
    assert _infer(run, str(path), "--out", str(tmp_path / "a.csv")) == 0
    frame[["timestamp", "ch02", "ch00", "ch01"]].to_csv(tmp_path / "reordered.csv", index=False)
    assert _infer(run, str(tmp_path / "reordered.csv"), "--out", str(tmp_path / "b.csv")) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv"))
    frame[COLS].to_csv(tmp_path / "headerless.csv", index=False, header=False)
    assert _infer(run, str(tmp_path / "headerless.csv"), "--out", str(tmp_path / "c.csv")) == 0
    np.testing.assert_allclose(pd.read_csv(tmp_path / "c.csv")["score"], pd.read_csv(tmp_path / "a.csv")["score"])
    frame.rename(columns={"ch00": "x", "ch01": "y", "ch02": "z"}).to_csv(tmp_path / "other.csv", index=False)
    capsys.readouterr()
    assert _infer(run, str(tmp_path / "other.csv")) == 2
    assert "other.csv" in capsys.readouterr().err
    (tmp_path / "empty.csv").write_text("")
    assert _infer(run, str(tmp_path / "empty.csv")) == 2
    assert "empty.csv: the file is empty" in capsys.readouterr().err


def test_stream_survives_a_garbage_first_line_and_never_truncates(run, series_csv, tmp_path, monkeypatch, capsys):
    import io
    import sys

    _, frame = series_csv
    rows = "\n".join(",".join(f"{v:.6f}" for v in r) for r in frame[COLS].to_numpy()[:40])
    monkeypatch.setattr(sys, "stdin", io.StringIO("@@ garbage ###\n" + rows + "\n"))
    assert _infer(run, "--stream") == 0
    got = capsys.readouterr()
    assert "line 1 is neither a header" in got.err and len(got.out.splitlines()) == 41
    keep = tmp_path / "kept.csv"
    keep.write_text("precious\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("x,y,z\n" + rows + "\n"))  # a header naming other columns
    assert _infer(run, "--stream", "--out", str(keep), "--overwrite") == 2
    assert keep.read_text() == "precious\n"
    assert "differ from the trained columns" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(rows + "\n"))
    assert _infer(run, "--stream", "--out", str(keep)) == 2  # exists without --overwrite
    assert keep.read_text() == "precious\n"


def test_config_names_paths_and_separate_results(run, tmp_path, capsys):
    assert (
        main(
            [
                "anomaly",
                "train",
                "--quiet",
                "--config",
                "rolling_median",
                *_set([*TINY, f"run.root={tmp_path}", "run.id=rm", "model.window=9", "score.hop=1", "score.lag=0"]),
            ]
        )
        == 0
    )
    assert (
        yaml.safe_load((tmp_path / "anomaly" / "rm" / "config.yaml").read_text())["model"]["name"] == "rolling_median"
    )
    capsys.readouterr()
    assert main(["anomaly", "train", "--config", "no_such_config"]) == 2
    assert "rolling_median" in capsys.readouterr().err
    assert main(["anomaly", "train", "--set", "data.train_csv=x.csv"]) == 2
    assert "did you mean 'data.train_file'" in capsys.readouterr().err
    # a TimeEval file: without a train file the message names the config keys
    s = make_seasonal_trend(300, 100, 400, seed=1, outlier_rate=0.0)
    series = np.concatenate([s.train, s.val, s.test])[:, 0]
    series[650] += 4.0  # one anomaly, UCR style
    labels = (np.arange(800) == 650).astype(int)
    frame = pd.DataFrame({"timestamp": np.arange(1000, 1800), "value": series, "is_anomaly": labels})
    frame.to_csv(tmp_path / "ucr.csv", index=False)
    base = [
        f"run.root={tmp_path}",
        "data.source=timeeval",
        "data.test_file=ucr.csv",
        "model.window=9",
        "score.hop=1",
        "score.lag=0",
        "score.plots=false",
    ]
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)  # the data path is given relative to this folder
    try:
        assert main(["anomaly", "train", "--quiet", "--config", "rolling_median", *_set(base + ["run.id=te"])]) == 2
        err = capsys.readouterr().err
        assert "data.train_file=FILE.csv" in err and "data.train_rows=N" in err
        assert (
            main(
                [
                    "anomaly",
                    "train",
                    "--quiet",
                    "--config",
                    "rolling_median",
                    *_set(base + ["run.id=te", "data.train_rows=400"]),
                ]
            )
            == 0
        )
    finally:
        os.chdir(cwd)
    te = tmp_path / "anomaly" / "te"
    saved = yaml.safe_load((te / "config.yaml").read_text())["data"]["test_file"]
    assert saved == str((tmp_path / "ucr.csv").resolve())  # stored absolute: evaluate works from anywhere
    assert main(["anomaly", "evaluate", "--run", str(te)]) == 0
    import json

    own = json.loads((te / "eval_test.json").read_text())
    assert own["ucr_argmax"] == 1650  # the file's own timestamp (row 650 of the file)
    shutil.copy(tmp_path / "ucr.csv", tmp_path / "other_series.csv")
    assert (
        main(["anomaly", "evaluate", "--run", str(te), "--set", f"data.test_file={tmp_path / 'other_series.csv'}"]) == 0
    )
    assert (te / "eval_test-other_series.json").is_file() and (te / "scores_test-other_series.csv").is_file()
    assert json.loads((te / "eval_test.json").read_text()) == own  # the run's own result is untouched


def test_trended_clean_series_flags_at_most_two_percent(tmp_path):
    """A deep model trained on a trended seasonal series, scoring its anomaly-free continuation
    (which leaves the training range), flags at most 2 % of the rows."""
    ov = [
        "data.source=seasonal_trend",
        "data.n_train=1200",
        "data.n_val=400",
        "data.n_test=1200",
        "data.train_stride=2",
        "model.window=32",
        *TINY_MODEL,
        "train.max_steps=60",
        "train.batch_size=16",
        "score.hop=8",
        "score.lag=12",
        "score.plots=false",
        f"run.root={tmp_path}",
        "run.id=trend",
    ]
    assert main(["anomaly", "train", "--quiet", *_set(ov)]) == 0
    clean = make_seasonal_trend(1200, 400, 1200, seed=0, outlier_rate=0.0)
    pd.DataFrame({"value": clean.test[:, 0]}).to_csv(tmp_path / "clean.csv", index=False)
    with pytest.warns(UserWarning, match="outside the training range"):
        assert (
            main(
                [
                    "anomaly",
                    "infer",
                    str(tmp_path / "clean.csv"),
                    "--run",
                    str(tmp_path / "anomaly" / "trend"),
                    "--out",
                    str(tmp_path / "s.csv"),
                ]
            )
            == 0
        )
    flagged = pd.read_csv(tmp_path / "s.csv")["flag"].mean()
    assert flagged <= 0.02
