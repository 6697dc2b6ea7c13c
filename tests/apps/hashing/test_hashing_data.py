"""The digit-scene composer, the .mat loaders and split, the tokenizer and the index file."""

from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pytest
import scipy.io
from PIL import Image

from ssmkit.errors import DataError
from ssmkit_apps.hashing import scenes
from ssmkit_apps.hashing.data import PairDataset, digit_parts, mat_parts, split_dataset, train_tokenizer
from ssmkit_apps.hashing.hamming import pack_codes
from ssmkit_apps.hashing.index import HashIndex, load_index, save_index
from ssmkit_apps.hashing.mat import read_corpus, safe_relative, split_indices
from ssmkit_apps.hashing.text import UNK, CaptionTokenizer


def test_scene_composer_is_deterministic_and_well_formed():
    a = scenes.make_split_scenes("train", 40, seed=3, canvas=48)
    b = scenes.make_split_scenes("train", 40, seed=3, canvas=48)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions and np.array_equal(a.labels, b.labels)
    c = scenes.make_split_scenes("train", 40, seed=4, canvas=48)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (40, 48, 48, 3) and a.images.dtype == np.uint8
    n_digits = (a.digit_ids >= 0).sum(1)
    assert n_digits.min() >= 1 and n_digits.max() <= 4
    # every labelled class comes from a placed digit of that class, and vice versa
    _, classes = scenes.load_digit_images()
    for i in range(40):
        used = {int(classes[j]) for j in a.digit_ids[i] if j >= 0}
        assert used == set(np.flatnonzero(a.labels[i]).tolist())
    assert len(set(a.captions)) > 20  # varied templates, not one sentence
    assert scenes.make_split_scenes("test", 3, seed=0, canvas=60).images.shape[1:] == (60, 60, 3)


def test_splits_never_share_a_source_digit_image():
    _, classes = scenes.load_digit_images()
    pools = scenes.digit_pools(classes, seed=0)
    assert sum(len(p) for p in pools.values()) == len(classes)
    assert not set(pools["train"]) & set(pools["test"]) and not set(pools["train"]) & set(pools["val"])
    assert not set(pools["val"]) & set(pools["test"])
    used = {s: set(scenes.make_split_scenes(s, 150, seed=0).digit_ids.ravel()) - {-1} for s in scenes.POOLS}
    assert used["train"] <= set(pools["train"]) and used["test"] <= set(pools["test"])
    assert not used["train"] & used["test"] and not used["val"] & used["test"]
    # query and database scenes of one split are different scenes
    q = scenes.make_split_scenes("test", 20, 0, role="query")
    d = scenes.make_split_scenes("test", 20, 0, role="database")
    assert not np.array_equal(q.images, d.images)


def test_protocols_differ_only_in_the_test_database():
    honest = digit_parts(30, 5, 10, 6, 12, seed=0, protocol="disjoint")
    standard = digit_parts(30, 5, 10, 6, 12, seed=0, protocol="standard")
    assert len(honest["test_db"]) == 12 and len(standard["test_db"]) == 12 + 30
    assert np.array_equal(standard["test_db"].images[12:], honest["train"].images)


def test_tokenizer_unknown_words_and_json_round_trip():
    tok = CaptionTokenizer.train(["a three next to two sevens", "digits: 1, 4"], max_len=8)
    ids, unk = tok.encode(["two sevens and a one", "xyzzy plugh", ""])
    assert ids.shape == (3, 8) and unk.tolist() == [2, 2, 0]
    assert ids[1, 1] == UNK and ids[1, 2] == UNK
    again = CaptionTokenizer.from_json(json.loads(json.dumps(tok.to_json())), 8)
    assert np.array_equal(again.encode(["digits: 1"])[0], tok.encode(["digits: 1"])[0])
    with pytest.raises(ValueError, match="not a valid tokenizers JSON"):
        CaptionTokenizer.from_json("{}", 8)


def _write_fixture(root, n=12, paths=None, captions=None, labels=None, cell=True):
    """A tiny dataset in the .mat layout, written with scipy.io like the field's files."""
    img = root / "images"
    img.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = paths or [f"sub/im{i}.jpg" for i in range(n)]
    for p in paths:
        f = img / p
        if ".." not in p and not p.startswith("/"):
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(f)
    captions = captions or [f"tag{i % 3} word{i % 5}" for i in range(n)]
    labels = labels if labels is not None else np.eye(4, dtype=np.uint8)[np.arange(n) % 4]
    to_cell = (lambda xs: np.array(xs, dtype=object).reshape(-1, 1)) if cell else np.array
    scipy.io.savemat(root / "index.mat", {"index": to_cell(paths)})
    scipy.io.savemat(root / "caption.mat", {"caption": to_cell(captions)})
    scipy.io.savemat(root / "label.mat", {"category": labels})
    return root


@pytest.mark.parametrize("cell", [True, False])
def test_mat_fixture_loads(tmp_path, cell):
    _write_fixture(tmp_path, cell=cell)
    c = read_corpus(tmp_path)
    assert len(c) == 12 and c.paths[0] == "sub/im0.jpg" and c.captions[1] == ["tag1 word1"]
    assert c.labels.shape == (12, 4) and c.labels.dtype == np.uint8
    parts = mat_parts(c, seed=0, n_query=2, n_train=4, n_val=2, n_val_db=2)
    tok = train_tokenizer(parts["train"], 100, 1, 6)
    ds = split_dataset(parts, "test", tok, image_size=16)
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["tokens"].shape == (6,) and item["role"] == 1
    assert ds.roles.tolist() == [1, 1, 2, 2]


def test_mat_multi_caption_items_and_bag_of_tags(tmp_path):
    caps = np.empty((3, 1), dtype=object)
    for i in range(3):
        caps[i, 0] = np.array([f"a cat {i}", f"the dog {i}"], dtype=object).reshape(-1, 1)
    _write_fixture(tmp_path, n=3, captions=["x"] * 3)
    scipy.io.savemat(tmp_path / "caption.mat", {"caption": caps})
    assert read_corpus(tmp_path).captions[2] == ["a cat 2", "the dog 2"]
    scipy.io.savemat(tmp_path / "caption.mat", {"YAll": np.array([[0, 1, 1], [1, 0, 0], [0, 0, 1]])})
    assert read_corpus(tmp_path).captions[0] == ["t1 t2"]


@pytest.mark.parametrize("bad", ["../escape.jpg", "/etc/passwd", "sub/../../x.jpg", "C:\\data\\x.jpg"])
def test_paths_escaping_the_image_root_are_refused(tmp_path, bad):
    _write_fixture(tmp_path, n=3, paths=["a.jpg", bad, "b.jpg"])
    with pytest.raises(DataError, match="item 1"):
        read_corpus(tmp_path)
    assert safe_relative("/abs/dir/x.jpg", basename_only=True) == "x.jpg"


def test_symlink_out_of_the_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    _write_fixture(tmp_path / "ds", n=2, paths=["a.jpg", "link/b.jpg"])
    (tmp_path / "ds" / "images" / "link").rename(tmp_path / "gone")
    (tmp_path / "ds" / "images" / "link").symlink_to(outside)
    with pytest.raises(DataError, match="outside the image root"):
        read_corpus(tmp_path / "ds")


def test_mat_drops_and_reports_bad_items(tmp_path):
    labels = np.eye(4, dtype=np.uint8)[np.arange(6) % 4]
    labels[5] = 0
    _write_fixture(tmp_path, n=6, captions=["a", "", "c", "d", "e", "f"], labels=labels)
    (tmp_path / "images" / "sub" / "im3.jpg").unlink()
    (tmp_path / "images" / "sub" / "im4.jpg").write_bytes(b"<html>not found</html>")
    with pytest.warns(UserWarning, match=r"1 with an empty caption.*1 without any label.*1 whose image is missing"
                                         r".*1 whose image file cannot be read as an image \(e.g. \['sub/im4.jpg'\]"):
        c = read_corpus(tmp_path)
    assert c.paths == ["sub/im0.jpg", "sub/im2.jpg"]


def test_mat_errors_name_the_file(tmp_path):
    _write_fixture(tmp_path, n=4)
    scipy.io.savemat(tmp_path / "label.mat", {"category": np.full((4, 2), 2)})
    with pytest.raises(DataError, match=r"label.mat.*multi-hot 0/1"):
        read_corpus(tmp_path)
    scipy.io.savemat(tmp_path / "label.mat", {"something": np.ones((4, 2))})
    with pytest.raises(DataError, match=r"label.mat.*expected one of \['category'"):
        read_corpus(tmp_path)
    scipy.io.savemat(tmp_path / "label.mat", {"category": np.ones((3, 2))})
    with pytest.raises(DataError, match="4 images, caption.mat 4 captions, label.mat 3 label rows"):
        read_corpus(tmp_path)
    with pytest.raises(DataError, match="Expected layout"):
        read_corpus(tmp_path / "missing")


def test_split_is_fixed_by_seed_and_protocol_is_explicit():
    a = split_indices(100, 0, 10, 40, 5, 15)
    b = split_indices(100, 0, 10, 40, 5, 15)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test_query"], split_indices(100, 1, 10, 40, 5, 15)["test_query"])
    groups = [set(a[k].tolist()) for k in ("test_query", "train", "val_query", "val_db", "test_db")]
    assert sum(len(g) for g in groups) == 100 and len(set().union(*groups)) == 100
    std = split_indices(100, 0, 10, 40, 5, 15, protocol="standard")
    assert set(std["test_db"].tolist()) == set(range(100)) - set(a["test_query"].tolist())
    with pytest.raises(DataError, match="lower data.n_query"):
        split_indices(50, 0, 10, 40, 5, 15)


def test_index_round_trip_and_refusals(tmp_path):
    codes = pack_codes(np.random.default_rng(0).standard_normal((5, 64)))
    idx = HashIndex(codes, 64, [f"{i}.png" for i in range(5)], image_root=str(tmp_path),
                    model={"name": "prompthash", "bits": [16, 32, 64]})
    path = save_index(idx, tmp_path / "index.ssmh")
    assert path.name == "index.ssmh" and not list(tmp_path.glob(".*tmp*"))
    back = load_index(path)
    assert np.array_equal(back.codes, codes) and back.paths == idx.paths and back.bits == 64
    assert back.model["bits"] == [16, 32, 64]

    # an archive holding a pickled object array is refused, not unpickled
    with open(tmp_path / "evil.ssmh", "wb") as f:
        np.savez(f, codes=np.array([object()], dtype=object), meta=np.zeros(1, np.uint8))
    with pytest.raises(DataError, match="unpickling"):
        load_index(tmp_path / "evil.ssmh")
    # a newer version, a truncated file, a foreign archive
    meta = json.loads(np.load(path)["meta"].tobytes())
    meta["version"] = 99
    with open(tmp_path / "v99.ssmh", "wb") as f:
        np.savez(f, codes=codes, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(DataError, match="version 99; this ssmkit reads version 1"):
        load_index(tmp_path / "v99.ssmh")
    (tmp_path / "cut.ssmh").write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="not a readable index"):
        load_index(tmp_path / "cut.ssmh")
    with zipfile.ZipFile(tmp_path / "other.ssmh", "w") as z:
        z.writestr("x.npy", b"")
    with pytest.raises(DataError):
        load_index(tmp_path / "other.ssmh")


def test_pair_dataset_items():
    parts = digit_parts(8, 2, 3, 2, 3, seed=0)
    tok = train_tokenizer(parts["train"], 200, 1, 12)
    ds = split_dataset(parts, "train", tok, 48)
    assert isinstance(ds, PairDataset) and len(ds) == 8
    it = ds[3]
    assert it["image"].shape == (3, 48, 48) and it["label"].shape == (10,) and it["role"] == 0
    assert int(it["tokens"][0]) == 2  # [CLS]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(split_dataset(parts, "val", tok, 48)) == 5


def test_recomposed_training_scenes_follow_torch_seed():
    import torch

    from ssmkit_apps.hashing.scenes import split_composer

    parts = digit_parts(8, 2, 3, 2, 3, seed=0)
    tok = train_tokenizer(parts["train"], 200, 1, 20)
    ds = split_dataset(parts, "train", tok, 48, composer=split_composer("train", 0, 48))
    torch.manual_seed(5)
    a = [ds[0]["image"] for _ in range(2)]
    torch.manual_seed(5)
    b = ds[0]["image"]
    assert torch.equal(a[0], b) and not torch.equal(a[0], a[1])  # fresh each draw, replayable by seed
