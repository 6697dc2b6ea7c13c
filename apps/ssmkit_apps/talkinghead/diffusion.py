"""Diffusion around the UNet: diffusers' schedulers, the training loss, guided DDIM sampling.

The noise schedules and samplers are diffusers' :class:`~diffusers.DDPMScheduler` (training:
``add_noise`` and the targets) and :class:`~diffusers.DDIMScheduler` (sampling); nothing here
re-implements them.

What is diffused is the clip's difference to its reference frame, ``x0 = frames - ref`` in
[-2, 2]: a talking head is its reference plus motion, so the model spends its capacity on the
motion (mouth, lids, pose) rather than on repainting the identity. A sample is ``ref + x0``.

Per-signal classifier-free guidance (gates as the conditions, chained as in InstructPix2Pix):
``p = p(none) + s_a [p(audio) - p(none)] + s_m [p(audio, motion) - p(audio)]`` for both signals;
with one signal, ``p = p(none) + s [p(signal) - p(none)]``. Scales of 1 need one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("both", "audio", "motion", "none")
# (audio gate, motion gate) of each mode
MODE_GATES = {"both": (1.0, 1.0), "audio": (1.0, 0.0), "motion": (0.0, 1.0), "none": (0.0, 0.0)}


@dataclass
class DiffusionSettings:
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction: str = "sample"  # epsilon | sample | v_prediction (diffusers' prediction_type)


def make_schedulers(s: DiffusionSettings):
    """(DDPMScheduler for training, DDIMScheduler for sampling) with the same noise schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler

    kw = dict(num_train_timesteps=s.train_timesteps, beta_schedule=s.beta_schedule, prediction_type=s.prediction,
              clip_sample=True, clip_sample_range=2.0)
    ddpm = DDPMScheduler(**kw)
    ddim = DDIMScheduler(**kw, set_alpha_to_one=True, steps_offset=0, timestep_spacing="trailing")
    return ddpm, ddim


def training_target(ddpm, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the model should predict for ``prediction``: the noise, the clean sample or the velocity."""
    kind = ddpm.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return ddpm.get_velocity(x0, noise, timesteps)
    raise ValueError(f"unknown prediction type {kind!r}; expected epsilon, sample or v_prediction")


def pixel_weights(size: int, mouth_box: tuple[float, float, float, float], mouth_weight: float,
                  device=None) -> torch.Tensor:
    """[1, 1, 1, S, S] loss weights: ``mouth_weight`` inside the mouth box, 1 elsewhere, mean 1."""
    import math

    w = torch.ones(size, size, device=device)
    y0, y1, x0, x1 = mouth_box
    w[math.floor(y0 * size):math.ceil(y1 * size), math.floor(x0 * size):math.ceil(x1 * size)] = mouth_weight
    return (w / w.mean()).view(1, 1, 1, size, size)


def sample_gates(batch: int, has_motion: torch.Tensor, probs: tuple[float, float, float, float]) -> torch.Tensor:
    """Random training gates [B, 2] (audio, motion): modes both/audio/motion/none with ``probs``.

    Drawn from torch's global RNG (checkpointed by the engine). A clip without motion controls
    gets its motion gate off.
    """
    p = torch.tensor(probs, dtype=torch.float32)
    mode = torch.multinomial(p / p.sum(), batch, replacement=True)
    table = torch.tensor([MODE_GATES[m] for m in MODES])
    gates = table[mode].clone()
    gates[:, 1] *= (has_motion.cpu() > 0).float()
    return gates


def sample_timesteps(n: int, num_train_timesteps: int, power: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """[n] training timesteps ``floor(T u^power)``, u uniform: power 1 is uniform, power < 1 favours
    high noise, where the clip must come from the conditions rather than from the noisy input."""
    u = torch.rand(n, generator=generator, device=None if generator is None else generator.device)
    return (u.pow(power) * num_train_timesteps).long().clamp_(0, num_train_timesteps - 1)


def diffusion_loss(model, ddpm, batch: dict[str, torch.Tensor], gates: torch.Tensor, weights: torch.Tensor,
                   generator: torch.Generator | None = None, timesteps: torch.Tensor | None = None,
                   t_power: float = 1.0) -> torch.Tensor:
    """Weighted MSE between the model's prediction and the scheduler's target, one timestep per clip."""
    frames, ref = batch["frames"], batch["ref"]
    b = frames.shape[0]
    x0 = frames - ref[:, None]
    # Without a generator the noise comes from the device's global RNG (no host-to-device copy).
    noise = torch.randn(x0.shape, device=x0.device) if generator is None else \
        torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
    if timesteps is None:
        timesteps = sample_timesteps(b, ddpm.config.num_train_timesteps, t_power, generator).to(x0.device)
    noisy = ddpm.add_noise(x0, noise, timesteps)
    pred = model(noisy, timesteps, ref, batch["audio"], batch["motion"], gates.to(x0.device))
    target = training_target(ddpm, x0, noise, timesteps)
    return ((pred.float() - target) ** 2 * weights).mean()


def guided_passes(mode: str, guidance: tuple[float, float]) -> list[tuple[tuple[float, float], float]]:
    """The (gates, coefficient) pairs whose weighted sum is the guided prediction of ``mode``."""
    s_a, s_m = guidance
    if mode == "none":
        return [((0.0, 0.0), 1.0)]
    if mode == "audio":
        return [((1.0, 0.0), 1.0)] if s_a == 1 else [((0.0, 0.0), 1 - s_a), ((1.0, 0.0), s_a)]
    if mode == "motion":
        return [((0.0, 1.0), 1.0)] if s_m == 1 else [((0.0, 0.0), 1 - s_m), ((0.0, 1.0), s_m)]
    if mode != "both":
        raise ValueError(f"mode must be one of {list(MODES)}; got {mode!r}")
    if s_a == 1 and s_m == 1:
        return [((1.0, 1.0), 1.0)]
    # none + s_a (audio - none) + s_m (both - audio), collected per pass
    return [((0.0, 0.0), 1 - s_a), ((1.0, 0.0), s_a - s_m), ((1.0, 1.0), s_m)]


@torch.no_grad()
def sample(model, ddim, ref: torch.Tensor, audio: torch.Tensor, motion: torch.Tensor, mode: str = "both",
           guidance: tuple[float, float] = (1.0, 1.0), steps: int = 25, generator: torch.Generator | None = None,
           autocast=None) -> torch.Tensor:
    """Generate clips [B, T, 3, S, S] in [-1, 1] from ref [B, 3, S, S], audio [B, T + 2 m, F] (with the
    model's speech margin m), motion [B, T, 5].

    DDIM with ``steps`` steps (eta 0); the initial noise comes from ``generator`` (CPU), so a
    seed fixes the result on any device. ``autocast``: a context-manager factory (bf16 on GPU).
    """
    import contextlib

    b, t = motion.shape[:2]
    s = ref.shape[-1]
    device = ref.device
    passes = guided_passes(mode, guidance)
    x = torch.randn((b, t, 3, s, s), generator=generator).to(device) * ddim.init_noise_sigma
    ddim.set_timesteps(steps, device=device)
    n = len(passes)
    gates = torch.tensor([g for g, _ in passes], device=device).repeat_interleave(b, 0)  # [n*B, 2]
    coef = torch.tensor([c for _, c in passes], device=device).view(n, 1, 1, 1, 1, 1)
    rep = (lambda z: z.repeat(n, *([1] * (z.dim() - 1)))) if n > 1 else (lambda z: z)
    ref_n, audio_n, motion_n = rep(ref), rep(audio), rep(motion)
    ctx = autocast or contextlib.nullcontext
    for step_t in ddim.timesteps:
        ts = torch.full((n * b,), int(step_t), device=device, dtype=torch.long)
        with ctx():
            pred = model(rep(x), ts, ref_n, audio_n, motion_n, gates).float()
        pred = (pred.view(n, b, *pred.shape[1:]) * coef).sum(0)
        x = ddim.step(pred, step_t, x, eta=0.0).prev_sample
    return (ref[:, None] + x).clamp(-1, 1)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3]."""
    return ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1)


def fixed_noise_loss(model, ddpm, batch, gates, weights, seed: int = 0,
                     levels: tuple[int, ...] = (50, 200, 400, 600, 800, 950)) -> float:
    """The diffusion loss averaged over fixed timesteps with seeded noise: a deterministic
    validation number for choosing checkpoints."""
    b = batch["frames"].shape[0]
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for lv in levels:
        ts = torch.full((b,), min(lv, ddpm.config.num_train_timesteps - 1), dtype=torch.long)
        x0 = batch["frames"] - batch["ref"][:, None]
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        noisy = ddpm.add_noise(x0, noise, ts.to(x0.device))
        pred = model(noisy, ts.to(x0.device), batch["ref"], batch["audio"], batch["motion"], gates)
        target = training_target(ddpm, x0, noise, ts.to(x0.device))
        total += float(((pred.float() - target) ** 2 * weights).mean())
    return total / len(levels)


__all__ = ["MODES", "MODE_GATES", "DiffusionSettings", "diffusion_loss", "fixed_noise_loss", "guided_passes",
           "make_schedulers", "pixel_weights", "sample", "sample_gates", "sample_timesteps", "to_uint8",
           "training_target"]
