"""Image and text encoders shared by the hashing models.

- :class:`ConvImageEncoder`: a small CNN trained from scratch; [B, 3, H, W] -> a grid of
  tokens [B, (H/8)(W/8), d].
- :class:`TimmImageEncoder`: any timm backbone built without downloading (``pretrained=False``),
  optionally filled from a local checkpoint (``model.image_weights``: a CLIP-like or timm
  state dict, ``.safetensors`` or ``.pt``/``.pth`` read with ``torch.load(weights_only=True)``);
  its feature tokens are projected to d.
- :class:`TextEncoder`: token and position embeddings, optional learned context vectors placed
  after ``[CLS]`` (prompt learning), a small pre-norm transformer with a padding mask.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ssmkit.engine.checkpoint import CheckpointError, load_weights
from ssmkit.errors import DataError

PREFIXES = ("module.", "visual.trunk.", "visual.", "image_encoder.", "vision_model.", "backbone.", "encoder.")


class ConvImageEncoder(nn.Module):
    """Three stride-2 stages of two 3x3 convolutions (BatchNorm, GELU, a residual inside each
    stage): [B, 3, H, W] -> tokens [B, (H/8)*(W/8), d] with a learned position embedding."""

    def __init__(self, d_model: int = 128, image_size: int = 48, widths: tuple[int, int] = (32, 64)):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"ConvImageEncoder needs an image size divisible by 8; got {image_size}")
        chans = (3, *widths, d_model)
        self.down = nn.ModuleList()
        self.refine = nn.ModuleList()
        for cin, cout in zip(chans[:-1], chans[1:]):
            self.down.append(nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout),
                                           nn.GELU()))
            self.refine.append(nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                                             nn.GELU()))
        self.grid = image_size // 8
        self.pos = nn.Parameter(torch.zeros(1, self.grid * self.grid, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.d_model = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, refine in zip(self.down, self.refine):
            x = down(x)
            x = x + refine(x)
        tokens = x.flatten(2).transpose(1, 2)  # [B, N, d]
        if tokens.shape[1] != self.pos.shape[1]:
            raise ValueError(f"image of size {tuple(x.shape[-2:])}x8 does not match the encoder's {self.grid * 8} px")
        return tokens + self.pos


def _strip(state: dict[str, torch.Tensor], own: set[str]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes (DDP's ``module.``, CLIP's ``visual.``, ...) until the keys fit."""
    for _ in range(3):
        if any(k in own for k in state):
            break
        for p in PREFIXES:
            if any(k.startswith(p) for k in state):
                state = {k[len(p):] if k.startswith(p) else k: v for k, v in state.items()}
                break
    return state


class TimmImageEncoder(nn.Module):
    """A timm backbone's feature tokens projected to d: [B, 3, H, W] -> [B, N, d]."""

    def __init__(self, name: str, d_model: int = 128, image_size: int = 224, weights: str = ""):
        super().__init__()
        import timm

        kw = {"pretrained": False, "num_classes": 0}
        try:
            self.backbone = timm.create_model(name, img_size=image_size, **kw)
        except TypeError:  # CNN families take no img_size
            self.backbone = timm.create_model(name, **kw)
        except RuntimeError as err:  # unknown model name
            raise DataError(f"model.timm_name={name!r}: {err}") from None
        if weights:
            self.load_backbone(weights)
        width = int(getattr(self.backbone, "num_features", 0) or getattr(self.backbone, "embed_dim", 0))
        self.proj = nn.Linear(width, d_model)
        self.d_model = d_model

    def load_backbone(self, path: str | Path) -> None:
        """Fill the backbone from a local state dict (no code executed: safetensors or
        ``weights_only`` torch files). Keys may carry CLIP/open_clip/DDP prefixes; timm's own
        checkpoint filter converts OpenAI-CLIP ViT layouts. Classifier heads are ignored."""
        try:
            state = load_weights(path)
        except CheckpointError as err:
            raise DataError(f"model.image_weights: {err}") from None
        module = __import__(type(self.backbone).__module__, fromlist=["checkpoint_filter_fn"])
        filt = getattr(module, "checkpoint_filter_fn", None)
        if filt is not None:
            try:
                state = filt(state, self.backbone)
            except (KeyError, RuntimeError, ValueError, AttributeError):
                pass  # not that layout: match the keys as they are
        own = self.backbone.state_dict()
        state = _strip(dict(state), set(own))
        state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc.", "classifier."))}
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or shapes:
            raise DataError(f"model.image_weights={str(path)!r} does not fit timm model "
                            f"{type(self.backbone).__name__}: missing {missing[:4]}, unexpected {unexpected[:4]}, "
                            f"shape mismatch {shapes[:2]}; check model.timm_name and data.image_size")
        self.backbone.load_state_dict(state, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone.forward_features(x)
        if f.ndim == 4:  # CNN: [B, C, h, w] -> [B, h*w, C]
            f = f.flatten(2).transpose(1, 2)
        return self.proj(f)


class TextEncoder(nn.Module):
    """[B, L] token ids (0 = padding, id 2 = [CLS] first) -> (tokens [B, L + n_ctx, d], mask
    [B, L + n_ctx] True where valid). ``context`` [n_ctx, d], when given, is inserted after
    [CLS]: learned prompt vectors the transformer reads with every caption."""

    def __init__(self, vocab_size: int, d_model: int = 128, n_layers: int = 2, n_heads: int = 4, max_len: int = 24,
                 n_ctx: int = 0, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, max_len + n_ctx, d_model))
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.embed.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.max_len, self.n_ctx, self.vocab_size = max_len, n_ctx, vocab_size

    def forward(self, tokens: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if tokens.ndim != 2 or tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens must be [B, L] with L <= {self.max_len}; got {tuple(tokens.shape)}")
        if int(tokens.max()) >= self.vocab_size or int(tokens.min()) < 0:
            raise ValueError(f"token ids must lie in 0..{self.vocab_size - 1}; "
                             f"got {int(tokens.min())}..{int(tokens.max())}")
        valid = tokens != 0
        x = self.embed(tokens)
        if context is not None and self.n_ctx:
            b = tokens.shape[0]
            ctx = context.unsqueeze(0).expand(b, -1, -1).to(x.dtype)
            x = torch.cat([x[:, :1], ctx, x[:, 1:]], dim=1)
            valid = torch.cat([valid[:, :1], torch.ones(b, self.n_ctx, dtype=torch.bool, device=x.device),
                               valid[:, 1:]], dim=1)
        x = x + self.pos[:, : x.shape[1]]
        x = self.layers(x, src_key_padding_mask=~valid)
        return self.norm(x), valid

    def forward_set(self, items: torch.Tensor, present: torch.Tensor,
                    context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A set of embeddings instead of words: items [B, n, d] (no positions: order carries no
        meaning), present [B, n] bool -> ([CLS] + context + items [B, 1 + n_ctx + n, d], mask)."""
        b = items.shape[0]
        cls = self.embed.weight[2].expand(b, 1, -1) + self.pos[:, :1]
        parts, valid = [cls], [torch.ones(b, 1, dtype=torch.bool, device=items.device)]
        if context is not None and self.n_ctx:
            parts.append(context.unsqueeze(0).expand(b, -1, -1).to(items.dtype) + self.pos[:, 1:1 + self.n_ctx])
            valid.append(torch.ones(b, self.n_ctx, dtype=torch.bool, device=items.device))
        x = torch.cat([*parts, items], dim=1)
        mask = torch.cat([*valid, present.bool()], dim=1)
        x = self.layers(x, src_key_padding_mask=~mask)
        return self.norm(x), mask


__all__ = ["ConvImageEncoder", "TextEncoder", "TimmImageEncoder"]
