"""`ssmkit medseg compare`'s table: one row per model, per-class Dice and HD95, n/a for undefined."""

from __future__ import annotations

from ssmkit_apps.medseg.compare import comparison_markdown


def _result(dice_a: float, hd_b: float) -> dict:
    test = {"dice": 0.5, "dice_strict": 0.6, "hd95": 3.0, "hd95_strict": 9.0, "hd95_missed": 2.0,
            "dice/a": dice_a, "dice/b": 0.25, "hd95/a": 1.5, "hd95/b": hd_b}
    return {"params": 1_500_000, "train_seconds": 61.4, "test": test}


def test_comparison_table_has_a_row_per_model_and_per_class():
    md = comparison_markdown({"mambaclinix": _result(0.75, float("nan")), "unet": _result(0.5, 4.25)},
                             ["background", "a", "b"])
    lines = md.splitlines()
    assert "| mambaclinix | 1.50 | 61 | **0.500** | 0.600 | 3.00 | 9.00 | 2 |" in lines
    assert lines[0].startswith("| model | params (M) |") and sum(line.startswith("| unet |") for line in lines) == 1
    assert "| class | mambaclinix Dice | unet Dice | mambaclinix HD95 | unet HD95 |" in lines
    assert "| a | 0.750 | 0.500 | 1.50 | 1.50 |" in lines
    assert "| b | 0.250 | 0.250 | n/a | 4.25 |" in lines  # no HD95 when the class was never predicted
    assert not any(line.startswith("| background |") for line in lines)
