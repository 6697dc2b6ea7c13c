"""Loaders on tiny fixtures written in each community layout, the generator, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ssmkit.errors import DataError
from ssmkit_apps.anomaly import data as D


def test_generator_is_deterministic_and_injects_into_test_only():
    a = D.make_synthetic(n_channels=8, n_train=500, n_val=200, n_test=800, seed=7)
    b = D.make_synthetic(n_channels=8, n_train=500, n_val=200, n_test=800, seed=7)
    c = D.make_synthetic(n_channels=8, n_train=500, n_val=200, n_test=800, seed=8)
    for part in ("train", "val", "test", "test_labels"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.test, c.test)
    assert a.train.shape == (500, 8) and a.val.shape == (200, 8) and a.test.shape == (800, 8)
    assert a.train.dtype == np.float32 and a.val_labels is None
    assert 0.02 < a.test_labels.mean() < 0.3
    # channels are correlated (shared latent sources), but not copies
    corr = np.corrcoef(a.train.T)
    off = np.abs(corr[~np.eye(8, dtype=bool)])
    assert off.max() > 0.5 and off.max() < 0.9999


def test_generator_each_type_changes_the_series():
    for kind in D.ANOMALY_TYPES:
        s = D.make_synthetic(n_channels=4, n_train=300, n_val=100, n_test=600, seed=1, types=(kind,))
        clean = D.make_synthetic(
            n_channels=4, n_train=300, n_val=100, n_test=600, seed=1, types=(kind,), anomaly_rate=0
        )
        assert clean.test_labels.sum() == 0
        np.testing.assert_array_equal(s.train, clean.train)
        changed = (s.test != clean.test).any(axis=1)
        assert changed.any(), kind
        # every change lies inside a labelled event, and every event changed something
        assert not (changed & (s.test_labels == 0)).any(), kind
        from ssmkit_apps.anomaly.metrics import segments

        assert all(changed[a:b].any() for a, b in segments(s.test_labels)), kind
    with pytest.raises(ValueError, match="unknown"):
        D.make_synthetic(types=("spike",))


def test_npy_layout(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "SMD_train.npy", rng.normal(size=(50, 3)).astype(np.float32))
    np.save(tmp_path / "SMD_test.npy", rng.normal(size=(40, 3)).astype(np.float32))
    lab = np.zeros(40)
    lab[10:13] = 1
    np.save(tmp_path / "SMD_test_label.npy", lab)
    s = D.load_npy_benchmark(tmp_path, "smd", val_fraction=0.2)
    assert s.train.shape == (40, 3) and s.val.shape == (10, 3) and s.test.shape == (40, 3)
    assert s.test_labels.sum() == 3 and s.name == "SMD"
    np.save(tmp_path / "SMD_test_label.npy", lab[:39])
    with pytest.raises(ValueError, match="SMD_test_label.npy: 39 labels"):
        D.load_npy_benchmark(tmp_path, "SMD")
    with pytest.raises(DataError, match="MSL_train.npy"):
        D.load_npy_benchmark(tmp_path, "MSL")


def test_npy_refuses_pickled_objects(tmp_path):
    np.save(tmp_path / "MSL_train.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "MSL_test.npy", np.zeros((4, 1)))
    np.save(tmp_path / "MSL_test_label.npy", np.zeros(4))
    with pytest.raises(ValueError, match="pickle"):
        D.load_npy_benchmark(tmp_path, "MSL")


def _psm(tmp_path, n_test_labels=30):
    rng = np.random.default_rng(0)
    cols = [f"feature_{i}" for i in range(4)]
    tr = pd.DataFrame(rng.normal(size=(60, 4)), columns=cols)
    tr.insert(0, "timestamp_(min)", np.arange(60.0))
    tr.iloc[5, 2] = np.nan  # PSM's train.csv really has gaps
    te = pd.DataFrame(rng.normal(size=(30, 4)), columns=cols)
    te.insert(0, "timestamp_(min)", np.arange(60.0, 90.0))
    lab = pd.DataFrame(
        {"timestamp_(min)": np.arange(n_test_labels), "label": (np.arange(n_test_labels) % 7 == 0).astype(int)}
    )
    tr.to_csv(tmp_path / "train.csv", index=False)
    te.to_csv(tmp_path / "test.csv", index=False)
    lab.to_csv(tmp_path / "test_label.csv", index=False)


def test_psm_layout_interpolates_with_warning(tmp_path):
    _psm(tmp_path)
    with pytest.warns(UserWarning, match=r"train.csv: interpolated 1 non-finite.*feature_1"):
        s = D.load_psm(tmp_path)
    assert s.channels == [f"feature_{i}" for i in range(4)] and s.test.shape == (30, 4)
    assert np.isfinite(s.train).all() and s.test_labels.sum() == 5
    with pytest.raises(DataError, match=r"train.csv: 1 non-finite value.*row 5 column feature_1"):
        D.load_psm(tmp_path, nan_policy="reject")


def test_psm_label_length_mismatch(tmp_path):
    _psm(tmp_path, n_test_labels=29)
    with pytest.warns(UserWarning):
        with pytest.raises(ValueError, match="test_label.csv: 29 labels but test.csv has 30"):
            D.load_psm(tmp_path)


def test_swat_layout_text_labels(tmp_path):
    rng = np.random.default_rng(1)
    for name, n, lab in (
        ("train.csv", 40, ["Normal"] * 40),
        ("test.csv", 20, ["Normal"] * 15 + ["Attack", "A ttack"] + ["Normal"] * 3),
    ):
        f = pd.DataFrame(rng.normal(size=(n, 3)), columns=["FIT101", "LIT101", "MV101"])
        f.insert(0, " Timestamp", [f"28/12/2015 10:00:{i:02d} AM" for i in range(n)])
        f["Normal/Attack"] = lab
        f.to_csv(tmp_path / name, index=False)
    s = D.load_swat(tmp_path / "train.csv", tmp_path / "test.csv")
    assert s.channels == ["FIT101", "LIT101", "MV101"]
    assert s.test_labels.tolist() == [0] * 15 + [1, 1] + [0] * 3


def test_timeeval_layout_and_non_numeric_column(tmp_path):
    n = 50
    f = pd.DataFrame({"timestamp": np.arange(n), "value-1": np.sin(np.arange(n)), "value-2": np.cos(np.arange(n))})
    f["is_anomaly"] = 0
    f.loc[30:32, "is_anomaly"] = 1
    f.to_csv(tmp_path / "s.csv", index=False)
    s = D.load_timeeval(tmp_path / "s.csv", train_rows=20)
    assert s.channels == ["value-1", "value-2"] and s.train.shape == (16, 2) and s.test_labels.sum() == 3
    f["value-2"] = f["value-2"].astype(object)
    f.loc[7, "value-2"] = "n/a?"
    f.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad.csv: column 'value-2' is not numeric \(row 7"):
        D.load_timeeval(tmp_path / "bad.csv", train_rows=20)


def test_any_csv_with_label_column(tmp_path):
    f = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0) ** 2, "y": [0] * 9 + [1]})
    f.to_csv(tmp_path / "x.csv", index=False)
    values, labels, cols = D.load_labelled_csv(tmp_path / "x.csv", label_column="y")
    assert cols == ["a", "b"] and values.shape == (10, 2) and labels.tolist() == [0] * 9 + [1]
    with pytest.raises(ValueError, match=r"x.csv: no label column 'label'; columns are \['a', 'b', 'y'\]"):
        D.load_labelled_csv(tmp_path / "x.csv", label_column="label")
    f["y"] = [0] * 9 + [2]
    f.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match="label column 'y' must hold only 0 and 1"):
        D.load_labelled_csv(tmp_path / "x.csv", label_column="y")


def test_internal_bleeding16_from_the_aeon_wheel():
    s = D.load_internal_bleeding16()
    assert s.test.shape == (7501, 1) and s.train.shape[0] + s.val.shape[0] == 1200
    idx = np.flatnonzero(s.test_labels)
    assert (idx[0], idx[-1], len(idx)) == (4187, 4198, 12)


def test_windows_cover_every_row_and_reject_short_series():
    x = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    ds = D.WindowDataset(x, window=5, stride=5)
    assert ds.starts == [0, 5, 10, 15, 18] and ds[4].shape == (5, 2)
    with pytest.raises(ValueError, match="test.csv: 3 rows is fewer than one window of 5 rows"):
        D.WindowDataset(x[:3], window=5, source="test.csv")


def test_scaler_channel_mismatch():
    sc = D.Scaler.fit(np.random.default_rng(0).normal(size=(20, 3)))
    with pytest.raises(ValueError, match="4 channels, the model was fitted on 3"):
        sc(np.zeros((5, 4), dtype=np.float32))
