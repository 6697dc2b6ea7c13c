"""The Colin27 -> MNI152 task: the AAL grouping is a partition and the writer's layout loads."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from ssmkit_apps.medseg.brain_task import CLASSES, REGIONS, mni152_path, region_lut, write_brain_task
from ssmkit_apps.medseg.dataset import check_case_headers, read_dataset


def test_every_aal_label_falls_in_exactly_one_region():
    lut, names = region_lut()
    assert len(names) == 116
    assert set(lut[1:].tolist()) == set(range(1, len(REGIONS) + 1))
    assert names[37] == "Hippocampus_L" and CLASSES[lut[37]] == "limbic_insula"
    assert CLASSES[lut[71]] == "deep_grey" and CLASSES[lut[91]] == "cerebellum"
    assert mni152_path().name.startswith("mni_icbm152_t1")


def test_writer_produces_a_loadable_task(tmp_path):
    root = write_brain_task(tmp_path / "brain", spacing=8.0, variants=1)
    spec = read_dataset(root)
    assert [c.name for c in spec.training] == ["colin27", "colin27v1"] and [c.name for c in spec.test] == ["mni152"]
    assert spec.class_names == list(CLASSES) and spec.channel_names == ("T1",)
    for case in (*spec.training, *spec.test):
        affine, shape = check_case_headers(case, 1)  # labels on their image's grid
        assert np.allclose(np.abs(np.diag(affine)[:3]), 8.0)
    test_lab = np.asarray(nib.load(spec.test[0].label).dataobj)
    train_lab = np.asarray(nib.load(spec.training[0].label).dataobj)
    # every region survives the resampling on both grids, in similar proportions (same MNI space)
    for k in range(1, len(CLASSES)):
        a, b = (train_lab == k).sum(), (test_lab == k).sum()
        assert a > 0 and b > 0 and 0.5 < a / b < 2.0, (CLASSES[k], a, b)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["regions"]["cerebellum"] == ["Cerebelum_", "Vermis_"]
