"""A tiny train -> evaluate -> infer run through the CLI, and the app's input and output errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ssmkit.cli import main
from ssmkit.engine.commands import app_config
from ssmkit.engine.config import ConfigError
from ssmkit.registry import list_apps
from ssmkit_apps.crack.app import CrackApp

TINY = ["data.image_size=32", "data.n_train=8", "data.n_val=4", "data.n_test=4", "train.batch_size=4",
        "train.max_steps=2", "train.log_every=1", "eval.figure_rows=2"]


def _sets(pairs):
    return [a for p in pairs for a in ("--set", p)]


def test_train_evaluate_infer_through_the_cli(tmp_path, capsys):
    assert "crack" in list_apps()
    root = tmp_path / "runs"
    assert main(["crack", "train", "--quiet", *_sets([*TINY, f"run.root={root}", "run.id=scs"])]) == 0
    run = root / "crack" / "scs"
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in val if r["split"] == "val"][-1]
    assert 0.0 <= val["threshold"] <= 0.99 and 0.0 <= val["ods"] <= 1.0
    assert (run / "plots" / "grid_val.png").stat().st_size > 5_000 and "grid_val.png" in (run / "report.md").read_text()

    assert main(["crack", "evaluate", "--run", str(run)]) == 0
    test = json.loads((run / "eval_test.json").read_text())
    for k in ("ods", "ois", "miou", "ap", "precision", "recall", "f1", "image_f1", "baseline_ods", "baseline_f1"):
        assert 0.0 <= test[k] <= 1.0, k
    # the test split is scored at the threshold chosen on validation, stored with the weights
    from ssmkit.engine.checkpoint import load_weights

    best = load_weights(run / "checkpoints" / "best.safetensors")
    assert test["threshold"] == pytest.approx(float(best["threshold"]))
    assert (run / "plots" / "pr_test.png").is_file() and (run / "plots" / "grid_test.png").is_file()

    # infer on a folder: a bad file is reported and skipped, the others are written
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 70, 3)) * 255).astype(np.uint8)).save(photos / "wall.jpg")
    Image.fromarray((rng.random((20, 30)) * 255).astype(np.uint8)).save(photos / "grey.png")
    Image.fromarray((rng.random((20, 30, 4)) * 255).astype(np.uint8)).save(photos / "alpha.png")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (photos / "readme.txt").write_text("ignored")
    out = tmp_path / "masks"
    capsys.readouterr()
    assert main(["crack", "infer", str(photos), "--run", str(run), "--out", str(out)]) == 0
    io = capsys.readouterr()
    assert "broken.png" in io.err and "skipped 1 unreadable" in io.out
    mask = np.asarray(Image.open(out / "wall_mask.png"))
    assert mask.shape == (40, 70) and set(np.unique(mask)) <= {0, 255}  # tiled: 70 px > 32 px tiles
    assert np.asarray(Image.open(out / "wall_overlay.png")).shape == (40, 70, 3)
    assert {p.name for p in out.iterdir()} == {f"{s}_{k}.png" for s in ("wall", "grey", "alpha")
                                              for k in ("mask", "overlay")}

    # the output may not overwrite an existing folder without --overwrite, nor lie in the input
    assert main(["crack", "infer", str(photos), "--run", str(run), "--out", str(out)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert main(["crack", "infer", str(photos), "--run", str(run), "--out", str(photos / "out")]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["crack", "infer", str(empty), "--run", str(run), "--out", str(tmp_path / "o2")]) == 2
    assert "holds no images" in capsys.readouterr().err


def test_unet_baseline_runs_through_the_same_commands(tmp_path):
    root = tmp_path / "runs"
    ov = [*TINY, "model.name=unet", f"run.root={root}", "run.id=unet", "eval.baseline=false"]
    assert main(["crack", "train", "--quiet", *_sets(ov)]) == 0
    assert main(["crack", "evaluate", "--run", str(root / "crack" / "unet")]) == 0
    test = json.loads((root / "crack" / "unet" / "eval_test.json").read_text())
    assert "ods" in test and "baseline_ods" not in test


def test_data_section_is_checked_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="data.format=cfd needs data.root=DIR"):
        app_config(CrackApp, None, ["data.format=cfd"])
    with pytest.raises(ConfigError, match="set data.format to one of crackscf"):
        app_config(CrackApp, None, [f"data.root={tmp_path}"])
    with pytest.raises(ConfigError, match="expected 'embedded'"):
        app_config(CrackApp, None, ["data.format=crack600"])
    with pytest.raises(ConfigError, match=r"data.image_size=8 is out of range; expected >= 16"):
        app_config(CrackApp, None, ["data.image_size=8"])


@pytest.mark.slow
def test_comparison_writes_its_table_and_figures(tmp_path):
    from ssmkit_apps.crack.compare import main as compare

    out = tmp_path / "cmp"
    assert compare(["--out", str(out), "--runs", str(tmp_path / "runs"), "--quiet",
                    *_sets(["data.image_size=32", "data.n_train=8", "data.n_val=4", "data.n_test=4",
                            "train.batch_size=4", "train.max_steps=1"])]) == 0
    table = (out / "compare.md").read_text()
    assert all(f"| {m} |" in table for m in ("SCSegamba", "U-Net", "darkness baseline"))
    assert (out / "pr_test.png").is_file() and (out / "grid_test.png").is_file()
    results = json.loads((out / "compare.json").read_text())["results"]
    assert set(results) == {"scsegamba", "unet", "darkness"}
