"""Per-class Dice/HD95 through MONAI, the strict readings beside them, the table and the box plot."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from ssmkit_apps.medseg import metrics as M

NAMES = ["background", "a", "b", "c"]


def _maps():
    gt = torch.zeros(12, 12, 12, dtype=torch.long)
    gt[2:6, 2:6, 2:6] = 1  # 64 voxels
    gt[7:10, 7:10, 7:10] = 2  # 27 voxels; the prediction misses it
    pred = torch.zeros_like(gt)
    pred[2:6, 2:6, 2:5] = 1  # 48 of the 64
    pred[0, 0, 0] = 3  # class 3 is absent from the reference but predicted
    return pred, gt


def test_case_metrics_dice_hd95_and_strict_readings():
    pred, gt = _maps()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # an empty class is counted, not warned about per case
        r = M.case_metrics(pred, gt, 4, spacing=[1.0, 1.0, 2.0])
    assert r["dice"][0] == pytest.approx(2 * 48 / (48 + 64))
    assert r["dice"][1] == 0.0 and math.isnan(r["dice"][2])  # c absent from the reference: skipped
    assert r["dice_strict"][2] == 0.0  # ...but predicted, so strict counts it as a miss
    assert r["hd95"][0] == pytest.approx(2.0)  # the last slice is missing: 1 voxel along z = 2 mm
    assert math.isnan(r["hd95"][1]) and r["missed"].tolist() == [0.0, 1.0, 0.0]
    diag = math.sqrt(12**2 + 12**2 + 24**2)
    assert r["hd95_strict"][1] == pytest.approx(diag)
    same = M.case_metrics(gt, gt, 4, spacing=[1.0, 1.0, 1.0])
    assert same["dice"][:2].tolist() == [1.0, 1.0] and same["hd95"][:2].tolist() == [0.0, 0.0]
    assert same["dice_strict"][2] == 1.0  # absent and not predicted: right


def test_summary_table_csv_and_boxplot(tmp_path):
    pred, gt = _maps()
    rows = [M.case_metrics(pred, gt, 4, [1.0, 1.0, 2.0]), M.case_metrics(gt, gt, 4, [1.0, 1.0, 2.0])]
    s = M.summarize(rows, NAMES)
    assert s["dice/a"] == pytest.approx((2 * 48 / 112 + 1) / 2)
    assert s["dice/b"] == pytest.approx(0.5)
    assert math.isnan(s["dice/c"]) and s["dice_strict/c"] == pytest.approx(0.5)
    assert s["dice"] == pytest.approx(np.mean([s["dice/a"], s["dice/b"]]))
    assert s["hd95_missed"] == 1.0 and s["cases"] == 2.0
    md = M.table(rows, NAMES)
    assert md.splitlines()[0].startswith("| class | Dice") and "| b | 0.500 ± 0.500 (0.500) |" in md
    assert "| 1/2 |" in md  # b: missed in one of the two cases where it is present
    M.write_case_csv(tmp_path / "c.csv", ["x", "y"], rows, NAMES)
    names, per = M.read_case_csv(tmp_path / "c.csv")
    assert names == ["a", "b", "c"] and per["dice"]["b"] == [0.0, 1.0]
    png = M.boxplot({"m1": per, "m2": per}, tmp_path / "box.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_case_metrics_checks_shapes():
    with pytest.raises(ValueError, match=r"\[X, Y, Z\]"):
        M.case_metrics(torch.zeros(4, 4, 4), torch.zeros(4, 4, 5), 2, [1, 1, 1])
