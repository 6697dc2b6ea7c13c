"""``ssmkit talkinghead``: audio- and expression-driven talking-head video diffusion (ACTalker).

    ssmkit talkinghead make-demo-data DIR
    ssmkit talkinghead train [--set data.root=DIR]
    ssmkit talkinghead evaluate --run runs/talkinghead/ID [--split test]
    ssmkit talkinghead generate --run runs/talkinghead/ID --ref face.png --audio speech.wav \\
        [--motion motion.csv] [--mode audio|motion|both] --out clip.mp4
    ssmkit talkinghead study --out DIR        (ablations: mask-drop, each branch alone)
    ssmkit talkinghead demo

Protocol: speech is split by utterance (test clips speak held-out audio, and show new faces);
checkpoints are chosen by the validation denoising loss at fixed timesteps and noise;
guidance scales are settings of the config, never tuned on test. The audio features are
normalised with statistics of the training clips, kept in the run's ``app_state.json``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ssmkit.engine.app import App, EvalContext, ExtraCommand, StepContext
from ssmkit.engine.config import AppConfig, bounded
from ssmkit.errors import DataError
from ssmkit.registry import create_model, register_app
from ssmkit_apps.talkinghead import audio as A
from ssmkit_apps.talkinghead import data as D
from ssmkit_apps.talkinghead import diffusion as Df
from ssmkit_apps.talkinghead import face as Fc
from ssmkit_apps.talkinghead import metrics as M


@dataclass
class TalkingHeadData:
    """Where clips come from. ``root: ""`` renders the embedded clips (see data.py)."""

    root: str = ""  # a folder in the layout of data/talkinghead.md; "" = the embedded generator
    speech: Literal["auto", "pocketsphinx", "espeak", "both"] = "auto"
    n_synth: int = bounded(24, ge=1, doc="eSpeak NG utterances when speech is espeak or both")
    data_seed: int = 0  # fixes the utterance split, identities and expression signals
    clip_frames: int = bounded(24, ge=16, le=32, doc="frames per clip (25 fps)")
    train_frames: int = bounded(8, ge=2, le=32, doc="random window of each training clip per step")
    train_hop: int = bounded(12, ge=1, doc="frames between training clips cut from one utterance")
    identities: int = bounded(2, ge=1, doc="faces speaking each training clip")
    portrait_fraction: float = bounded(0.35, ge=0, le=1)
    lead_frames: int = bounded(1, ge=-3, le=3, doc="frames the lips move ahead of the sound")
    val_fraction: float = bounded(0.15, gt=0, lt=0.5)
    test_fraction: float = bounded(0.2, gt=0, lt=0.5)
    max_clips: int = bounded(0, ge=0, doc="cap on training clips; 0 = all")
    max_eval_clips: int = bounded(0, ge=0, doc="cap on validation/test clips; 0 = all")
    crop_scale: float = bounded(1.0, gt=0, le=2, doc="folder videos without a box: square side / short side")

    def validate(self) -> None:
        if self.train_frames > self.clip_frames:
            raise ValueError(f"data.train_frames={self.train_frames} exceeds data.clip_frames={self.clip_frames}")


@dataclass
class TalkingHeadModel:
    name: Literal["talkinghead_unet_small", "talkinghead_unet_tiny", "talkinghead_unet"] = "talkinghead_unet_small"
    channels: list[int] = field(default_factory=list)  # (C1, C2, C3); empty: the variant's widths
    branches: list[str] = field(default_factory=lambda: ["audio", "motion"])
    mask_drop: bool = True
    cond_tokens: int = bounded(2, ge=1)
    d_state: int = bounded(4, ge=1)
    expand: int = bounded(1, ge=1)
    bidirectional: bool = True
    ss2d: bool = True
    n_mels: int = bounded(40, ge=8, le=128)
    audio_margin: int = bounded(4, ge=0, le=16, doc="frames of speech context on each side of a window")
    backend: Literal["auto", "reference", "chunked", "triton"] = "auto"

    def validate(self) -> None:
        bad = [b for b in self.branches if b not in ("audio", "motion")]
        if bad or not self.branches or len(set(self.branches)) != len(self.branches):
            raise ValueError(f"model.branches must be a non-empty subset of [audio, motion]; got {self.branches}")
        if self.channels and len(self.channels) != 3:
            raise ValueError(f"model.channels must be three widths (C1, C2, C3) or empty; got {self.channels}")


@dataclass
class TalkingHeadDiffusion:
    train_timesteps: int = bounded(1000, ge=10)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    prediction: Literal["epsilon", "sample", "v_prediction"] = "sample"
    mouth_weight: float = bounded(3.0, ge=1, doc="loss weight of the mouth box relative to the rest")
    t_power: float = bounded(1.0, gt=0, le=1, doc="training timesteps T u^p: 1 uniform, < 1 favours high noise")
    # training gate modes, probabilities of: both, audio only, motion only, none
    mode_probs: list[float] = field(default_factory=lambda: [0.5, 0.2, 0.2, 0.1])

    def validate(self) -> None:
        if len(self.mode_probs) != 4 or min(self.mode_probs) < 0 or sum(self.mode_probs) <= 0:
            raise ValueError(f"diffusion.mode_probs needs 4 non-negative weights (both, audio, motion, none); "
                             f"got {self.mode_probs}")


@dataclass
class TalkingHeadEval:
    steps: int = bounded(25, ge=1, le=1000, doc="DDIM steps")
    guidance_audio: float = bounded(1.0, ge=0)
    guidance_motion: float = bounded(1.0, ge=0)
    modes: list[str] = field(default_factory=lambda: ["both", "motion"])  # sampled on test: audio on, audio off
    sample_val: bool = False  # also sample (and compute lip sync) on validation
    max_clips: int = bounded(0, ge=0, doc="clips sampled per evaluation; 0 = all")
    seed: int = 0
    samples: int = bounded(2, ge=0, doc="mp4 samples written by evaluate on test")
    fid_weights: str = ""  # local torchvision Inception-v3 state dict; "" = FID unavailable
    fvd_weights: str = ""  # local TorchScript I3D (StyleGAN-V's i3d_torchscript.pt); "" = FVD unavailable

    def validate(self) -> None:
        bad = [m for m in self.modes if m not in Df.MODES]
        if bad or not self.modes:
            raise ValueError(f"eval.modes must be a non-empty list of {list(Df.MODES)}; got {self.modes}")


@dataclass
class TalkingHeadConfig(AppConfig):
    data: TalkingHeadData = field(default_factory=TalkingHeadData)
    model: TalkingHeadModel = field(default_factory=TalkingHeadModel)
    diffusion: TalkingHeadDiffusion = field(default_factory=TalkingHeadDiffusion)
    eval: TalkingHeadEval = field(default_factory=TalkingHeadEval)


@register_app("talkinghead")
class TalkingHeadApp(App):
    """talking-head video diffusion (ACTalker): parallel Mamba control by audio and expression"""

    name = "talkinghead"
    config_class = TalkingHeadConfig
    primary_metric = "loss"
    higher_is_better = False
    infer_command = "generate"
    extra_commands = {
        "make-demo-data": ExtraCommand("write the embedded talking-face clips (mp4 + wav + csv + png) to a folder",
                                       needs_model=False),
        "study": ExtraCommand("train and evaluate the ablations (mask-drop, each branch alone) side by side",
                              needs_model=False),
    }
    # The demo: the tiny model, 450 steps on 16-frame clips, 25 DDIM steps on four test clips
    # (about 200 CPU-seconds; at 200 steps the mouth did not yet follow the speech: r = -0.01).
    demo_overrides = ["model.name=talkinghead_unet_tiny", "data.clip_frames=16", "data.train_hop=8",
                      "data.max_clips=96", "data.max_eval_clips=4", "train.max_steps=450", "train.lr=2e-3",
                      "train.eval_every=450", "eval.steps=25", "eval.samples=1"]

    def __init__(self, cfg: TalkingHeadConfig):
        super().__init__(cfg)
        self.mel = A.MelFrames(cfg.model.n_mels)
        self._stats: tuple[np.ndarray, np.ndarray] | None = None
        self._speech: dict[str, list[str]] = {}
        self._schedulers = None
        self._weights: torch.Tensor | None = None

    # ------------------------------------------------------------------------------ data
    def clips(self, split: str) -> list[D.Clip]:
        d = self.cfg.data
        clips = D.folder_clips(d, split) if d.root else D.embedded_clips(d, split)
        self._speech[split] = sorted({c.speech for c in clips})
        return clips

    def build_dataset(self, split: str) -> D.ClipDataset:
        clips = self.clips(split)
        if split == "train":
            self._stats = D.audio_stats(clips, self.mel)
        if self._stats is None:
            raise DataError("the audio normalisation of this run is unknown: evaluate with --run RUN_DIR (its "
                            "app_state.json holds it), not a bare --ckpt")
        crop = self.cfg.data.train_frames if split == "train" else 0
        return D.ClipDataset(clips, self.mel, *self._stats, crop_frames=crop, lead_frames=self.cfg.data.lead_frames,
                             audio_margin=self.cfg.model.audio_margin)

    def run_state(self) -> dict:
        if self._stats is None:
            return {}
        return {"audio_mean": self._stats[0].tolist(), "audio_std": self._stats[1].tolist(),
                "n_mels": self.cfg.model.n_mels, "fps": A.FPS, "sample_rate": A.SAMPLE_RATE, "size": Fc.SIZE,
                "mouth_box": list(Fc.MOUTH_BOX), "speech": self._speech}

    def load_run_state(self, state: dict) -> None:
        if "audio_mean" in state:
            mean, std = np.asarray(state["audio_mean"], np.float32), np.asarray(state["audio_std"], np.float32)
            if len(mean) != self.mel.dim:
                raise DataError(f"app_state.json holds {len(mean)} audio statistics; "
                                f"model.n_mels={self.cfg.model.n_mels} needs {self.mel.dim}")
            self._stats = (mean, std)

    # ------------------------------------------------------------------------------ model
    def build_model(self) -> torch.nn.Module:
        m = self.cfg.model
        kw = dict(audio_dim=self.mel.dim, branches=tuple(m.branches), mask_drop=m.mask_drop, cond_tokens=m.cond_tokens,
                  d_state=m.d_state, expand=m.expand, bidirectional=m.bidirectional, ss2d=m.ss2d,
                  mouth_box=Fc.MOUTH_BOX, backend=m.backend, size=Fc.SIZE, audio_margin=m.audio_margin)
        if m.channels:
            kw["channels"] = tuple(m.channels)
        return create_model(m.name, **kw)

    @property
    def schedulers(self):
        if self._schedulers is None:
            c = self.cfg.diffusion
            settings = Df.DiffusionSettings(c.train_timesteps, c.beta_schedule, c.prediction)
            self._schedulers = Df.make_schedulers(settings)
        return self._schedulers

    def loss_weights(self, device) -> torch.Tensor:
        if self._weights is None or self._weights.device != torch.device(device):
            self._weights = Df.pixel_weights(Fc.SIZE, Fc.MOUTH_BOX, self.cfg.diffusion.mouth_weight, device)
        return self._weights

    def train_step(self, ctx: StepContext, batch: dict) -> dict:
        b = batch["frames"].shape[0]
        gates = Df.sample_gates(b, batch["has_motion"], tuple(self.cfg.diffusion.mode_probs))
        with ctx.autocast():
            loss = Df.diffusion_loss(ctx.model, self.schedulers[0], batch, gates, self.loss_weights(ctx.device),
                                     t_power=self.cfg.diffusion.t_power)
        ctx.optimize(loss)
        return {"loss": loss.detach()}

    # ------------------------------------------------------------------------------ evaluation
    def _gates(self, mode: str, has_motion: torch.Tensor) -> torch.Tensor:
        a, mo = Df.MODE_GATES[mode]
        g = torch.tensor([[a, mo]], device=has_motion.device).repeat(len(has_motion), 1)
        g[:, 1] *= (has_motion > 0).float()
        return g

    def generate_batch(self, model, batch: dict, mode: str, ctx: EvalContext, generator: torch.Generator,
                       steps: int | None = None) -> torch.Tensor:
        """Sampled clips [B, T, 3, S, S] in [-1, 1] for a batch, in ``mode`` (motion off where unknown)."""
        e = self.cfg.eval
        motion = batch["motion"] * (batch["has_motion"] > 0).float().view(-1, 1, 1)
        use = mode
        if mode in ("both", "motion") and not bool((batch["has_motion"] > 0).all()):
            use = {"both": "audio", "motion": "none"}[mode]  # clips without motion controls
        return Df.sample(model, self.schedulers[1], batch["ref"], batch["audio"], motion, use,
                         (e.guidance_audio, e.guidance_motion), steps or e.steps, generator,
                         autocast=ctx.autocast if ctx.amp_dtype is not None else None)

    def evaluate(self, model, loader, ctx: EvalContext) -> dict[str, float]:
        ddpm = self.schedulers[0]
        weights = self.loss_weights(ctx.device)
        total, n = 0.0, 0
        for batch in loader:
            batch = ctx.to_device(batch)
            gates = self._gates("both", batch["has_motion"])
            with ctx.autocast():
                total += Df.fixed_noise_loss(model, ddpm, batch, gates, weights) * len(batch["frames"])
            n += len(batch["frames"])
        out = {"loss": total / max(n, 1)}
        if ctx.split == "test" or self.cfg.eval.sample_val:
            out.update(self.sampled_metrics(model, loader.dataset, ctx))
        return out

    def sampled_metrics(self, model, ds: D.ClipDataset, ctx: EvalContext) -> dict[str, float]:
        """Sample every clip (up to eval.max_clips) in each eval mode; fidelity, lip sync, flicker."""
        from torch.utils.data import DataLoader, Subset

        e = self.cfg.eval
        idx = list(range(len(ds)))[: e.max_clips or None]
        bs = self.cfg.train.eval_batch_size or self.cfg.train.batch_size
        loader = DataLoader(Subset(ds, idx), batch_size=bs, shuffle=False)
        fid = M.FID(e.fid_weights, ctx.device) if e.fid_weights else None
        fvd = M.FVD(e.fvd_weights, ctx.device) if e.fvd_weights else None
        out: dict[str, float] = {}
        gt_sync = M.LipSyncMeter()
        traces: dict[str, list] = {}
        written = 0
        for mode in e.modes:
            sync, ps, ss, fl = M.LipSyncMeter(), [], [], []
            gen = torch.Generator().manual_seed(e.seed)
            for batch in loader:
                batch = ctx.to_device(batch)
                fake = Df.to_uint8(self.generate_batch(model, batch, mode, ctx, gen)).cpu().numpy()
                real = Df.to_uint8(batch["frames"]).cpu().numpy()
                drive = batch["mouth"].cpu().numpy()
                for k in range(len(fake)):
                    sync.update(drive[k], fake[k])
                    ps.append(M.psnr(fake[k], real[k]))
                    ss.append(M.ssim(fake[k], real[k]))
                    fl.append(M.flicker(fake[k], real[k]))
                    if mode == e.modes[0]:
                        gt_sync.update(drive[k], real[k])
                        for meter in (fid, fvd):
                            if meter is not None:
                                meter.update(fake[k], real[k])
                    if len(traces.setdefault(mode, [])) < 3:
                        traces[mode].append((drive[k], M.mouth_opening(fake[k]), M.mouth_opening(real[k]),
                                             fake[k], real[k], int(batch["index"][k])))
            res = sync.compute()
            out.update({f"lipsync_{mode}": res["lipsync"], f"lipsync_pooled_{mode}": res["lipsync_pooled"],
                        f"psnr_{mode}": float(np.mean(ps)), f"ssim_{mode}": float(np.mean(ss)),
                        f"flicker_{mode}": float(np.mean(fl))})
            out["lipsync_clips"] = res["lipsync_clips"]
        g = gt_sync.compute()
        out["lipsync_ground_truth"] = g["lipsync"]
        if fid is not None:
            out["fid"] = fid.compute()
        if fvd is not None:
            out["fvd"] = fvd.compute()
        if ctx.split == "test":
            print(unavailable_line(e.fid_weights, e.fvd_weights), flush=True)
        if ctx.run_dir is not None and ctx.split == "test":
            from ssmkit_apps.talkinghead.report import write_eval_figures

            written = write_eval_figures(ctx.run_dir, ds, traces, e.samples)
        self._last_samples = written
        return out

    def report(self, metrics: dict[str, float], ctx: EvalContext) -> str:
        lines = ["Validation numbers are the denoising loss at fixed timesteps and noise (checkpoint choice). "
                 "Sampled metrics (PSNR, SSIM, lip sync, flicker) come from `evaluate --split test`.",
                 "", unavailable_line(self.cfg.eval.fid_weights, self.cfg.eval.fvd_weights)]
        return "\n".join(lines)

    def demo_summary(self, metrics: dict[str, float]) -> str:
        e = self.cfg.eval
        first = e.modes[0]
        parts = [f"lip-sync r = {metrics.get(f'lipsync_{first}', float('nan')):.2f} ({first})"]
        for m in e.modes[1:]:
            parts.append(f"{metrics.get(f'lipsync_{m}', float('nan')):.2f} ({m})")
        parts.append(f"ground truth {metrics.get('lipsync_ground_truth', float('nan')):.2f}")
        parts.append(f"PSNR {metrics.get(f'psnr_{first}', float('nan')):.1f} dB, "
                     f"SSIM {metrics.get(f'ssim_{first}', float('nan')):.3f}")
        return "; ".join(parts)

    # ------------------------------------------------------------------------------ commands
    @classmethod
    def add_arguments(cls, command: str, parser: argparse.ArgumentParser) -> None:
        if command == "generate":
            parser.add_argument("--ref", required=True, help="reference face image (png/jpg; converted to RGB, "
                                "centre-cropped and resized to 64x64)")
            parser.add_argument("--audio", required=True, help="speech (wav/flac/ogg; stereo is downmixed, other "
                                "rates resampled to 16 kHz)")
            parser.add_argument("--motion", help="expression CSV, one row per 40 ms frame of the audio: "
                                "blink,brow,head_dx,head_dy,head_roll")
            parser.add_argument("--mode", choices=["audio", "motion", "both"],
                                help="signals that drive the face (default: both with --motion, else audio)")
            parser.add_argument("--out", required=True, help="the mp4 to write (video with the audio muxed in)")
            parser.add_argument("--steps", type=int, help="DDIM steps (default: eval.steps)")
            parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
            parser.add_argument("--strip", help="also write a frame-strip PNG here")
        elif command == "make-demo-data":
            parser.add_argument("dir", metavar="DIR", help="output folder (train/, val/, test/ are created)")
        elif command == "study":
            parser.add_argument("--out", required=True, help="folder for the study's runs, table and plots")
            parser.add_argument("--variants", nargs="*", help="subset of variants to run (default: all)")

    def infer(self, model, args: argparse.Namespace, ctx: EvalContext) -> int:
        from ssmkit_apps.talkinghead.generate import generate_command

        return generate_command(self, model, args, ctx)

    def run_command(self, command: str, model, args: argparse.Namespace, ctx) -> int:
        if command == "make-demo-data":
            return make_demo_data(self.cfg, args.dir, overwrite=args.overwrite)
        if command == "study":
            from ssmkit_apps.talkinghead.study import run_study

            run_study(args.out, args.set, variants=args.variants, overwrite=args.overwrite)
            return 0
        return super().run_command(command, model, args, ctx)


def unavailable_line(fid_weights: str, fvd_weights: str = "") -> str:
    """Which pretrained-network metrics this evaluation computed, and why the others are missing."""
    fid = "FID: computed with the Inception-v3 weights in eval.fid_weights." if fid_weights else \
        "FID: unavailable (needs Inception-v3 weights; set eval.fid_weights to a local torchvision state dict)."
    fvd = "FVD: computed with the I3D in eval.fvd_weights (test clips, one feature vector each)." if fvd_weights \
        else "FVD: unavailable (needs I3D weights; set eval.fvd_weights to a local TorchScript i3d_torchscript.pt)."
    return f"{fid} {fvd} SyncNet (LSE-C/LSE-D): unavailable (its pretrained network cannot be fetched here and it " \
           "is not implemented); the lip-sync correlation above is the lip-sync measure."


def make_demo_data(cfg: TalkingHeadConfig, out: str, overwrite: bool = False) -> int:
    """Write the embedded clips of every split in the folder layout (``data.root`` reads it back)."""
    import json

    from ssmkit.engine.files import atomic_write_text, check_output

    root = check_output(out, overwrite=overwrite, is_dir=True)
    d = cfg.data
    if d.root:
        raise DataError(f"make-demo-data renders the embedded clips; drop data.root={d.root!r}")
    meta: dict = {"fps": A.FPS, "sample_rate": A.SAMPLE_RATE, "size": Fc.SIZE, "data_seed": d.data_seed,
                  "controls": list(Fc.CONTROL_COLUMNS), "splits": {}}
    for split in D.SPLITS:
        clips = D.embedded_clips(d, split)
        D.write_clips(root, split, clips)
        meta["splits"][split] = {"clips": len(clips), "speech": sorted({c.speech for c in clips})}
        print(f"{split}: {len(clips)} clips of {d.clip_frames} frames -> {root / split}")
    atomic_write_text(root / "meta.json", json.dumps(meta, indent=1) + "\n")
    print(f"wrote {root}; train on it with: ssmkit talkinghead train --set data.root={root}")
    return 0


__all__ = ["TalkingHeadApp", "TalkingHeadConfig", "make_demo_data"]
