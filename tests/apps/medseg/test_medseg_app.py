"""A tiny train -> evaluate -> infer run through the CLI, and infer's handling of bad files."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from ssmkit.cli import main

TINY = ["data.phantoms.n_train=3", "data.phantoms.n_test=2", "data.phantoms.shape=[24,24,16]",
        "data.patch_size=[16,16,8]", "data.max_stages=3", "data.samples_per_epoch=2", "model.features=8",
        "model.mamba_stages=1", "model.hg_kernel=3", "model.d_state=4", "train.epochs=1", "train.batch_size=2",
        "infer.overlap=0", "train.warmup_steps=0"]


def _sets(*pairs: str) -> list[str]:
    out = []
    for p in pairs:
        out += ["--set", p]
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["medseg", "train", "--quiet", *_sets(*TINY, f"run.root={root}", "run.id=tiny")]) == 0
    return root, root / "medseg" / "tiny"


def test_train_writes_the_plan_and_evaluate_scores_the_test_split(trained, capsys):
    root, run = trained
    state = json.loads((run / "app_state.json").read_text())
    plan = state["plan"]
    assert plan["spacing"] == [1.0, 1.0, 1.6] and plan["patch_size"] == [16, 16, 8]
    assert plan["class_names"][-1] == "lesion" and plan["windows"][0][0] < plan["windows"][0][1]
    assert (root / "medseg" / ".cache").is_dir()  # the phantoms were generated under the run root
    assert main(["medseg", "evaluate", "--run", str(run), "--split", "test"]) == 0
    res = json.loads((run / "eval_test.json").read_text())
    for k in ("dice", "dice_strict", "hd95", "hd95_strict", "dice/organ_a", "hd95/lesion", "hd95_missed"):
        assert k in res
    assert 0.0 <= res["dice"] <= 1.0 and res["cases"] == 2.0
    assert (run / "plots" / "boxplot_test.png").stat().st_size > 5000
    assert "| organ_a |" in (run / "table_test.md").read_text()
    assert len((run / "per_case_test.csv").read_text().splitlines()) == 1 + 2 * 5


def test_infer_keeps_the_input_grid_and_skips_a_truncated_volume(trained, tmp_path, capsys):
    root, run = trained
    cache = next((root / "medseg" / ".cache").glob("phantoms-*"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    src = sorted((cache / "imagesTs").glob("*.nii.gz"))
    for f in src:
        shutil.copy(f, inputs / f.name)
    (inputs / "broken_0000.nii.gz").write_bytes(src[0].read_bytes()[:600])
    (inputs / "readme.txt").write_text("not a volume")
    out = tmp_path / "out"
    code = main(["medseg", "infer", str(inputs), "--run", str(run), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2  # something was skipped; the rest was written
    assert "skipped broken" in err and "truncated or damaged" in err and "readme.txt" in err
    for f in src:
        name = f.name.replace("_0000.nii.gz", "")
        pred, ref = nib.load(out / f"{name}.nii.gz"), nib.load(f)
        assert np.array_equal(pred.affine, ref.affine) and pred.shape == ref.shape
        assert np.array_equal(pred.header.get_zooms(), ref.header.get_zooms())
        assert pred.get_data_dtype() == np.uint8 and np.asarray(pred.dataobj).max() <= 5
        assert (out / f"{name}_overlay.png").stat().st_size > 5000
    assert not (out / "broken.nii.gz").exists()
    # the same folder again: refused without --overwrite
    assert main(["medseg", "infer", str(inputs), "--run", str(run), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_infer_refuses_a_non_nifti_file(trained, tmp_path, capsys):
    _, run = trained
    f = tmp_path / "scan.png"
    f.write_bytes(b"\x89PNG")
    assert main(["medseg", "infer", str(f), "--run", str(run), "--out", str(tmp_path / "o")]) == 2
    assert "is not a NIfTI file" in capsys.readouterr().err


def test_make_demo_data_writes_the_layout(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["medseg", "make-demo-data", str(out), "--n-train", "2", "--n-test", "1",
                 *_sets("data.phantoms.shape=[16,16,16]")]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and len(list((out / "imagesTr").glob("*.nii.gz"))) == 2
    assert len(list((out / "labelsTs").glob("*.nii.gz"))) == 1
    assert main(["medseg", "make-demo-data", str(out)]) == 2  # not empty: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_a_missing_dataset_root_is_a_clear_error(tmp_path, capsys):
    assert main(["medseg", "train", "--quiet", *_sets(f"data.root={tmp_path}", f"run.root={tmp_path / 'r'}")]) == 2
    assert "dataset.json' is missing" in capsys.readouterr().err
