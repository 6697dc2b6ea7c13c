"""``ssmkit medseg``: 3D medical segmentation, MambaClinix against MONAI's UNet and SwinUNETR.

    ssmkit medseg demo
    ssmkit medseg train [--set data.root=DATASET] [--set model.name=unet|swinunetr]
    ssmkit medseg evaluate --run runs/medseg/ID --split test
    ssmkit medseg infer VOLUME_OR_DIR --run runs/medseg/ID --out DIR
    ssmkit medseg make-demo-data DIR          # synthetic phantoms in the nnU-Net layout
    ssmkit medseg make-brain-data DIR         # Colin27 -> MNI152 brain regions (data/medseg.md)
    ssmkit medseg compare --out DIR           # the three models on one budget, one table

Protocol: the plan (spacing, patch, stages, CT window) comes from the training cases; the best
checkpoint is chosen on validation cases held out of imagesTr; the test split (imagesTs with
labelsTs) is only read by ``evaluate --split test``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ssmkit.engine.app import App, EvalContext, ExtraCommand
from ssmkit.engine.commands import result_tag
from ssmkit.engine.config import AppConfig, bounded
from ssmkit.engine.files import atomic_write_text, check_output
from ssmkit.errors import DataError
from ssmkit.registry import create_model, register_app, select_kwargs
from ssmkit_apps.medseg import metrics as M
from ssmkit_apps.medseg.dataset import DatasetSpec, check_case_headers, ras_spacing_and_shape, read_dataset, split_cases
from ssmkit_apps.medseg.losses import SegLoss
from ssmkit_apps.medseg.plan import Plan, ct_window, make_plan
from ssmkit_apps.medseg.transforms import TrainPatches, Volumes, collate


@dataclass
class PhantomConfig:
    """The embedded synthetic dataset (used when ``data.root`` is empty)."""

    n_train: int = bounded(24, ge=2)
    n_test: int = bounded(8, ge=1)
    shape: list[int] = field(default_factory=lambda: [64, 64, 40])
    spacing: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.6])
    seed: int = 0

    def validate(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 16:
            raise ValueError(f"phantoms.shape must be 3 sizes >= 16; got {self.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"phantoms.spacing must be 3 positive numbers (mm); got {self.spacing}")


@dataclass
class DataConfig:
    root: str = ""  # a dataset folder with dataset.json (nnU-Net/MSD layout); "" = the embedded phantoms
    val_fraction: float = bounded(0.2, gt=0, lt=1)
    spacing: list[float] = field(default_factory=list)  # [] = the median spacing of the training cases
    patch_size: list[int] = field(default_factory=list)  # [] = from the median shape and max_patch_voxels
    max_patch_voxels: int = bounded(96 * 96 * 64, ge=4096)
    max_stages: int = bounded(5, ge=2, le=7)
    ct_window: list[float] = field(default_factory=list)  # [] = 0.5/99.5 percentiles of training foreground
    samples_per_epoch: int = bounded(64, ge=1)  # random patches drawn per epoch
    pos: float = bounded(2.0, ge=0)  # RandCropByPosNegLabeld: foreground-centred : background-centred
    neg: float = bounded(1.0, ge=0)
    rotate_deg: float = bounded(15.0, ge=0, le=180)
    aug_prob: float = bounded(0.2, ge=0, le=1)
    phantoms: PhantomConfig = field(default_factory=PhantomConfig)

    def validate(self) -> None:
        if self.spacing and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise ValueError(f"spacing must be [] or 3 positive numbers (mm); got {self.spacing}")
        if self.patch_size and (len(self.patch_size) != 3 or min(self.patch_size) < 8):
            raise ValueError(f"patch_size must be [] or 3 sizes >= 8; got {self.patch_size}")
        if self.ct_window and (len(self.ct_window) != 2 or self.ct_window[0] >= self.ct_window[1]):
            raise ValueError(f"ct_window must be [] or [lo, hi] with lo < hi; got {self.ct_window}")
        if self.pos + self.neg <= 0:
            raise ValueError(f"pos + neg must be > 0; got pos={self.pos}, neg={self.neg}")


@dataclass
class ModelConfig:
    name: Literal["mambaclinix", "unet", "swinunetr"] = "mambaclinix"
    features: int = bounded(16, ge=8)  # stage-0 channels (mambaclinix, unet); doubled per stage
    max_features: int = bounded(256, ge=8)
    mamba_stages: int = bounded(2, ge=0)  # mambaclinix: deepest stages with SS3D blocks
    depth: int = bounded(1, ge=1)  # gated blocks per encoder stage
    scan: str = "tri_orient"  # SS3D scan strategy: a 3D name from `ssmkit list scan`
    d_state: int = bounded(16, ge=1)
    expand: float = bounded(2.0, gt=0)
    hg_kernel: int = bounded(7, ge=1)  # HGConv depthwise kernel (odd)
    layer_scale: float = bounded(0.1, gt=0)
    deep_supervision: bool = True
    backend: Literal["auto", "reference", "chunked", "triton"] = "auto"
    res_units: int = bounded(2, ge=0)  # unet: residual units per stage
    swin_features: int = bounded(24, ge=12)  # swinunetr: feature size (multiple of 12)


@dataclass
class LossConfig:
    tversky_weight: float = bounded(0.8, ge=0)
    regions: list[int] = field(default_factory=lambda: [4, 4, 4])  # region grid of the Tversky term


@dataclass
class InferConfig:
    overlap: float = bounded(0.5, ge=0, lt=1)  # sliding-window overlap
    sw_batch_size: int = bounded(2, ge=1)
    png: bool = True  # write slice overlays beside the predictions


@dataclass
class MedsegConfig(AppConfig):
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    infer: InferConfig = field(default_factory=InferConfig)


def phantom_root(cfg: MedsegConfig) -> Path:
    """Where the embedded phantoms live: a cache folder under the run root, keyed by their settings;
    written once (to a temporary folder renamed into place), then reused."""
    from ssmkit_apps.medseg.phantoms import write_phantom_dataset

    p = cfg.data.phantoms
    key = hashlib.sha256(json.dumps(asdict(p), sort_keys=True).encode()).hexdigest()[:10]
    cache = Path(cfg.run.root).expanduser() / "medseg" / ".cache"
    root = cache / f"phantoms-{key}"
    if (root / "dataset.json").is_file():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".phantoms-", dir=cache))
    try:
        write_phantom_dataset(tmp, p.n_train, p.n_test, p.seed, tuple(p.shape), tuple(p.spacing))
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


@register_app("medseg")
class MedsegApp(App):
    """3D medical segmentation: MambaClinix (HGConv + SS3D U-Net) vs MONAI UNet and SwinUNETR"""

    name = "medseg"
    config_class = MedsegConfig
    primary_metric = "dice"
    chance = 0.0
    demo_overrides = [
        "data.phantoms.n_train=8", "data.phantoms.n_test=4", "data.phantoms.shape=[40,40,24]",
        "data.patch_size=[32,32,16]", "data.samples_per_epoch=40", "data.max_stages=4",
        "model.features=8", "model.hg_kernel=3", "model.d_state=8", "infer.overlap=0.25",
        "train.epochs=6", "train.batch_size=2", "train.lr=0.004", "train.warmup_steps=5", "train.log_every=5",
    ]
    extra_commands = {
        "make-demo-data": ExtraCommand("write the synthetic phantom dataset (nnU-Net layout) to a folder",
                                       needs_model=False),
        "make-brain-data": ExtraCommand("write the Colin27 -> MNI152 brain-region task (nnU-Net layout) to a folder",
                                        needs_model=False),
        "compare": ExtraCommand("train MambaClinix, UNet and SwinUNETR on one budget and tabulate their test scores",
                                needs_model=False),
    }
    collate = staticmethod(collate)

    def __init__(self, cfg: MedsegConfig):
        super().__init__(cfg)
        self._spec: DatasetSpec | None = None
        self._plan: Plan | None = None
        self._rows: list[dict[str, np.ndarray]] = []
        self._cases: list[str] = []

    # ------------------------------------------------------------------------------ data
    @property
    def spec(self) -> DatasetSpec:
        if self._spec is None:
            root = self.cfg.data.root or phantom_root(self.cfg)
            self._spec = read_dataset(root)
        return self._spec

    def splits(self) -> tuple[list, list]:
        return split_cases(self.spec.training, self.cfg.data.val_fraction, self.cfg.seed)

    @property
    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = self._make_plan()
        return self._plan

    def _make_plan(self) -> Plan:
        d, spec = self.cfg.data, self.spec
        spacings, shapes = [], []
        for case in spec.training:
            affine, shape = check_case_headers(case, len(spec.channel_names))
            sp, sh = ras_spacing_and_shape(affine, shape)
            spacings.append(sp)
            shapes.append(sh)
        multiple = 32 if self.cfg.model.name == "swinunetr" else 16
        plan = make_plan(spacings, shapes, spec.class_names, list(spec.channel_names), d.patch_size or None,
                         d.spacing or None, d.max_stages, d.max_patch_voxels, multiple)
        plan.windows = [self._ct_window(c) if m.upper() == "CT" else None for c, m in enumerate(spec.channel_names)]
        return plan

    def _ct_window(self, channel: int) -> list[float]:
        if self.cfg.data.ct_window:
            return [float(v) for v in self.cfg.data.ct_window]
        import nibabel as nib

        train, _ = self.splits()
        rng = np.random.default_rng(self.cfg.seed)
        values = []
        for case in train[:50]:  # enough cases for stable percentiles
            path = case.images[channel] if len(case.images) > 1 else case.images[0]
            try:
                img = np.asanyarray(nib.load(path).dataobj)
                lab = np.asanyarray(nib.load(case.label).dataobj)
            except Exception as err:
                raise DataError(f"{path!r} or {case.label!r} could not be read ({type(err).__name__}: {err})") from None
            if img.ndim == 4:
                img = img[..., channel]
            fg = img[lab.reshape(img.shape) > 0]
            values.append(rng.choice(fg, size=min(fg.size, 100_000), replace=False) if fg.size else fg)
        return ct_window(values)

    def build_dataset(self, split: str):
        d, plan = self.cfg.data, self.plan
        if split == "train":
            train, _ = self.splits()
            return TrainPatches(train, plan, d.samples_per_epoch, d.pos, d.neg, d.rotate_deg, d.aug_prob)
        if split == "val":
            return Volumes(self.splits()[1], plan)
        if split == "test":
            cases = list(self.spec.test)
            if not cases:
                raise DataError(f"dataset {str(self.spec.root)!r} has no imagesTs/ cases to evaluate")
            unlabelled = [c.images[0] for c in cases if c.label is None]
            if unlabelled:
                raise DataError(f"the test split needs labels: {unlabelled[0]!r} has no file in "
                                f"{str(self.spec.root / 'labelsTs')!r}; use `infer` for unlabelled volumes")
            # The plan only read the training headers; a test label off its image's grid would
            # otherwise be resampled separately and scored against the wrong voxels.
            for case in cases:
                check_case_headers(case, len(self.spec.channel_names))
            return Volumes(cases, plan)
        raise DataError(f"unknown split {split!r}; expected train, val or test")

    # ----------------------------------------------------------------------------- model
    def build_model(self) -> nn.Module:
        m, plan = self.cfg.model, self.plan
        if m.name == "swinunetr" and (any(p % 32 for p in plan.patch_size) or np.prod(plan.patch_size) <= 32**3):
            raise DataError(f"model.name=swinunetr needs a patch size that is a multiple of 32 per axis and larger "
                            f"than [32, 32, 32] (its 1/32 bottleneck needs 2+ voxels); the plan has {plan.patch_size}; "
                            "set data.patch_size=[64, 32, 32] or larger")
        if m.name == "mambaclinix" and m.mamba_stages > len(plan.strides):
            raise DataError(f"model.mamba_stages={m.mamba_stages} exceeds the plan's {len(plan.strides)} stages")
        options = {k: v for k, v in asdict(m).items() if k != "name"}
        options.update(in_channels=plan.in_channels, n_classes=plan.n_classes, strides=plan.strides,
                       kernels=plan.kernels)
        name = f"medseg_{m.name}"
        return create_model(name, **select_kwargs("model", name, options))

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        if not hasattr(self, "_criterion"):
            self._criterion = SegLoss(self.cfg.loss.tversky_weight, self.cfg.loss.regions)
        image, label = batch
        return self._criterion(model(image), label)

    # ------------------------------------------------------------------------ evaluation
    def evaluate(self, model: nn.Module, loader, ctx: EvalContext) -> dict[str, float]:
        plan, inf = self.plan, self.cfg.infer
        from ssmkit_apps.medseg.infer import predict_probs

        rows, names = [], []
        for items in loader:
            for item in items:
                probs = predict_probs(model, item["image"], plan, ctx.device, ctx.autocast, inf.overlap,
                                      inf.sw_batch_size)
                pred = probs.argmax(0)
                rows.append(M.case_metrics(pred, torch.as_tensor(item["label"])[0], plan.n_classes, item["spacing"]))
                names.append(item["case"])
        self._rows, self._cases = rows, names
        if ctx.split == "test" and ctx.run_dir is not None:
            # Named like the engine's eval_<tag>.json: results on other data never overwrite these.
            tag = result_tag(self, ctx.split, ctx.run_dir)
            M.write_case_csv(ctx.run_dir / f"per_case_{tag}.csv", names, rows, plan.class_names)
            M.boxplot({self.cfg.model.name: self._series(rows)}, ctx.plots_dir / f"boxplot_{tag}.png",
                      title=f"{self.cfg.model.name}, {tag} split ({len(rows)} cases)")
            atomic_write_text(ctx.run_dir / f"table_{tag}.md", M.table(rows, plan.class_names) + "\n")
        return M.summarize(rows, plan.class_names)

    def _series(self, rows: list[dict[str, np.ndarray]]) -> dict[str, dict[str, list[float]]]:
        names = self.plan.class_names[1:]
        return {"dice": {n: [float(r["dice"][j]) for r in rows] for j, n in enumerate(names)},
                "hd95_mm": {n: [float(r["hd95"][j]) for r in rows] for j, n in enumerate(names)}}

    def report(self, metrics: dict[str, float], ctx: EvalContext) -> str:
        if not self._rows:
            return ""
        plan = self.plan
        head = (f"Plan: spacing {plan.spacing} mm, patch {plan.patch_size}, {len(plan.strides)} stages "
                f"(strides {plan.strides[1:]}), modalities {plan.modalities}, CT window {plan.windows}.\n\n")
        return head + f"Per-class results on the validation split ({len(self._rows)} cases):\n\n" + \
            M.table(self._rows, plan.class_names)

    def run_state(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "dataset": str(self.spec.root)}

    def load_run_state(self, state: dict[str, Any]) -> None:
        if "plan" in state:
            self._plan = Plan.from_dict(state["plan"])

    def demo_summary(self, metrics: dict[str, float]) -> str:
        per = ", ".join(f"{k.split('/', 1)[1]} {v:.2f}" for k, v in metrics.items() if k.startswith("dice/"))
        return f"mean Dice = {metrics.get('dice', float('nan')):.3f} (chance 0; {per}), HD95 = " \
               f"{metrics.get('hd95', float('nan')):.1f} mm"

    # --------------------------------------------------------------------------- commands
    @classmethod
    def add_arguments(cls, command: str, parser: argparse.ArgumentParser) -> None:
        if command == "infer":
            parser.add_argument("input", metavar="VOLUME_OR_DIR", help="a .nii.gz volume or a folder of them")
            parser.add_argument("--out", required=True, metavar="DIR", help="folder for <case>.nii.gz predictions "
                                "(input affine and header) and <case>_overlay.png")
        elif command == "make-demo-data":
            parser.add_argument("dir", metavar="DIR", help="an empty or new folder")
            parser.add_argument("--n-train", type=int, default=None, help="training cases (default: data.phantoms)")
            parser.add_argument("--n-test", type=int, default=None, help="test cases (default: data.phantoms)")
        elif command == "make-brain-data":
            parser.add_argument("dir", metavar="DIR", help="an empty or new folder")
            parser.add_argument("--spacing", type=float, default=3.0, help="voxel size in mm (default 3)")
            parser.add_argument("--variants", type=int, default=3,
                                help="extra deformed/bias-field copies of Colin27 in imagesTr (default 3)")
            parser.add_argument("--colin", choices=["ch2bet", "ch2"], default="ch2bet",
                                help="ch2bet: brain-extracted Colin27 (default, like the MNI152 template); "
                                     "ch2: with scalp")
        elif command == "compare":
            parser.add_argument("--out", required=True, metavar="DIR", help="folder for comparison.md, "
                                "comparison.json and the box plot")
            parser.add_argument("--models", default="mambaclinix,unet,swinunetr",
                                help="comma-separated model.name list")
            parser.add_argument("--run-root", default="runs", help="where the training runs go (default: runs)")
            parser.add_argument("--title", default="", help="a heading for comparison.md")

    def infer(self, model: nn.Module, args: argparse.Namespace, ctx: EvalContext) -> int:
        from ssmkit_apps.medseg.infer import infer_paths, list_inputs

        plan = self.plan
        cases, notes = list_inputs(args.input, plan.in_channels)
        out = check_output(args.out, inputs=[args.input], overwrite=args.overwrite, is_dir=True)
        for n in notes:
            print(n, file=sys.stderr)
        inf = self.cfg.infer
        written, failed = infer_paths(model, cases, plan, out, ctx.device, ctx.autocast, inf.overlap,
                                      inf.sw_batch_size, inf.png)
        print(f"{len(written)} prediction(s) written to {out}; {len(failed)} skipped", flush=True)
        if not written:
            raise DataError(f"no volume under {args.input!r} could be predicted: {failed[0] if failed else ''}")
        return 2 if failed else 0

    def run_command(self, command: str, model, args: argparse.Namespace, ctx) -> int:
        if command == "make-demo-data":
            from ssmkit_apps.medseg.phantoms import write_phantom_dataset

            p = self.cfg.data.phantoms
            out = check_output(args.dir, overwrite=args.overwrite, is_dir=True)
            write_phantom_dataset(out, args.n_train or p.n_train, args.n_test or p.n_test, p.seed, tuple(p.shape),
                                  tuple(p.spacing))
            print(f"wrote {args.n_train or p.n_train} training and {args.n_test or p.n_test} test phantoms to {out}\n"
                  f"train on them with: ssmkit medseg train --set data.root={out}")
            return 0
        if command == "make-brain-data":
            from ssmkit_apps.medseg.brain_task import write_brain_task

            out = check_output(args.dir, overwrite=args.overwrite, is_dir=True)
            write_brain_task(out, spacing=args.spacing, variants=args.variants, seed=self.cfg.seed, colin=args.colin)
            print(f"wrote the Colin27 -> MNI152 task to {out}\ntrain on it with: ssmkit medseg train "
                  f"--config {self.package_dir() / 'configs' / 'brain.yaml'} --set data.root={out}")
            return 0
        if command == "compare":
            from ssmkit_apps.medseg.compare import run_comparison

            models = [m.strip() for m in args.models.split(",") if m.strip()]
            run_comparison(models, list(args.set or []), Path(args.out), run_root=args.run_root, config=args.config,
                           title=args.title, overwrite=args.overwrite)
            return 0
        return super().run_command(command, model, args, ctx)


__all__ = ["MedsegApp", "MedsegConfig", "phantom_root"]
