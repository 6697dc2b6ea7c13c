"""``ssmkit hashing``: cross-modal hashing retrieval (PromptHash and a DCMH-style baseline).

    ssmkit hashing train [--set model.name=dcmh] [--set data.source=mirflickr25k --set data.root=DIR]
    ssmkit hashing evaluate --run runs/hashing/ID [--split test]
    ssmkit hashing index IMAGES_DIR --run runs/hashing/ID --out index.ssmh [--bits 64]
    ssmkit hashing search --index index.ssmh --text "two sevens and a one" [-k 10] [--out hits.png]
    ssmkit hashing search --index index.ssmh --image query.png [-k 10] [--out hits.png]
    ssmkit hashing infer INPUT --run runs/hashing/ID [--out codes.csv]
    ssmkit hashing demo
    ssmkit hashing compare [--out DIR] [--run-root DIR] [--protocols disjoint,standard] [--set train.epochs=25]

Protocol: the tokenizer is built from the training captions only; the checkpoint is chosen by
validation mAP (validation queries against a validation database, both disjoint from test);
the test queries are ranked against a database that, by default, holds no training item
(``data.protocol=standard`` adds the training items, as the papers do). mAP@all and P@k are
reported with ties broken by database order and tie-aware (metrics.py).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ssmkit.engine.app import App, EvalContext, ExtraCommand
from ssmkit.engine.config import AppConfig, bounded
from ssmkit.errors import DataError
from ssmkit.registry import create_model, register_app, select_kwargs
from ssmkit_apps.hashing import data as D
from ssmkit_apps.hashing import mat, scenes
from ssmkit_apps.hashing.hamming import pack_codes
from ssmkit_apps.hashing.losses import dcmh_loss, prompthash_loss
from ssmkit_apps.hashing.metrics import retrieval_metrics
from ssmkit_apps.hashing.text import CaptionTokenizer

DIGIT_DEFAULTS = {"n_train": 3000, "n_query": 500}


@dataclass
class DataConfig:
    """Which pairs to use; see data/hashing.md for the layouts and the protocol."""

    source: Literal["digits", "mirflickr25k", "nuswide", "mscoco", "mat"] = "digits"
    root: str = ""  # .mat sources: the folder with index.mat, caption.mat, label.mat
    image_root: str = ""  # .mat sources: the image folder ("" = <root>/images)
    index_file: str = "index.mat"
    caption_file: str = "caption.mat"
    label_file: str = "label.mat"
    basename_only: bool = False  # keep only file names of index.mat paths (absolute author paths)
    protocol: Literal["disjoint", "standard"] = "disjoint"
    seed: int = 0  # fixes the scenes and every split
    n_train: int = bounded(0, ge=0, doc="0: the source's default (digits 3000 per epoch; .mat presets)")
    n_query: int = bounded(0, ge=0, doc="test queries; 0: the source's default (digits 500; .mat presets)")
    n_val: int = bounded(200, ge=1)  # validation queries
    n_val_db: int = bounded(1000, ge=1)  # validation database
    n_db: int = bounded(2000, ge=1)  # digits: the test database (.mat: every remaining item)
    image_size: int = bounded(48, ge=16, le=1024)  # digits: the canvas; others: the resize
    noise: float = bounded(0.06, ge=0, le=1)  # digits: pixel noise
    max_tokens: int = bounded(24, ge=3, le=512)
    vocab_size: int = bounded(2000, ge=8)
    min_frequency: int = bounded(1, ge=1)
    hflip: bool = False  # random horizontal flips of training images (not for digits)
    recompose: bool = True  # digits: training scenes recomposed each time they are drawn (n_train per epoch)

    def validate(self) -> None:
        if self.source == "digits" and self.hflip:
            raise ValueError("data.hflip=true mirrors digits into non-digits; keep it false for source=digits")

        if self.source != "digits" and not self.root:
            raise ValueError(f"data.source={self.source} needs data.root=DIR (see data/hashing.md)")


@dataclass
class ModelConfig:
    name: Literal["prompthash", "prompthash_tiny", "dcmh"] = "prompthash"
    bits: list[int] = field(default_factory=lambda: [16, 32, 64])
    aux_bits: int = bounded(128, ge=0)  # prompthash: the auxiliary long code (0: none)
    d_model: int = bounded(128, ge=8)
    n_prompts: int = bounded(8, ge=1)
    text_layers: int = bounded(2, ge=1)
    n_heads: int = bounded(4, ge=1)
    d_state: int = bounded(16, ge=1)
    mlp_layers: int = bounded(2, ge=0)
    expand: int = bounded(1, ge=1)  # prompthash: the fusion's Mamba expansion
    pool_tokens: bool = True  # prompthash: feature = mean of fused prompts + mean of fused content tokens
    text_hidden: int = bounded(512, ge=8)  # dcmh: bag-of-words MLP width
    dropout: float = bounded(0.0, ge=0, lt=1)
    image_encoder: Literal["cnn", "timm"] = "cnn"
    timm_name: str = "vit_tiny_patch16_224"  # image_encoder=timm: any timm model name
    image_weights: str = ""  # image_encoder=timm: a local checkpoint (.safetensors / .pt, weights only)
    backend: Literal["auto", "reference", "chunked", "triton"] = "auto"

    def validate(self) -> None:
        if not self.bits or any(b < 1 or b > 4096 for b in self.bits) or len(set(self.bits)) != len(self.bits):
            raise ValueError(f"model.bits must be distinct code lengths in 1..4096; got {self.bits}")
        if self.aux_bits and self.aux_bits <= max(self.bits):
            raise ValueError(f"model.aux_bits={self.aux_bits} must exceed the longest code {max(self.bits)} (or be 0)")
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model={self.d_model} must be divisible by model.n_heads={self.n_heads}")


@dataclass
class LossConfig:
    alpha: float = bounded(5.0, gt=0, doc="theta = alpha * cos(u, v)")
    intra: float = bounded(0.5, ge=0)  # prompthash: weight of image-image and text-text likelihood
    quant: float = bounded(0.1, ge=0)
    recon: float = bounded(0.1, ge=0)  # prompthash: short codes reconstruct the long code
    nce_global: float = bounded(0.1, ge=0)
    nce_local: float = bounded(0.05, ge=0)
    temperature: float = bounded(0.1, gt=0)
    prompt: float = bounded(1.0, ge=0)  # prompthash: image/text codes against the label prompts' codes
    gamma: float = bounded(0.5, ge=0)  # dcmh: quantisation to B = sign(F + G)
    eta: float = bounded(0.1, ge=0)  # dcmh: bit balance


@dataclass
class EvalConfig:
    topk: list[int] = field(default_factory=lambda: [10, 100])
    plots: bool = True  # precision-recall PNGs when evaluating the test split


@dataclass
class HashingConfig(AppConfig):
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _n(value: int, default: int) -> int:
    return value if value > 0 else default


@register_app("hashing")
class HashingApp(App):
    """cross-modal hashing retrieval: PromptHash vs a DCMH-style baseline, with a binary index and search"""

    name = "hashing"
    config_class = HashingConfig
    primary_metric = "map"
    # About 2 CPU-minutes (121 s user+sys on one thread): 4 epochs of 3000 recomposed scenes
    # (372 steps of 32), smaller validation and test sets than the default config's.
    demo_overrides = ["train.epochs=4", "data.n_val=150", "data.n_val_db=600", "data.n_query=300", "data.n_db=1500"]
    extra_commands = {
        "index": ExtraCommand("encode a folder of images into a binary search index (.ssmh)"),
        "search": ExtraCommand("rank an index's images for a text or image query", needs_model=False),
        "compare": ExtraCommand("train PromptHash and the DCMH-style baseline on one budget and tabulate their "
                                "test mAP, P@k and precision-recall curves", needs_model=False),
    }

    def __init__(self, cfg: HashingConfig):
        super().__init__(cfg)
        self._parts: dict[str, D.Part] | None = None
        self._tokenizer: CaptionTokenizer | None = None
        self._class_names: list[str] | None = None
        self._n_classes: int | None = None  # from the run's state: what evaluation data must match

    # ------------------------------------------------------------------------------ data
    @property
    def parts(self) -> dict[str, D.Part]:
        if self._parts is None:
            d = self.cfg.data
            if d.source == "digits":
                self._parts = D.digit_parts(_n(d.n_train, DIGIT_DEFAULTS["n_train"]), d.n_val, d.n_val_db,
                                            _n(d.n_query, DIGIT_DEFAULTS["n_query"]), d.n_db, d.seed, d.image_size,
                                            d.noise, d.protocol)
                self._class_names = list(scenes.CLASS_NAMES)
            else:
                corpus = mat.read_corpus(d.root, d.image_root or None, d.index_file, d.caption_file, d.label_file,
                                         d.basename_only)
                q, t = mat.PRESETS.get(d.source, (0, 0))
                self._parts = D.mat_parts(corpus, d.seed, _n(d.n_query, q or 2000), _n(d.n_train, t or 10000),
                                          d.n_val, d.n_val_db, d.protocol)
                self._class_names = [f"class_{i}" for i in range(corpus.labels.shape[1])]
        return self._parts

    @property
    def tokenizer(self) -> CaptionTokenizer:
        if self._tokenizer is None:
            d = self.cfg.data
            self._tokenizer = D.train_tokenizer(self.parts["train"], d.vocab_size, d.min_frequency, d.max_tokens)
        return self._tokenizer

    def build_dataset(self, split: str) -> D.PairDataset:
        d = self.cfg.data
        composer = None
        if split == "train" and d.source == "digits" and d.recompose:
            composer = scenes.split_composer("train", d.seed, d.image_size, d.noise)
        ds = D.split_dataset(self.parts, split, self.tokenizer, d.image_size, hflip=d.hflip, composer=composer)
        n_classes = self._n_classes
        if n_classes is not None and ds.labels.shape[1] != n_classes:
            raise DataError(f"the {split} data has {ds.labels.shape[1]} label classes; "
                            f"the run was trained with {n_classes}")
        return ds

    @property
    def n_classes(self) -> int:
        """Label classes: from the run's state when evaluating one, else from the training data."""
        if self._n_classes is None:
            self._n_classes = int(self.parts["train"].labels.shape[1])
        return self._n_classes

    def run_state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_json(), "max_tokens": self.tokenizer.max_len,
                "classes": self._class_names or [], "n_classes": self.n_classes,
                "source": self.cfg.data.source, "protocol": self.cfg.data.protocol}

    def load_run_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        tok = state.get("tokenizer")
        if tok is None:
            raise DataError("the run's app_state.json has no tokenizer; re-run training")
        try:
            self._tokenizer = CaptionTokenizer.from_json(tok, int(state.get("max_tokens", self.cfg.data.max_tokens)))
        except ValueError as err:
            raise DataError(f"the run's app_state.json holds a damaged tokenizer ({err}); re-run training") from None
        self._class_names = list(state.get("classes") or [])
        self._n_classes = int(state.get("n_classes") or 0) or None

    # ----------------------------------------------------------------------------- model
    def build_model(self) -> nn.Module:
        m, d = self.cfg.model, self.cfg.data
        options = {"vocab_size": self.tokenizer.vocab_size, "bits": tuple(m.bits), "aux_bits": m.aux_bits,
                   "d_model": m.d_model, "n_prompts": m.n_prompts, "text_layers": m.text_layers, "n_heads": m.n_heads,
                   "max_len": self.tokenizer.max_len, "image_size": d.image_size, "image_encoder_kind": m.image_encoder,
                   "timm_name": m.timm_name, "image_weights": m.image_weights, "d_state": m.d_state,
                   "mlp_layers": m.mlp_layers, "text_hidden": m.text_hidden, "dropout": m.dropout,
                   "n_classes": self.n_classes, "expand": m.expand, "pool_tokens": m.pool_tokens,
                   "backend": m.backend}
        if m.name == "prompthash_tiny":  # the tiny variant fixes its own widths
            options = {k: options[k] for k in ("vocab_size", "max_len", "image_size", "bits", "n_classes", "backend")}
        try:
            return create_model(m.name, **select_kwargs("model", m.name, options))
        except ValueError as err:
            if isinstance(err, DataError):
                raise
            raise DataError(f"model {m.name!r}: {err}") from None

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, Any]]:
        core = getattr(model, "module", model)
        lc = self.cfg.loss
        if core.name == "dcmh":
            out = model(batch["image"], batch["tokens"])
            return dcmh_loss(out, batch["label"], core.bits, lc.alpha, lc.gamma, lc.eta)
        out = model(batch["image"], batch["tokens"], batch["label"] if lc.prompt else None)
        return prompthash_loss(out, batch["label"], core.bits, core.aux_bits, lc.alpha, lc.intra, lc.quant, lc.recon,
                               lc.nce_global, lc.nce_local, lc.temperature, lc.prompt)

    # ------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def encode(self, model: nn.Module, loader, ctx: EvalContext) -> tuple[dict, dict, np.ndarray, np.ndarray]:
        """Codes of every item in both modalities: ({bits: image codes [N, K]}, {bits: text codes},
        labels [N, C], roles [N])."""
        img: dict[int, list[np.ndarray]] = {}
        txt: dict[int, list[np.ndarray]] = {}
        labels, roles = [], []
        for batch in loader:
            b = ctx.to_device(batch)
            with ctx.autocast():
                hi, ht = model.encode_image(b["image"]), model.encode_text(b["tokens"])
            for k in hi:
                img.setdefault(k, []).append(hi[k].float().cpu().numpy())
                txt.setdefault(k, []).append(ht[k].float().cpu().numpy())
            labels.append(batch["label"].numpy())
            roles.append(np.asarray(batch["role"]))
        return ({k: np.concatenate(v) for k, v in img.items()}, {k: np.concatenate(v) for k, v in txt.items()},
                np.concatenate(labels), np.concatenate(roles))

    def evaluate(self, model: nn.Module, loader, ctx: EvalContext) -> dict[str, float]:
        img, txt, labels, roles = self.encode(model, loader, ctx)
        q, db = roles == D.ROLES["query"], roles == D.ROLES["db"]
        if not q.any() or not db.any():
            raise DataError(f"the {ctx.split} split needs queries and a database; "
                            f"got {int(q.sum())} and {int(db.sum())}")
        ks = tuple(self.cfg.eval.topk)
        out: dict[str, float] = {}
        curves: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        maps = []
        for bits in sorted(img):
            pairs = {"i2t": (img[bits][q], txt[bits][db]), "t2i": (txt[bits][q], img[bits][db])}
            for direction, (qc, dc) in pairs.items():
                m, curve = retrieval_metrics(pack_codes(qc), pack_codes(dc), labels[q], labels[db], bits, ks)
                curves[(direction, bits)] = curve
                maps.append(m["map"])
                for key, v in m.items():
                    # Validation (run every epoch, each key plotted) keeps the mAP; test keeps all.
                    if key != "n_queries_no_relevant" and (ctx.split != "val" or key == "map"):
                        out[f"{direction}_{key}_{bits}"] = v
        out["map"] = float(np.mean(maps))
        # The chance level: random codes for the same queries and database (seeded).
        rng = np.random.default_rng(0)
        bits = max(img)
        rq, rd = rng.standard_normal((int(q.sum()), bits)), rng.standard_normal((int(db.sum()), bits))
        rnd, _ = retrieval_metrics(pack_codes(rq), pack_codes(rd), labels[q], labels[db], bits, ks)
        out["map_random"] = rnd["map"]
        out["n_queries"], out["n_database"] = float(q.sum()), float(db.sum())
        self._last_curves = curves
        if ctx.split == "test" and self.cfg.eval.plots and ctx.plots_dir is not None:
            from ssmkit_apps.hashing.report import plot_pr_curves

            name = getattr(getattr(model, "module", model), "name", "model")
            plot_pr_curves({name: curves}, ctx.plots_dir / f"pr_{ctx.split}.png",
                           title=f"{name} on {self.cfg.data.source} ({ctx.split}, {self.cfg.data.protocol} protocol)")
        return out

    def report(self, metrics: dict[str, float], ctx: EvalContext) -> str:
        from ssmkit_apps.hashing.report import map_table

        return ("Validation mAP@all (ties broken by database order; `evaluate` adds the tie-aware mAP and P@k):\n\n"
                + map_table(metrics, self.cfg.model.bits))

    def demo_summary(self, metrics: dict[str, float]) -> str:
        b = max(self.cfg.model.bits)
        return (f"mAP@all {metrics['map']:.3f} (mean of i2t/t2i at {'/'.join(map(str, self.cfg.model.bits))} bits; "
                f"i2t {metrics[f'i2t_map_{b}']:.3f}, t2i {metrics[f't2i_map_{b}']:.3f} at {b}); "
                f"random codes {metrics['map_random']:.3f}")

    # --------------------------------------------------------------- infer, index, search
    @classmethod
    def add_arguments(cls, command: str, parser: argparse.ArgumentParser) -> None:
        from ssmkit_apps.hashing import retrieval

        if command == "compare":
            from ssmkit_apps.hashing.compare import add_arguments

            add_arguments(parser)
            parser.add_argument("--quiet", action="store_true", help="no progress output")
            return
        retrieval.add_arguments(command, parser)

    def infer(self, model: nn.Module, args: argparse.Namespace, ctx: EvalContext) -> int:
        from ssmkit_apps.hashing import retrieval

        return retrieval.infer(self, model, args, ctx)

    def run_command(self, command: str, model: nn.Module | None, args: argparse.Namespace,
                    ctx: EvalContext | None) -> int:
        from ssmkit_apps.hashing import retrieval

        if command == "index":
            return retrieval.build_index(self, model, args, ctx)
        if command == "search":
            return retrieval.search(self, args)
        if command == "compare":
            from ssmkit_apps.hashing.compare import from_args

            return from_args(args)
        return super().run_command(command, model, args, ctx)


__all__ = ["DataConfig", "EvalConfig", "HashingApp", "HashingConfig", "LossConfig", "ModelConfig"]
