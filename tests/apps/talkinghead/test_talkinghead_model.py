"""Diffusion wiring (diffusers schedulers, guidance), mask-drop, the gate, and the UNet."""

from __future__ import annotations

import copy

import pytest
import torch

from ssmkit.registry import create_model, list_models
from ssmkit_apps.talkinghead import diffusion as Df
from ssmkit_apps.talkinghead.control import ParallelControl, region_indices


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_scheduler_round_trip_recovers_the_clean_sample(prediction):
    ddpm, ddim = Df.make_schedulers(Df.DiffusionSettings(prediction=prediction))
    ddim.set_timesteps(25)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 2, 3, 8, 8, generator=g) * 4 - 2  # residuals live in [-2, 2]
    noise = torch.randn(x0.shape, generator=g)
    t = ddim.timesteps[[3, 12, 20]]
    noisy = ddpm.add_noise(x0, noise, t)
    # the known truth noise(+sample) = the perfect prediction of each parameterisation
    target = Df.training_target(ddpm, x0, noise, t)
    for i in range(3):
        out = ddim.step(target[i:i + 1], int(t[i]), noisy[i:i + 1])
        torch.testing.assert_close(out.pred_original_sample, x0[i:i + 1], atol=2e-4, rtol=1e-4)
    # a full DDIM run fed the perfect x0 prediction lands exactly on x0
    if prediction == "sample":
        x = torch.randn(x0.shape, generator=g)
        for step in ddim.timesteps:
            x = ddim.step(x0, step, x).prev_sample
        torch.testing.assert_close(x, x0, atol=1e-5, rtol=1e-5)


def test_guidance_passes_recombine_to_the_chained_formula():
    for mode, scales in [("both", (2.0, 1.5)), ("audio", (3.0, 1.0)), ("motion", (1.0, 2.5)), ("both", (1.0, 1.0))]:
        passes = Df.guided_passes(mode, scales)
        assert sum(c for _, c in passes) == pytest.approx(1.0)  # guidance preserves a constant prediction
    p = {g: c for g, c in Df.guided_passes("both", (2.0, 1.5))}
    # none + 2 (audio - none) + 1.5 (both - audio)
    assert p == {(0.0, 0.0): -1.0, (1.0, 0.0): 0.5, (1.0, 1.0): 1.5}
    assert Df.guided_passes("both", (1.0, 1.0)) == [((1.0, 1.0), 1.0)]


def test_training_gates_follow_the_mode_probabilities_and_motion_availability():
    torch.manual_seed(0)
    g = Df.sample_gates(4000, torch.ones(4000), (0.5, 0.2, 0.2, 0.1))
    both = ((g[:, 0] == 1) & (g[:, 1] == 1)).float().mean()
    none = ((g[:, 0] == 0) & (g[:, 1] == 0)).float().mean()
    assert abs(both - 0.5) < 0.03 and abs(none - 0.1) < 0.02
    g = Df.sample_gates(100, torch.zeros(100), (0.5, 0.2, 0.2, 0.1))
    assert (g[:, 1] == 0).all()  # no motion controls, no motion gate


def _control_inputs(b=2, c=16, t=3, h=8, w=8):
    torch.manual_seed(1)
    x = torch.randn(b, c, t, h, w)
    cond = {"audio": torch.randn(b, t, 2, c), "motion": torch.randn(b, t, 2, c)}
    return x, cond


def test_mask_drop_branch_leaves_tokens_outside_its_region_unchanged():
    x, cond = _control_inputs()
    pc = ParallelControl(16, ("audio", "motion"), mask_drop=True)
    for p in pc.parameters():  # a trained-looking branch, not the small initial gain
        torch.nn.init.normal_(p, std=0.3)
    regions = region_indices(8, 8, pc.mouth_box)
    out = pc(x, cond, {"audio": torch.ones(2)})  # the audio branch alone
    flat_in, flat_out = x.flatten(3), out.flatten(3)  # [B, C, T, HW]
    torch.testing.assert_close(flat_out[..., regions["rest"]], flat_in[..., regions["rest"]], atol=0, rtol=0)
    assert (flat_out[..., regions["mouth"]] - flat_in[..., regions["mouth"]]).abs().max() > 1e-3
    # and the motion branch alone writes only outside the mouth
    out = pc(x, cond, {"motion": torch.ones(2)})
    torch.testing.assert_close(out.flatten(3)[..., regions["mouth"]], flat_in[..., regions["mouth"]], atol=0, rtol=0)
    # it also reads only its region: changing mouth tokens does not change the motion branch's output
    x2 = x.clone().flatten(3)
    x2[..., regions["mouth"]] += 5.0
    out2 = pc(x2.view_as(x), cond, {"motion": torch.ones(2)})
    torch.testing.assert_close(out2.flatten(3)[..., regions["rest"]], out.flatten(3)[..., regions["rest"]])
    # without mask-drop the audio branch writes everywhere
    pc.mask_drop = False
    out = pc(x, cond, {"audio": torch.ones(2)})
    assert (out.flatten(3)[..., regions["rest"]] - flat_in[..., regions["rest"]]).abs().max() > 1e-3


def test_gate_off_equals_the_branch_removed():
    torch.manual_seed(0)
    model = create_model("talkinghead_unet_tiny", audio_dim=16)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t, ref, audio, motion, _ = model.example_input(2, 3)
    gated = model(x, t, ref, audio, motion, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    removed = copy.deepcopy(model)
    for block in (removed.control_mid, removed.control_dec):
        del block.branches["audio"]
    del removed.encoders["audio"]
    torch.testing.assert_close(removed(x, t, ref, audio, motion, torch.ones(2, 2)), gated, atol=0, rtol=0)
    # and the gate matters when on, per sample
    on = model(x, t, ref, audio, motion, torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    assert (on[0] - gated[0]).abs().max() > 1e-6  # off is exactly 0
    torch.testing.assert_close(on[1], gated[1], atol=0, rtol=0)


def test_unet_shapes_gradients_and_bad_input():
    assert {"talkinghead_unet", "talkinghead_unet_tiny", "talkinghead_unet_small"} <= set(list_models())
    model = create_model("talkinghead_unet_tiny", audio_dim=16, branches=("audio",), mask_drop=False)
    inputs = model.example_input(2, 4)
    out = model(*inputs)
    assert out.shape == inputs[0].shape
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match=r"expected gates \[B, 2\]"):
        model(*inputs[:5], torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"audio \[B, T \+ 8, 16\]"):
        model(inputs[0], inputs[1], inputs[2], torch.randn(2, 4, 8), inputs[4], inputs[5])


def test_sampler_runs_guided_and_is_seeded():
    torch.manual_seed(0)
    model = create_model("talkinghead_unet_tiny", audio_dim=16).eval()
    _, ddim = Df.make_schedulers(Df.DiffusionSettings(prediction="sample"))
    x, _, ref, audio, motion, _ = model.example_input(1, 3)
    a, b = (Df.sample(model, ddim, ref, audio, motion, "both", (2.0, 1.5), steps=3,
                      generator=torch.Generator().manual_seed(4)) for _ in range(2))
    assert a.shape == x.shape and a.abs().max() <= 1
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_timestep_power_favours_high_noise():
    g = torch.Generator().manual_seed(0)
    uniform = Df.sample_timesteps(20_000, 1000, 1.0, g).float()
    skewed = Df.sample_timesteps(20_000, 1000, 0.5, g).float()
    assert uniform.min() >= 0 and skewed.max() <= 999
    assert abs(uniform.mean() - 500) < 10 and abs(skewed.mean() - 667) < 10  # E[u^0.5] = 2/3


def test_audio_margin_gives_context_and_is_cropped():
    from ssmkit_apps.talkinghead.control import ConditionEncoder
    from ssmkit_apps.talkinghead.data import pad_context

    enc = ConditionEncoder(6, 8, n_tokens=2, margin=3)
    sig = torch.randn(2, 10 + 6, 6)
    assert enc(sig).shape == (2, 10, 2, 8)
    # the first frame's token depends on the speech before the window (its context)...
    changed = sig.clone()
    changed[:, 1] += 3.0
    assert (enc(changed)[:, 0] - enc(sig)[:, 0]).abs().max() > 1e-4
    # ...and speech further than the receptive field (5 + 3 - 2 = 3 frames) away does not matter
    far = sig.clone()
    far[:, 12:] += 3.0
    torch.testing.assert_close(enc(far)[:, :2], enc(sig)[:, :2])
    padded = pad_context(torch.arange(3.0)[:, None], 2)
    assert padded.flatten().tolist() == [0, 0, 0, 1, 2, 2, 2]
