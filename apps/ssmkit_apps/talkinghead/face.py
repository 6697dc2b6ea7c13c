"""The embedded talking faces: identities, expression signals and a frame renderer.

Two kinds of identity, both aligned to one canonical layout (eyes at y = 27, mouth at y = 46 of
a 64x64 frame, face centred), the way real datasets crop and align faces:

- ``drawn``: a parametric face (skin, hair, eyes with irises, brows, nose, lips, neck, a
  textured background), every size and colour drawn at random per identity.
- ``portrait``: scikit-image's ``astronaut`` photo, cropped to the canonical layout, its smile
  painted over with skin, then warped by a random smooth mesh and colour-shifted per identity.

Per frame, controls move the face (arrays [T], see :data:`CONTROL_COLUMNS`): the mouth opening,
jaw and lip spread come from the audio (``audio.mouth_drive``); blinks, brows and small head
motion (shift and roll) form the expression signal (:func:`expression_signal`). Frames are
rendered at 2x and box-filtered down, all frames of a clip at once with torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 64
SUPER = 2  # supersampling factor of the renderer
EYE_Y, MOUTH_Y, CENTER_X = 27.0, 46.0, 32.0
#: The canonical mouth box (rows y0:y1, columns x0:x1) as fractions of the frame: it holds the
#: mouth in every aligned frame, including the small head motion of the embedded clips.
MOUTH_BOX = (0.58, 0.88, 0.30, 0.70)
AUDIO_COLUMNS = ("mouth", "jaw", "lip_spread")
MOTION_COLUMNS = ("blink", "brow", "head_dx", "head_dy", "head_roll")
CONTROL_COLUMNS = AUDIO_COLUMNS + MOTION_COLUMNS


@dataclass
class Identity:
    """One face: its kind, colours and sizes, and for portraits the prepared base image."""

    kind: str
    seed: int
    params: dict = field(default_factory=dict)
    # The static image warped per frame, float in [0, 1], S = SIZE * SUPER: a portrait's RGB
    # [3, S, S], or a drawn head's RGBA [4, S, S] (with its background in params["_bg"]).
    base: torch.Tensor | None = None


# ------------------------------------------------------------------------------ small helpers


def _grid(n: int = SIZE * SUPER) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in 64-px units: (x [n, n], y [n, n])."""
    c = (torch.arange(n, dtype=torch.float32) + 0.5) / (n / SIZE)
    y, x = torch.meshgrid(c, c, indexing="ij")
    return x, y


def _ellipse(x, y, cx, cy, rx, ry) -> torch.Tensor:
    """Anti-aliased coverage in [0, 1] of an ellipse; all arguments broadcast."""
    rx = torch.as_tensor(rx, dtype=torch.float32).clamp_min(1e-3)
    ry = torch.as_tensor(ry, dtype=torch.float32).clamp_min(1e-3)
    u, v = (x - cx) / rx, (y - cy) / ry
    # Signed distance to the edge ~ f / |grad f| for f = u^2 + v^2 - 1 (in 64-px units), exact
    # enough within a pixel of the edge, which is all the anti-aliasing needs: one output pixel
    # of soft edge, also for thin ellipses (lip lines) whose edge a radial measure would smear.
    grad = 2 * torch.sqrt((u / rx) ** 2 + (v / ry) ** 2).clamp_min(1e-6)
    # An ellipse shrinking to nothing (a closing mouth) fades out instead of degenerating into
    # an infinitely long line.
    fade = (torch.minimum(rx, ry) / 0.2).clamp(0, 1)
    return ((1 - u * u - v * v) / grad * SUPER + 0.5).clamp(0, 1) * fade


def _over(img: torch.Tensor, alpha: torch.Tensor, color) -> torch.Tensor:
    """Composite ``color`` ([3] or [T, 3]) over ``img`` [T, 3, n, n] with coverage ``alpha`` [T|1, n, n]."""
    col = torch.as_tensor(color, dtype=torch.float32)
    col = col.view(-1, 3, 1, 1) if col.dim() == 2 else col.view(1, 3, 1, 1)
    a = alpha.unsqueeze(1)
    return img * (1 - a) + col * a


def _smooth_noise(rng: np.random.Generator, n: int, cells: int, amp: float) -> torch.Tensor:
    """[n, n] smooth random texture (bicubic-upsampled coarse noise) of amplitude ``amp``."""
    coarse = torch.from_numpy(rng.normal(size=(1, 1, cells, cells)).astype(np.float32))
    return F.interpolate(coarse, size=(n, n), mode="bicubic", align_corners=False)[0, 0] * amp


def _downsample(img: torch.Tensor) -> torch.Tensor:
    """[T, 3, S*n, S*n] -> uint8 [T, n, n, 3] with a box filter."""
    small = F.avg_pool2d(img, SUPER) if SUPER > 1 else img
    return (small.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _local(x, y, ctl: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Face-local coordinates [T, n, n]: undo each frame's head shift and roll (about the face centre)."""
    cx, cy = CENTER_X, 36.0
    dx, dy = ctl["head_dx"].view(-1, 1, 1), ctl["head_dy"].view(-1, 1, 1)
    a = -ctl["head_roll"].view(-1, 1, 1) * math.pi / 180
    u, v = x - cx - dx, y - cy - dy
    return cx + u * torch.cos(a) - v * torch.sin(a), cy + u * torch.sin(a) + v * torch.cos(a)


def _controls(ctl: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    missing = [c for c in CONTROL_COLUMNS if c not in ctl]
    if missing:
        raise ValueError(f"render needs controls {list(CONTROL_COLUMNS)}; missing {missing}")
    lengths = {len(ctl[c]) for c in CONTROL_COLUMNS}
    if len(lengths) != 1:
        raise ValueError(f"every control needs one value per frame; got lengths {sorted(lengths)}")
    return {c: torch.as_tensor(np.asarray(ctl[c], dtype=np.float32)) for c in CONTROL_COLUMNS}


# ------------------------------------------------------------------------------ identities


def make_identity(kind: str, seed: int) -> Identity:
    """A random face of ``kind`` ("drawn" or "portrait"), a pure function of ``seed``."""
    rng = np.random.default_rng(seed)
    hue = rng.uniform(0, 1)
    skin_tones = np.array([[0.96, 0.80, 0.69], [0.87, 0.67, 0.53], [0.73, 0.52, 0.39], [0.55, 0.37, 0.26],
                           [0.94, 0.76, 0.60]])
    skin = skin_tones[rng.integers(len(skin_tones))] * rng.uniform(0.92, 1.05) + rng.normal(0, 0.02, 3)
    p = {
        "skin": np.clip(skin, 0.15, 1.0),
        "lip": np.clip(np.array([0.70, 0.30, 0.32]) * rng.uniform(0.75, 1.05) + rng.normal(0, 0.03, 3), 0, 1),
        "bg": np.clip(np.array([0.5 + 0.35 * math.cos(2 * math.pi * (hue + k / 3)) for k in range(3)])
                      * rng.uniform(0.6, 1.0), 0.05, 0.95),
        "hair": np.clip(np.array([[0.12, 0.08, 0.05], [0.35, 0.22, 0.10], [0.80, 0.65, 0.35], [0.45, 0.45, 0.45],
                                  [0.55, 0.20, 0.08]])[rng.integers(5)] + rng.normal(0, 0.03, 3), 0, 1),
        "shirt": np.clip(rng.uniform(0.1, 0.9, 3), 0, 1),
        "iris": np.clip(np.array([[0.25, 0.15, 0.08], [0.20, 0.35, 0.55], [0.25, 0.45, 0.25]])[rng.integers(3)]
                        + rng.normal(0, 0.03, 3), 0, 1),
        "face_rx": rng.uniform(15.5, 18.5), "face_ry": rng.uniform(19.0, 22.0),
        "eye_dx": rng.uniform(7.0, 8.8), "eye_rx": rng.uniform(3.0, 3.8), "eye_ry": rng.uniform(1.8, 2.4),
        "mouth_w": rng.uniform(5.5, 7.0), "brow_len": rng.uniform(3.5, 4.8), "hair_top": rng.uniform(8.0, 13.0),
        "bg_seed": int(rng.integers(1 << 30)),
    }
    ident = Identity(kind, seed, p)
    if kind == "portrait":
        ident.base = _portrait_base(rng, p)
    elif kind == "drawn":
        p["_bg"], ident.base = _drawn_layers(p)
    else:
        raise ValueError(f"identity kind must be 'drawn' or 'portrait'; got {kind!r}")
    return ident


# The astronaut photo (512x512): eyes at y ~ 101, mouth centre (224, 145). A 141-px square from
# (x=153, y=44) scales eye-mouth distance 44 px to the canonical 19 px.
_PORTRAIT_CROP = (44, 153, 141)
_PORTRAIT_CACHE: dict[str, torch.Tensor] = {}


def _astronaut_crop() -> torch.Tensor:
    """[3, S, S] float: the astronaut's face in the canonical layout, smile painted over with skin."""
    if "crop" not in _PORTRAIT_CACHE:
        from skimage import data

        y0, x0, n = _PORTRAIT_CROP
        img = torch.from_numpy(data.astronaut()[y0:y0 + n, x0:x0 + n].astype(np.float32) / 255).permute(2, 0, 1)
        n_out = SIZE * SUPER
        img = F.interpolate(img[None], size=(n_out, n_out), mode="bicubic", antialias=True, align_corners=False)[0]
        x, y = _grid(n_out)
        # Skin colour from the cheeks, a smooth fill over the open smile (a closed mouth to start from).
        cheeks = (_ellipse(x, y, 24, 40, 3, 2.5) + _ellipse(x, y, 40, 40, 3, 2.5)).clamp(0, 1)
        skin = (img * cheeks).sum((1, 2)) / cheeks.sum()
        shade = F.avg_pool2d(img[None], 15, 1, 7, count_include_pad=False)[0]  # local lighting to keep
        fill = skin.view(3, 1, 1) * (shade.mean(0, keepdim=True) / skin.mean()).clamp(0.85, 1.1)
        a = _ellipse(x, y, CENTER_X, MOUTH_Y - 0.5, 8.5, 4.0)
        img = img * (1 - a) + fill * a
        _PORTRAIT_CACHE["crop"] = img.clamp(0, 1)
        _PORTRAIT_CACHE["skin"] = skin
    return _PORTRAIT_CACHE["crop"]


def _portrait_base(rng: np.random.Generator, p: dict) -> torch.Tensor:
    """The astronaut warped by a random smooth mesh (a new face shape) and colour-shifted."""
    img = _astronaut_crop()
    n = img.shape[-1]
    # Mesh: 5x5 control offsets (up to ~2 px), upsampled smoothly to a dense displacement field.
    offs = torch.from_numpy(rng.normal(0, 1.0, size=(1, 2, 5, 5)).astype(np.float32)).clamp(-2.2, 2.2)
    offs[..., 0, :] = 0
    offs[..., -1, :] = 0  # keep the frame edges in place
    disp = F.interpolate(offs, size=(n, n), mode="bicubic", align_corners=True)[0] * (2.0 / SIZE)
    lin = torch.linspace(-1 + 1 / n, 1 - 1 / n, n)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    stretch = rng.uniform(0.93, 1.07)  # face width
    grid = torch.stack([gx * stretch + disp[0], gy + disp[1]], -1)[None]
    out = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    gain = torch.from_numpy(rng.uniform(0.85, 1.12, 3).astype(np.float32)).view(3, 1, 1)
    p["skin"] = (_PORTRAIT_CACHE["skin"] * gain.view(3)).clamp(0, 1).numpy()
    p["lip"] = np.clip(np.array([0.62, 0.30, 0.30]) * gain.view(3).numpy(), 0, 1)
    # The photo's own eyes (canonical x = 32 -+ 10.6) move inwards as the width stretch grows.
    p.update(eye_dx=10.6 / stretch, eye_rx=3.3 / stretch, eye_ry=1.7, brow_len=0.0)
    return (out * gain).clamp(0, 1)


# ------------------------------------------------------------------------------ expression


def expression_signal(n_frames: int, rng: np.random.Generator, fps: int = 25) -> dict[str, np.ndarray]:
    """Blinks, brows and head motion for ``n_frames`` frames: arrays [T] (independent of the audio).

    Blinks arrive as a Poisson process (about one every 3 s) and close the lids over 5 frames;
    brows and head pose follow slow Ornstein-Uhlenbeck processes with occasional brow raises;
    head shift stays within about 2 px and roll within about 5 degrees.
    """
    t = n_frames

    def ou(theta: float, sigma: float, start_sd: float) -> np.ndarray:
        v = np.empty(t, np.float32)
        cur = rng.normal(0, start_sd)
        for i in range(t):
            cur += -theta * cur + sigma * rng.normal()
            v[i] = cur
        return v

    blink = np.zeros(t, np.float32)
    shape = np.array([0.35, 0.85, 1.0, 0.7, 0.3], np.float32)
    i = int(rng.integers(0, max(2, int(1.5 * fps))))
    while i < t:
        j = np.arange(i, min(t, i + len(shape)))
        blink[j] = np.maximum(blink[j], shape[: len(j)])
        i += len(shape) + int(rng.exponential(2.5 * fps))
    brow = ou(0.08, 0.08, 0.3)
    for s in np.nonzero(rng.random(t) < 0.6 / (fps * 2))[0]:  # a raise every ~2 s on average
        k = np.arange(t)
        brow += 0.9 * np.exp(-0.5 * ((k - s) / 3.0) ** 2).astype(np.float32)
    return {"blink": np.clip(blink, 0, 1), "brow": np.clip(brow, -1, 1.5),
            "head_dx": np.clip(ou(0.05, 0.18, 0.8), -2.2, 2.2), "head_dy": np.clip(ou(0.05, 0.12, 0.5), -1.5, 1.5),
            "head_roll": np.clip(ou(0.05, 0.45, 2.0), -5.0, 5.0)}


# ------------------------------------------------------------------------------ rendering


def _window(img, lx, ly, rows: tuple[float, float], draw, *args) -> torch.Tensor:
    """Run ``draw`` on the band of rows ``rows`` (64-px units) only: features are small, and
    drawing them on the whole frame would cost most of the render time."""
    r0, r1 = int(rows[0] * SUPER), int(rows[1] * SUPER)
    c0, c1 = int(12 * SUPER), int(52 * SUPER)
    img = img.clone()
    img[..., r0:r1, c0:c1] = draw(img[..., r0:r1, c0:c1], lx[..., r0:r1, c0:c1], ly[..., r0:r1, c0:c1], *args)
    return img


def _draw_mouth(img, lx, ly, ctl, p) -> torch.Tensor:
    m, jaw, spread = ctl["mouth"].view(-1, 1, 1), ctl["jaw"].view(-1, 1, 1), ctl["lip_spread"].view(-1, 1, 1)
    cy = MOUTH_Y + 0.8 * jaw
    w = p["mouth_w"] * (1 + 0.35 * (spread - 0.4) - 0.12 * m)
    lip = _ellipse(lx, ly, CENTER_X, cy + 0.6 * m, w, 1.5 + 3.6 * m)
    img = _over(img, lip, p["lip"])
    inner = _ellipse(lx, ly, CENTER_X, cy + 0.7 * m, 0.82 * w, 3.4 * m)
    img = _over(img, inner, [0.12, 0.03, 0.04])
    # Upper teeth: a band at the top of the opening, a fifth of its height, fading in with it.
    top = cy + 0.7 * m - 3.4 * m
    teeth = inner * ((top + 1.36 * m - ly) * SUPER + 0.5).clamp(0, 1) * ((m - 0.25) / 0.2).clamp(0, 1)
    img = _over(img, teeth * 0.85, [0.93, 0.92, 0.88])
    seam = _ellipse(lx, ly, CENTER_X, cy, w * 0.9, 0.35) * (1 - m * 3).clamp(0, 1)  # closed lips' line
    return _over(img, seam, np.asarray(p["lip"]) * 0.55)


def _draw_eyes(img, lx, ly, ctl, p, skin) -> torch.Tensor:
    blink, brow = ctl["blink"].view(-1, 1, 1), ctl["brow"].view(-1, 1, 1)
    for side in (-1, 1):
        ex = CENTER_X + side * p["eye_dx"]
        # The lid comes down from the top: skin covers the eye above a line that falls with blink.
        eye = _ellipse(lx, ly, ex, EYE_Y, p["eye_rx"] + 0.4, p["eye_ry"] + 0.5)
        lid_line = EYE_Y - p["eye_ry"] - 0.5 + blink * (2 * p["eye_ry"] + 1.0)
        lid = eye * ((lid_line - ly) * SUPER + 0.5).clamp(0, 1)
        img = _over(img, lid, skin)
        img = _over(img, eye * ((ly - lid_line).abs() < 0.45).float() * (blink > 0.05).float(),
                    np.asarray(skin) * 0.55)
        by = EYE_Y - 4.4 - 1.6 * brow  # brows move up and down
        if p["brow_len"] > 0:
            brow_mask = _ellipse(lx, ly, ex + side * 0.4, by, p["brow_len"], 0.75)
            img = _over(img, brow_mask, np.asarray(p["hair"]) * 0.8)
    return img


def _drawn_layers(p: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A drawn identity's static layers: background [3, S, S] and the neutral head RGBA [4, S, S]
    (face, hair, neck, shoulders, nose and open eyes; lids, brows and mouth are drawn per frame)."""
    n = SIZE * SUPER
    x, y = _grid(n)
    rng = np.random.default_rng(p["bg_seed"])
    bg = torch.as_tensor(p["bg"], dtype=torch.float32).view(3, 1, 1) * (1.05 - 0.12 * y / SIZE)
    bg = (bg + _smooth_noise(rng, n, 6, 0.05) + _smooth_noise(rng, n, 24, 0.015)).clamp(0, 1)
    skin = np.asarray(p["skin"])
    head = torch.zeros(1, 3, n, n)
    alpha = torch.zeros(1, n, n)

    def put(a: torch.Tensor, color) -> None:
        nonlocal head, alpha
        head = _over(head, a[None], color)
        alpha = alpha + a[None] * (1 - alpha)

    put(_ellipse(x, y, CENTER_X, 71, 30, 14), p["shirt"])
    put(_ellipse(x, y, CENTER_X, 56, 7.5, 10), skin * 0.85)
    put(_ellipse(x, y, CENTER_X, 30, p["face_rx"] + 3.0, p["face_ry"] + 1.5) * (y < 34).float(), p["hair"])
    upper = _ellipse(x, y, CENTER_X, 36, p["face_rx"], p["face_ry"]) * (y <= 36).float()
    lower = _ellipse(x, y, CENTER_X, 36, p["face_rx"], p["face_ry"] - 1.0) * (y > 36).float()
    face = torch.maximum(upper, lower)
    shading = 1 - 0.18 * (((x - CENTER_X) / p["face_rx"]) ** 2).clamp(0, 1)
    tex = 1 + _smooth_noise(rng, n, 16, 0.02)
    skin_img = torch.as_tensor(skin, dtype=torch.float32).view(1, 3, 1, 1) * (shading * tex)
    head = head * (1 - face) + skin_img * face
    alpha = alpha + face[None] * (1 - alpha)
    put(_ellipse(x, y, CENTER_X, 10 + p["hair_top"] * 0.3, p["face_rx"] + 1.5, 6.0), p["hair"])
    put(_ellipse(x, y, CENTER_X + 0.6, 36.5, 1.6, 4.0) * 0.35, skin * 0.7)
    for side in (-1, 1):
        ex = CENTER_X + side * p["eye_dx"]
        eye = _ellipse(x, y, ex, EYE_Y, p["eye_rx"], p["eye_ry"])
        head = _over(head, eye[None], [0.95, 0.95, 0.93])
        head = _over(head, (_ellipse(x, y, ex, EYE_Y, 1.55, 1.55) * eye)[None], p["iris"])
        head = _over(head, _ellipse(x, y, ex, EYE_Y, 0.7, 0.7)[None], [0.02, 0.02, 0.02])
    return bg, torch.cat([head[0], alpha], 0)


def _render(ident: Identity, ctl: dict[str, torch.Tensor]) -> torch.Tensor:
    """[T, 3, S, S]: warp the identity's static head by each frame's pose, jaw and brows, then
    draw lids, brows and mouth in face-local coordinates."""
    p, t = ident.params, len(ctl["mouth"])
    n = SIZE * SUPER
    x, y = _grid(n)
    lx, ly = _local(x, y, ctl)
    jaw, brow = ctl["jaw"].view(-1, 1, 1), ctl["brow"].view(-1, 1, 1)
    # Jaw drop: the chin below the mouth line moves down (sampled from above); the brow band
    # moves with the brows (only a photo has brows in its pixels; drawn brows are drawn below).
    below = ((ly - (MOUTH_Y - 1)) / 3).clamp(0, 1) * (1 - ((lx - CENTER_X).abs() / 17).clamp(0, 1) ** 2)
    below = below * (1 - ((ly - 62) / 6).clamp(0, 1))
    sy = ly - 2.4 * jaw * below
    if ident.kind == "portrait":
        band = torch.exp(-0.5 * ((ly - (EYE_Y - 5)) / 2.2) ** 2) * (1 - ((lx - CENTER_X).abs() / 16).clamp(0, 1))
        sy = sy + 1.5 * brow * band
    grid = torch.stack([lx / SIZE * 2 - 1, sy / SIZE * 2 - 1], -1)  # [T, n, n, 2], align_corners=False
    base = ident.base[None].expand(t, -1, -1, -1)
    img = F.grid_sample(base, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if ident.kind == "drawn":  # the head over a static background
        bg = ident.params["_bg"]
        img = img[:, :3] * img[:, 3:] + bg[None] * (1 - img[:, 3:])
    img = _window(img, lx, ly, (15, 34), _draw_eyes, ctl, p, p["skin"])
    return _window(img, lx, ly, (36, 60), _draw_mouth, ctl, p)


def render_clip(ident: Identity, controls: dict[str, np.ndarray]) -> np.ndarray:
    """Frames uint8 [T, 64, 64, 3] of ``ident`` following ``controls`` (arrays [T], CONTROL_COLUMNS)."""
    ctl = _controls(controls)
    with torch.no_grad():
        img = _render(ident, ctl)
    return _downsample(img).numpy()


def neutral_controls(n_frames: int = 1) -> dict[str, np.ndarray]:
    """Mouth closed, eyes open, brows and head at rest: the pose of a reference frame."""
    rest = {"lip_spread": 0.4}
    return {c: np.full(n_frames, rest.get(c, 0.0), np.float32) for c in CONTROL_COLUMNS}


def reference_frame(ident: Identity) -> np.ndarray:
    """uint8 [64, 64, 3]: ``ident`` in the neutral pose (the identity frame a clip is generated from)."""
    return render_clip(ident, neutral_controls(1))[0]


def mouth_box_pixels(size: int = SIZE, box: tuple[float, float, float, float] = MOUTH_BOX) -> tuple[int, int, int, int]:
    """The mouth box in whole pixels (y0, y1, x0, x1) of a ``size`` x ``size`` frame, rounded outwards."""
    y0, y1, x0, x1 = box
    return (math.floor(y0 * size), math.ceil(y1 * size), math.floor(x0 * size), math.ceil(x1 * size))


__all__ = ["AUDIO_COLUMNS", "CONTROL_COLUMNS", "Identity", "MOTION_COLUMNS", "MOUTH_BOX", "SIZE",
           "expression_signal", "make_identity", "mouth_box_pixels", "neutral_controls", "reference_frame",
           "render_clip"]
