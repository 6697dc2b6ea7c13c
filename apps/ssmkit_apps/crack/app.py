"""``ssmkit crack``: pixel-level crack segmentation, SCSegamba against a U-Net baseline.

    ssmkit crack demo
    ssmkit crack train [--set model.name=unet] [--set data.format=crackscf --set data.root=DIR]
    ssmkit crack evaluate --run runs/crack/ID [--split test]
    ssmkit crack infer IMAGE_OR_DIR --run runs/crack/ID --out DIR

Protocol: every validation pass picks the mask threshold (the ODS threshold of the validation
split, on the 0.00-0.99 sweep) and stores it in the model's ``threshold`` buffer; the best
checkpoint is the one with the best validation ODS, saved together with its threshold. The
test split never chooses anything: it is scored at the checkpoint's threshold, next to the
community's sweep metrics (ODS, OIS, mIoU, AP) and the darkness baseline, whose global
threshold is chosen on the same validation split.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ssmkit.engine.app import App, EvalContext
from ssmkit.engine.config import AppConfig, bounded
from ssmkit.engine.files import check_output
from ssmkit.errors import DataError
from ssmkit.registry import create_model, register_app
from ssmkit_apps.crack import data as D
from ssmkit_apps.crack.losses import bce_dice_loss
from ssmkit_apps.crack.metrics import SweepMeter, pr_curve
from ssmkit_apps.crack.model import VARIANTS
from ssmkit_apps.crack.synth import darkness_scores


@dataclass
class CrackData:
    """Which images. ``format=embedded`` draws them from the generator; the other formats read
    a dataset folder ``root`` in its community's layout (data/crack.md)."""

    format: Literal["embedded", "crackscf", "deepcrack", "crack500", "cracktree260", "cfd"] = "embedded"
    root: str = ""
    image_size: int = bounded(96, ge=16, doc="generated image side; real images are resized to it")
    n_train: int = bounded(480, ge=1, doc="embedded only")
    n_val: int = bounded(64, ge=1, doc="embedded only")
    n_test: int = bounded(128, ge=1, doc="embedded only")
    data_seed: int = bounded(0, ge=0, doc="generator seed; also the seed of the fixed splits of real data")
    backgrounds: str = ""  # embedded: a folder of crack-free surface photos to draw cracks onto
    val_fraction: float = bounded(0.1, gt=0, lt=1, doc="real data without a validation split")
    test_fraction: float = bounded(0.2, gt=0, lt=1, doc="cracktree260 and cfd (one pool)")
    augment: bool = True  # random flips and 90-degree turns of training images

    def validate(self) -> None:
        if self.format == "embedded" and self.root:
            raise ValueError(f"data.root={self.root!r} is set but data.format=embedded; set data.format to one of "
                             f"{', '.join(D.FORMATS[1:])}")
        if self.format != "embedded" and not self.root:
            raise ValueError(f"data.format={self.format} needs data.root=DIR (the dataset folder)")
        if self.backgrounds and self.format != "embedded":
            raise ValueError("data.backgrounds works with data.format=embedded only")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"data.val_fraction + data.test_fraction must be < 1; got {self.val_fraction} + "
                             f"{self.test_fraction}")


@dataclass
class CrackModel:
    name: Literal["scsegamba", "unet"] = "scsegamba"
    size: Literal["tiny", "default", "large"] = "tiny"  # default: the published 2.9M-parameter SCSegamba
    drop_path: float = bounded(0.1, ge=0, lt=1)  # scsegamba
    dropout: float = bounded(0.1, ge=0, lt=1)  # scsegamba
    backend: Literal["auto", "reference", "chunked", "triton"] = "auto"  # scsegamba's selective scan
    stem_skips: bool = True  # scsegamba: the decoder also sees the stem's stride-4/2 maps (false: as published)


@dataclass
class CrackLoss:
    bce_weight: float = bounded(0.83, ge=0)
    dice_weight: float = bounded(0.17, ge=0)


@dataclass
class CrackEval:
    tile: int = bounded(0, ge=0, doc="infer: tile side; 0 = data.image_size")
    overlap: float = bounded(0.25, ge=0, lt=1, doc="infer: overlap of neighbouring tiles")
    baseline: bool = True  # test evaluations also score the darkness baseline
    figure_rows: int = bounded(4, ge=0, doc="images in the image | truth | prediction grids")


@dataclass
class CrackConfig(AppConfig):
    data: CrackData = field(default_factory=CrackData)
    model: CrackModel = field(default_factory=CrackModel)
    loss: CrackLoss = field(default_factory=CrackLoss)
    eval: CrackEval = field(default_factory=CrackEval)


def _core(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def darkness_baseline(val: Any, test: Any) -> tuple[dict[str, float], np.ndarray, float]:
    """The darkness baseline (score = 1 - luminance), its one global threshold chosen on ``val``
    (the ODS threshold), scored on ``test``: (metrics, test counts, threshold)."""
    mv, mt = SweepMeter(), SweepMeter()
    for i in range(len(val)):
        mv.update(darkness_scores(val.image(i))[None], val.mask(i)[None])
    thr = mv.compute()["ods_threshold"]
    for i in range(len(test)):
        mt.update(darkness_scores(test.image(i))[None], test.mask(i)[None])
    return mt.compute(thr), mt.stacked(), thr


@register_app("crack")
class CrackApp(App):
    """crack segmentation: SCSegamba (GBC + SS2D on the structure-aware scan) vs U-Net and a darkness baseline"""

    name = "crack"
    config_class = CrackConfig
    primary_metric = "ods"
    # About 100 CPU-seconds: 128 steps on 64 x 64 images.
    demo_overrides = ["data.image_size=64", "data.n_train=256", "data.n_val=32", "data.n_test=64",
                      "train.epochs=4", "train.batch_size=8", "train.lr=4e-3", "train.warmup_steps=10",
                      "train.log_every=8"]

    def __init__(self, cfg: CrackConfig):
        super().__init__(cfg)
        self._val_view: dict[str, Any] | None = None

    # ------------------------------------------------------------------------- model, data
    def build_model(self) -> torch.nn.Module:
        m = self.cfg.model
        kw = ({"drop_path": m.drop_path, "dropout": m.dropout, "backend": m.backend, "stem_skips": m.stem_skips}
              if m.name == "scsegamba" else {})
        return create_model(VARIANTS[m.name][m.size], **kw)

    def build_dataset(self, split: str):
        if split not in ("train", "val", "test"):
            raise DataError(f"app 'crack' has splits train, val, test; got {split!r}")
        d = self.cfg.data
        augment = d.augment and split == "train"
        if d.format == "embedded":
            n = {"train": d.n_train, "val": d.n_val, "test": d.n_test}[split]
            return D.embedded_split(split, n, d.image_size, d.data_seed, d.backgrounds, augment)
        return D.load_split(d.format, d.root, split, d.image_size, augment, d.val_fraction, d.test_fraction,
                            d.data_seed)

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, Any]]:
        x, y = batch
        return bce_dice_loss(model(x), y, self.cfg.loss.bce_weight, self.cfg.loss.dice_weight)

    # --------------------------------------------------------------------------- evaluation
    def evaluate(self, model, loader, ctx: EvalContext) -> dict[str, float]:
        meter = SweepMeter()
        loss_sum, n = 0.0, 0
        keep = self.cfg.eval.figure_rows
        shown: list[np.ndarray] = []
        for x, y in loader:
            x, y = ctx.to_device((x, y))
            with ctx.autocast():
                logits = model(x)
            loss, _ = bce_dice_loss(logits, y, self.cfg.loss.bce_weight, self.cfg.loss.dice_weight)
            probs = torch.sigmoid(logits.float())
            meter.update(probs, y)
            loss_sum += float(loss) * len(x)
            n += len(x)
            if len(shown) < keep:
                shown.extend(probs[: keep - len(shown), 0].cpu().numpy())
        core = _core(model)
        if ctx.split == "test":
            thr = float(core.threshold)
            if not 0.0 <= thr <= 0.99:
                warnings.warn(f"the checkpoint's threshold {thr} is off the sweep grid; using 0.50", stacklevel=2)
                thr = 0.5
            thr = round(thr, 2)
        else:
            # Validation chooses the mask threshold; the best checkpoint is saved with it.
            thr = meter.compute()["ods_threshold"]
            core.threshold.fill_(thr)
        out = meter.compute(thr)
        out["loss"] = loss_sum / max(n, 1)
        ds = loader.dataset
        curves = {self.cfg.model.name: pr_curve(meter.stacked())}
        points = {self.cfg.model.name: (out["recall"], out["precision"])}
        base_scores = base_thr = None
        if ctx.split == "test" and self.cfg.eval.baseline:
            b, counts, base_thr = darkness_baseline(self.build_dataset("val"), ds)
            out.update({f"baseline_{k}": v for k, v in b.items() if k != "ods_threshold"})
            curves["darkness"] = pr_curve(counts)
            points["darkness"] = (b["recall"], b["precision"])
            base_scores = [darkness_scores(ds.image(i)) for i in range(len(shown))]
        view = {"split": ctx.split, "thr": thr, "probs": shown, "curves": curves, "points": points,
                "images": [ds.image(i) for i in range(len(shown))], "truths": [ds.mask(i) for i in range(len(shown))],
                "base": base_scores, "base_thr": base_thr}
        if ctx.split == "val":
            self._val_view = view
        elif ctx.plots_dir is not None:
            self._plots(view, ctx.plots_dir)
        return out

    def _plots(self, view: dict[str, Any], plots_dir) -> list:
        from ssmkit_apps.crack.report import figure_grid, pr_plot

        split, name = view["split"], self.cfg.model.name
        files = [pr_plot(view["curves"], view["points"], plots_dir / f"pr_{split}.png",
                         title=f"{name} on the {split} split (dots: validation thresholds)")]
        if view["probs"]:
            files.append(figure_grid(view["images"], view["truths"], view["probs"], view["thr"],
                                     plots_dir / f"grid_{split}.png", title=f"{name}, {split} split",
                                     baseline=view["base"], baseline_threshold=view["base_thr"]))
        return files

    def report(self, metrics: dict[str, float], ctx: EvalContext) -> str:
        if self._val_view is None or ctx.plots_dir is None:
            return ""
        files = self._plots(self._val_view, ctx.plots_dir)
        lines = [f"Threshold chosen by the last validation pass: **{self._val_view['thr']:.2f}** (each checkpoint "
                 "stores the threshold of its own validation pass; evaluate and infer use it).", ""]
        lines += [f"![{f.stem}](plots/{f.name})" for f in files]
        return "\n".join(lines)

    def demo_summary(self, metrics: dict[str, float]) -> str:
        text = (f"ODS {metrics.get('ods', float('nan')):.3f}, mIoU {metrics.get('miou', float('nan')):.3f}, "
                f"F1@val-thr {metrics.get('f1', float('nan')):.3f}")
        if "baseline_f1" in metrics:
            text += (f" (darkness baseline: ODS {metrics['baseline_ods']:.3f}, "
                     f"F1@val-thr {metrics['baseline_f1']:.3f})")
        return text

    # -------------------------------------------------------------------------------- infer
    @classmethod
    def add_arguments(cls, command: str, parser: argparse.ArgumentParser) -> None:
        if command != "infer":
            return
        parser.add_argument("input", metavar="IMAGE_OR_DIR", help="an image or a folder of images (png, jpg, bmp, tif)")
        parser.add_argument("--out", required=True, metavar="DIR",
                            help="folder for <name>_mask.png and <name>_overlay.png (not inside the input folder)")
        parser.add_argument("--threshold", type=float, help="mask threshold (default: the one chosen on validation)")
        parser.add_argument("--tile", type=int, default=0, help="tile side in pixels (default: eval.tile or "
                                                                  "data.image_size)")
        parser.add_argument("--overlap", type=float, help="tile overlap in [0, 1) (default: eval.overlap)")
        parser.add_argument("--probs", action="store_true", help="also write <name>_prob.png (probability x 255)")

    def infer(self, model, args: argparse.Namespace, ctx: EvalContext) -> int:
        from ssmkit_apps.crack.infer import list_inputs, run_infer

        files, ignored = list_inputs(args.input, D.IMAGE_SUFFIXES)
        out = check_output(args.out, inputs=[args.input], overwrite=getattr(args, "overwrite", False), is_dir=True)
        tile = args.tile or self.cfg.eval.tile or self.cfg.data.image_size
        overlap = self.cfg.eval.overlap if args.overlap is None else args.overlap
        if not 0.0 <= overlap < 1.0:
            raise DataError(f"--overlap must be in [0, 1); got {overlap}")
        if tile < 16:
            raise DataError(f"--tile must be >= 16 pixels; got {tile}")
        thr = float(_core(model).threshold) if args.threshold is None else float(args.threshold)
        if not 0.0 <= thr < 1.0:
            raise DataError(f"--threshold must be in [0, 1); got {thr}")
        done, skipped = run_infer(model, files, out, tile, overlap, thr, ctx.amp_dtype, save_probs=args.probs)
        note = f", ignored {ignored} non-image files" if ignored else ""
        print(f"wrote masks and overlays of {done} images to {out} (threshold {thr:.2f}, tile {tile}); "
              f"skipped {len(skipped)} unreadable{note}")
        if done == 0:
            raise DataError(f"none of the {len(files)} input images could be read; first problem: {skipped[0]}")
        return 0


__all__ = ["CrackApp", "CrackConfig", "darkness_baseline"]
