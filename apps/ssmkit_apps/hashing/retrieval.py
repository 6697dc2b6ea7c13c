"""The hashing app's own commands: ``index`` (images -> .ssmh), ``search`` (text or image query ->
ranked hits and a PNG grid) and ``infer`` (codes of images or captions as CSV).

An index remembers which model made it (name, code lengths, the SHA-256 of the weights and the
run folder). ``search`` encodes the query with that run's model and refuses an index whose code
length, format version or weights do not match, because codes of two models are not comparable.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ssmkit.engine.app import EvalContext
from ssmkit.engine.files import atomic_write_text, check_output, sha256_file, sidecar_path
from ssmkit.errors import DataError
from ssmkit_apps.hashing.data import to_tensor
from ssmkit_apps.hashing.hamming import pack_codes, topk
from ssmkit_apps.hashing.index import HashIndex, load_index, save_index
from ssmkit_apps.hashing.mat import inside_root, read_image

if TYPE_CHECKING:
    from ssmkit_apps.hashing.app import HashingApp

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    if command == "infer":
        parser.add_argument("input", metavar="INPUT",
                            help="an image, a folder of images, or a .txt file with one caption per line")
        parser.add_argument("--out", metavar="CSV", help="write the codes here (default: print them)")
        parser.add_argument("--bits", type=int, help="code length (default: the longest the model serves)")
    elif command == "index":
        parser.add_argument("images", metavar="IMAGES_DIR", help="folder of images (searched recursively)")
        parser.add_argument("--out", required=True, metavar="INDEX", help="the index file to write, e.g. index.ssmh")
        parser.add_argument("--bits", type=int, help="code length (default: the longest the model serves)")
        parser.add_argument("--batch-size", dest="batch_size", type=int, default=64, help="images per forward pass")
    elif command == "search":
        parser.add_argument("--index", required=True, metavar="INDEX", help="an index built by `ssmkit hashing index`")
        query = parser.add_mutually_exclusive_group(required=True)
        query.add_argument("--text", help="a caption to search images for")
        query.add_argument("--image", metavar="FILE", help="an image to search similar images for")
        parser.add_argument("-k", "--top", dest="k", type=int, default=10, help="how many hits (default 10)")
        parser.add_argument("--out", metavar="PNG", help="write a grid of the query and its hits here")
        parser.add_argument("--run", metavar="RUN_DIR",
                            help="the run that encodes the query (default: the index's run)")
        parser.add_argument("--ckpt", metavar="FILE", help="weights of that run (default: its best)")


# ------------------------------------------------------ run, code length, image listing, encoding


def _require_run(args: argparse.Namespace, command: str) -> Path:
    if not getattr(args, "run", None):
        raise DataError(f"`ssmkit hashing {command}` needs --run RUN_DIR: the run's tokenizer and image size "
                        "live in its folder (add --ckpt to choose other weights of that run)")
    return Path(args.run)


def weights_identity(run: str | Path, ckpt: str | Path | None) -> str:
    """SHA-256 of the weights a run/ckpt pair resolves to (from the checksum file when present)."""
    from ssmkit.engine.commands import weights_for

    path = weights_for(run, ckpt)
    side = sidecar_path(path)
    if side.is_file():
        try:
            return str(json.loads(side.read_text())["sha256"])
        except (ValueError, KeyError):
            pass
    return sha256_file(path) if path.is_file() else ""


def _bits(model: torch.nn.Module, requested: int | None) -> int:
    served = list(model.bits)
    bits = max(served) if requested is None else int(requested)
    if bits not in served:
        raise DataError(f"--bits {bits}: the model serves {served}-bit codes")
    return bits


def list_images(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files under ``root`` (sorted, recursive) and the ones refused (path, reason)."""
    files, refused = [], []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        try:
            inside_root(root, rel)
        except ValueError as err:
            refused.append((rel, str(err)))
            continue
        files.append(p)
    return files, refused


@torch.no_grad()
def encode_images(model, images: list[np.ndarray], bits: int, ctx: EvalContext, batch_size: int = 64) -> np.ndarray:
    """Relaxed codes [N, bits] of RGB uint8 images [H, W, 3]."""
    out = []
    for s in range(0, len(images), batch_size):
        x = ctx.to_device(to_tensor(np.stack(images[s:s + batch_size])))
        with ctx.autocast():
            out.append(model.encode_image(x)[bits].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, bits), np.float32)


@torch.no_grad()
def encode_texts(model, tokens: np.ndarray, bits: int, ctx: EvalContext, batch_size: int = 256) -> np.ndarray:
    out = []
    for s in range(0, len(tokens), batch_size):
        t = ctx.to_device(torch.from_numpy(tokens[s:s + batch_size]))
        with ctx.autocast():
            out.append(model.encode_text(t)[bits].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, bits), np.float32)


def _warn(msg: str) -> None:
    print(f"ssmkit: warning: {msg}", file=sys.stderr, flush=True)


def check_query_text(app: HashingApp, text: str) -> np.ndarray:
    """Token ids [1, L] of a query caption; an empty caption is an error, one made only of words
    the training captions never held gets a warning (its results carry no meaning)."""
    if not text or not text.strip():
        raise DataError("--text is empty; give a caption, e.g. --text \"two sevens and a one\"")
    tok = app.tokenizer
    words = tok.words(text)
    if not words:
        raise DataError(f"--text {text!r} holds no words")
    ids, unknown = tok.encode([text])
    vocab = tok.tok.get_vocab()
    unseen = [w for w in words if w not in vocab]
    if int(unknown[0]) == len(words) or len(unseen) == len(words):
        _warn(f"none of the query words {words[:8]} is in the model's vocabulary ({tok.vocab_size} words from the "
              "training captions); the ranking below is not informed by the query")
    elif unseen:
        _warn(f"query words not in the vocabulary are ignored: {unseen[:8]}")
    return ids


# --------------------------------------------------------------------------------- index


def build_index(app: HashingApp, model, args: argparse.Namespace, ctx: EvalContext) -> int:
    run = _require_run(args, "index")
    root = Path(args.images).expanduser()
    if not root.is_dir():
        raise DataError(f"IMAGES_DIR {str(root)!r} is not a folder of images")
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1; got {args.batch_size}")
    bits = _bits(model, args.bits)
    out = check_output(args.out, inputs=[root], overwrite=args.overwrite)
    files, skipped = list_images(root)
    if not files:
        raise DataError(f"{str(root)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    size = app.cfg.data.image_size
    codes, paths = [], []
    batch: list[np.ndarray] = []
    names: list[str] = []

    def flush() -> None:
        if batch:
            codes.append(encode_images(model, batch, bits, ctx, len(batch)))
            paths.extend(names)
            batch.clear()
            names.clear()

    for f in files:
        rel = f.relative_to(root).as_posix()
        try:
            batch.append(read_image(f, size))
            names.append(rel)
        except DataError as err:
            skipped.append((rel, str(err).split("(", 1)[-1].rstrip(")")))
            continue
        if len(batch) >= args.batch_size:
            flush()
    flush()
    if skipped:
        shown = "; ".join(f"{p} ({why})" for p, why in skipped[:5])
        _warn(f"skipped {len(skipped)} unreadable image(s): {shown}" + (" ..." if len(skipped) > 5 else ""))
    if not paths:
        raise DataError(f"none of the {len(files)} image files under {str(root)!r} could be read")
    packed = pack_codes(np.concatenate(codes))
    ckpt = getattr(args, "ckpt", None)
    identity = {"name": getattr(model, "name", ""), "bits": list(model.bits), "run": str(run.resolve()),
                "ckpt": str(Path(ckpt).resolve()) if ckpt else "", "weights_sha256": weights_identity(run, ckpt),
                "image_size": size}
    index = HashIndex(packed, bits, paths, image_root=str(root.resolve()), model=identity,
                      extra={"skipped": [p for p, _ in skipped]})
    save_index(index, out)
    print(f"indexed {len(paths)} images as {bits}-bit codes into {out} ({out.stat().st_size} bytes)"
          + (f"; skipped {len(skipped)}" if skipped else ""))
    return 0


# -------------------------------------------------------------------------------- search


def _check_index_fits(index: HashIndex, model, run: Path, ckpt: str | None, path: str) -> None:
    served = list(model.bits)
    if index.bits not in served:
        raise DataError(f"index {path!r} holds {index.bits}-bit codes, but the model of run {str(run)!r} serves "
                        f"{served}-bit codes; rebuild the index with this run or search with the index's run")
    name = index.model.get("name")
    if name and name != getattr(model, "name", name):
        raise DataError(f"index {path!r} was built by model {name!r}; run {str(run)!r} holds {model.name!r}")
    want = index.model.get("weights_sha256")
    have = weights_identity(run, ckpt)
    if want and have and want != have:
        raise DataError(f"index {path!r} was built with other weights (SHA-256 {want[:12]}...) than {str(run)!r} "
                        f"loads ({have[:12]}...); codes of different weights are not comparable: rebuild the index "
                        "or pass the --run/--ckpt it was built with")


def search(app: HashingApp, args: argparse.Namespace) -> int:
    from ssmkit.engine.commands import load_app_model

    if args.k < 1:
        raise DataError(f"-k must be >= 1; got {args.k}")
    index = load_index(args.index)
    run = Path(args.run) if args.run else Path(index.model.get("run", ""))
    if not str(run) or not run.is_dir():
        raise DataError(f"index {args.index!r} names run {str(run)!r}, which is not a folder here; pass --run RUN_DIR")
    # Without --run, the index's own weights (its run, and the checkpoint it was built with).
    ckpt = args.ckpt or (None if args.run else index.model.get("ckpt") or None)
    app, model, ctx = load_app_model(type(app), run, ckpt, args.config, args.set)
    _check_index_fits(index, model, run, ckpt, args.index)
    out = None
    if args.out:
        inputs = [args.index, *([args.image] if args.image else [])]
        out = check_output(args.out, inputs=inputs, overwrite=args.overwrite)
    if args.text is not None:
        ids = check_query_text(app, args.text)
        code = encode_texts(model, ids, index.bits, ctx)
        query_desc = f"text {args.text!r}"
        query_img = None
    else:
        query_img = read_image(args.image, app.cfg.data.image_size)
        code = encode_images(model, [query_img], index.bits, ctx)
        query_desc = f"image {args.image}"
    idx, dist = topk(pack_codes(code), index.codes, args.k)
    hits = [(int(i), int(d), index.paths[int(i)]) for i, d in zip(idx[0], dist[0])]
    print(f"top {len(hits)} of {len(index)} images for {query_desc} ({index.bits}-bit Hamming distance):")
    print("rank\tdistance\tpath")
    for r, (_, d, p) in enumerate(hits, 1):
        print(f"{r}\t{d}\t{p}")
    if out is not None:
        grid(out, hits, Path(index.image_root), query_desc, query_img, app.cfg.data.image_size)
        print(f"wrote {out}")
    return 0


def grid(path: Path, hits: list[tuple[int, int, str]], root: Path, query_desc: str, query_img: np.ndarray | None,
         size: int, cols: int = 6) -> Path:
    """A PNG: the query (its image, or its text) then each hit with its rank and distance."""
    from ssmkit.engine.report import pyplot, save_figure

    plt = pyplot()
    n = len(hits) + 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    q = axes[0, 0]
    if query_img is not None:
        q.imshow(query_img)
        q.set_title("query", fontsize=8)
    else:
        q.text(0.5, 0.5, query_desc.replace("text ", "", 1), ha="center", va="center", fontsize=8, wrap=True)
        q.set_title("query text", fontsize=8)
    for j, (_, d, rel) in enumerate(hits, 1):
        ax = axes[j // cols, j % cols]
        try:
            ax.imshow(read_image(inside_root(root, rel), size))
        except (DataError, ValueError):
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
        ax.set_title(f"#{j} d={d}\n{Path(rel).name[:18]}", fontsize=7)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------- infer


def infer(app: HashingApp, model, args: argparse.Namespace, ctx: EvalContext) -> int:
    """Codes of an image, a folder of images, or a .txt of captions (one per line) as CSV:
    item, modality, bits, code (hex of the packed uint64 words, word 0 first)."""
    _require_run(args, "infer")
    bits = _bits(model, args.bits)
    src = Path(args.input).expanduser()
    rows: list[tuple[str, str, np.ndarray]] = []
    if src.suffix.lower() == ".txt":
        if not src.is_file():
            raise DataError(f"INPUT {str(src)!r} does not exist")
        lines = src.read_text(encoding="utf-8", errors="replace").splitlines()
        texts = [(i + 1, t) for i, t in enumerate(lines) if t.strip()]
        if len(texts) < len(lines):
            _warn(f"{src.name}: skipped {len(lines) - len(texts)} empty caption line(s)")
        if not texts:
            raise DataError(f"{str(src)!r} holds no caption (one per line expected)")
        ids, unknown = app.tokenizer.encode([t for _, t in texts])
        for (line, t), u in zip(texts, unknown):
            if u and u == len(app.tokenizer.words(t)):
                _warn(f"{src.name} line {line}: no word of {t[:40]!r} is in the vocabulary")
        codes = encode_texts(model, ids, bits, ctx)
        rows = [(f"line {line}", "text", c) for (line, _), c in zip(texts, codes)]
    else:
        if src.is_dir():
            files, skipped = list_images(src)
            base = src
        elif src.is_file():
            files, skipped, base = [src], [], src.parent
        else:
            raise DataError(f"INPUT {str(src)!r} does not exist; expected an image, a folder or a .txt of captions")
        images, names = [], []
        for f in files:
            try:
                images.append(read_image(f, app.cfg.data.image_size))
                names.append(f.relative_to(base).as_posix())
            except DataError as err:
                skipped.append((f.name, str(err)))
        if skipped:
            _warn(f"skipped {len(skipped)} unreadable image(s): {', '.join(p for p, _ in skipped[:5])}")
        if not images:
            raise DataError(f"no readable image in {str(src)!r}")
        rows = [(n, "image", c) for n, c in zip(names, encode_images(model, images, bits, ctx))]
    packed = pack_codes(np.stack([c for _, _, c in rows]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["item", "modality", "bits", "code"])
    for (item, mod, _), words in zip(rows, packed):
        w.writerow([item, mod, bits, "".join(f"{int(x):016x}" for x in words)])
    if args.out:
        out = check_output(args.out, inputs=[src], overwrite=args.overwrite)
        atomic_write_text(out, buf.getvalue())
        print(f"wrote {len(rows)} {bits}-bit codes to {out}", file=sys.stderr)
    else:
        sys.stdout.write(buf.getvalue())
    return 0


__all__ = ["IMAGE_SUFFIXES", "add_arguments", "build_index", "check_query_text", "encode_images", "encode_texts",
           "grid", "infer", "list_images", "search", "weights_identity"]
