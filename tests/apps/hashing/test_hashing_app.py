"""A tiny train -> evaluate -> index -> search -> infer run through the CLI, and its bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ssmkit.cli import main
from ssmkit.registry import list_apps
from ssmkit_apps.hashing.index import HashIndex, load_index, save_index
from ssmkit_apps.hashing.scenes import make_split_scenes

TINY = ["model.name=prompthash_tiny", "data.image_size=32", "data.max_tokens=12", "data.n_train=48", "data.n_val=6",
        "data.n_val_db=12", "data.n_query=6", "data.n_db=12", "train.batch_size=16", "train.max_steps=2",
        "train.log_every=1", "model.bits=[16, 32]", "model.aux_bits=96"]


def _sets(items):
    return [a for kv in items for a in ("--set", kv)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["hashing", "train", "--quiet", *_sets([*TINY, f"run.root={root}", "run.id=tiny"])]) == 0
    return root / "hashing" / "tiny"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    s = make_split_scenes("test", 5, seed=0, canvas=32, role="query")
    for i, img in enumerate(s.images):
        (folder / ("sub" if i % 2 else "")).mkdir(exist_ok=True)
        Image.fromarray(img).save(folder / ("sub" if i % 2 else "") / f"scene{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def test_app_is_registered():
    assert "hashing" in list_apps()


def test_train_writes_tokenizer_and_evaluate_reports_both_directions(run, capsys):
    state = json.loads((run / "app_state.json").read_text())
    assert state["tokenizer"]["model"]["type"] == "WordLevel" and state["n_classes"] == 10
    assert main(["hashing", "evaluate", "--run", str(run), "--split", "test"]) == 0
    res = json.loads((run / "eval_test.json").read_text())
    for d in ("i2t", "t2i"):
        for b in (16, 32):
            for key in ("map", "map_tie", "p@10", "p@10_tie"):
                assert 0.0 <= res[f"{d}_{key}_{b}"] <= 1.0
    assert 0.0 < res["map_random"] < 1.0 and res["n_queries"] == 6 and res["n_database"] == 12
    assert (run / "plots" / "pr_test.png").stat().st_size > 5000


def test_index_search_and_infer(run, images, tmp_path, capsys):
    idx = tmp_path / "index.ssmh"
    assert main(["hashing", "index", str(images), "--run", str(run), "--out", str(idx), "--bits", "32"]) == 0
    out = capsys.readouterr()
    assert "skipped 1 unreadable image(s): broken.png" in out.err and "indexed 5 images as 32-bit codes" in out.out
    index = load_index(idx)
    assert len(index) == 5 and index.bits == 32 and index.paths[0] == "scene0.png" and "sub/scene1.png" in index.paths
    assert index.extra["skipped"] == ["broken.png"]
    # an existing --out is refused without --overwrite
    assert main(["hashing", "index", str(images), "--run", str(run), "--out", str(idx)]) == 2

    grid = tmp_path / "hits.png"
    assert main(["hashing", "search", "--index", str(idx), "--text", "two sevens and a one", "-k", "3",
                 "--out", str(grid)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("top 3 of 5 images") and out[1] == "rank\tdistance\tpath"
    ranked = [line.split("\t") for line in out[2:5]]
    assert [r[0] for r in ranked] == ["1", "2", "3"] and all(p in index.paths for _, _, p in ranked)
    assert [int(d) for _, d, _ in ranked] == sorted(int(d) for _, d, _ in ranked)
    assert grid.stat().st_size > 3000

    # unknown words only: a warning, and results all the same
    assert main(["hashing", "search", "--index", str(idx), "--text", "xyzzy plugh", "-k", "2"]) == 0
    cap = capsys.readouterr()
    assert "none of the query words ['xyzzy', 'plugh']" in cap.err and cap.out.count("\n") == 4
    # an empty caption is an error (exit 2), naming the flag
    assert main(["hashing", "search", "--index", str(idx), "--text", "   "]) == 2
    assert "--text is empty" in capsys.readouterr().err
    # an image query
    assert main(["hashing", "search", "--index", str(idx), "--image", str(images / "scene0.png"), "-k", "5"]) == 0
    assert "\n1\t0\tscene0.png" in capsys.readouterr().out  # the query itself comes first
    assert main(["hashing", "search", "--index", str(idx), "--image", str(images / "broken.png")]) == 2

    # infer: codes of images and of captions
    codes = tmp_path / "codes.csv"
    assert main(["hashing", "infer", str(images), "--run", str(run), "--out", str(codes), "--bits", "16"]) == 0
    rows = codes.read_text().splitlines()
    assert rows[0] == "item,modality,bits,code" and len(rows) == 6 and rows[1].startswith("scene0.png,image,16,")
    (tmp_path / "caps.txt").write_text("a seven\n\nxyzzy\n")
    assert main(["hashing", "infer", str(tmp_path / "caps.txt"), "--run", str(run)]) == 0
    cap = capsys.readouterr()
    assert "skipped 1 empty caption line" in cap.err and "line 3" in cap.err
    assert cap.out.splitlines()[1].startswith("line 1,text,32,") and len(cap.out.splitlines()[1].split(",")[3]) == 16


def test_index_that_does_not_fit_the_model_is_refused(run, images, tmp_path, capsys):
    idx = tmp_path / "index.ssmh"
    assert main(["hashing", "index", str(images), "--run", str(run), "--out", str(idx)]) == 0
    good = load_index(idx)
    # another code length than the model serves
    wide = HashIndex(np.zeros((5, 1), np.uint64), 64, good.paths, good.image_root, model=good.model)
    save_index(wide, tmp_path / "wide.ssmh")
    assert main(["hashing", "search", "--index", str(tmp_path / "wide.ssmh"), "--text", "a seven"]) == 2
    assert "holds 64-bit codes, but the model" in capsys.readouterr().err
    # other weights than the run's
    other = HashIndex(good.codes, good.bits, good.paths, good.image_root,
                      model={**good.model, "weights_sha256": "0" * 64})
    save_index(other, tmp_path / "other.ssmh")
    assert main(["hashing", "search", "--index", str(tmp_path / "other.ssmh"), "--text", "a seven"]) == 2
    assert "built with other weights" in capsys.readouterr().err
    # another format version
    meta = json.loads(np.load(idx)["meta"].tobytes())
    meta["version"] = 2
    with open(tmp_path / "v2.ssmh", "wb") as f:
        np.savez(f, codes=good.codes, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    assert main(["hashing", "search", "--index", str(tmp_path / "v2.ssmh"), "--text", "a seven"]) == 2
    assert "version 2; this ssmkit reads version 1" in capsys.readouterr().err
    # an index built from a chosen checkpoint is searched with that checkpoint by default
    last = tmp_path / "last.ssmh"
    assert main(["hashing", "index", str(images), "--run", str(run), "--ckpt", str(run / "model.safetensors"),
                 "--out", str(last)]) == 0
    assert load_index(last).model["ckpt"].endswith("model.safetensors")
    assert main(["hashing", "search", "--index", str(last), "--text", "a seven", "-k", "1"]) == 0
    capsys.readouterr()
    # no images at all
    (tmp_path / "empty").mkdir()
    empty = ["hashing", "index", str(tmp_path / "empty"), "--run", str(run), "--out", str(tmp_path / "e.ssmh")]
    assert main(empty) == 2
    assert "holds no image files" in capsys.readouterr().err


def test_bad_config_and_missing_dataset(tmp_path, capsys):
    assert main(["hashing", "train", "--set", "data.source=mirflickr25k"]) == 2
    assert "needs data.root" in capsys.readouterr().err
    assert main(["hashing", "train", "--set", "model.bits=[16, 16]"]) == 2
    assert main(["hashing", "train", "--set", f"run.root={tmp_path}", "--set", "data.source=mscoco",
                 "--set", f"data.root={tmp_path / 'nope'}"]) == 2
    assert "Expected layout" in capsys.readouterr().err


def test_compare_trains_both_models_and_tabulates_them(tmp_path, capsys):
    sets = _sets([kv for kv in TINY if not kv.startswith("model.name=")])
    out, runs = tmp_path / "cmp", tmp_path / "runs"
    argv = ["hashing", "compare", "--quiet", "--out", str(out), "--run-root", str(runs),
            "--models", "prompthash_tiny,dcmh", *sets]
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    for row in ("| prompthash_tiny | image -> text |", "| dcmh | text -> image |"):
        assert row in report
    assert "prompthash_tiny above dcmh in mAP@all at every code length in both directions: " in report
    res = json.loads((out / "results.json").read_text())
    assert {m: str(runs / "hashing" / m) for m in ("prompthash_tiny", "dcmh")} == res["runs"]
    assert 0.0 <= res["test"]["disjoint"]["dcmh"]["t2i_map_32"] <= 1.0
    assert (out / "pr_disjoint.png").stat().st_size > 5000
    assert main([*argv[:-len(sets)], "--protocols", "papers"]) == 2
    assert "unknown protocol 'papers'" in capsys.readouterr().err
