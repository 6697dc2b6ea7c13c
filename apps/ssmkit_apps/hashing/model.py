"""Cross-modal hashing models: PromptHash (affinity prompts + adaptive gated selection fusion) and a
DCMH-style baseline. Both map each modality alone to codes, so a query needs nothing of the
other modality.

Interface (what the app, the losses and the index rely on):

- ``encode_image(images [B, 3, H, W])`` and ``encode_text(tokens [B, L])`` -> ``{bits: h}`` with
  ``h`` [B, bits] in (-1, 1) (tanh); the binary code is ``h >= 0``.
- ``forward(images, tokens)`` -> the training outputs (codes of both modalities and whatever
  the model's losses need).
- ``bits``: the code lengths served (16, 32, 64 by default); ``name``: the registered name.

**PromptHash** (after Chen et al., "PromptHash: Affinity-Prompted Collaborative Cross-Modal
Learning for Adaptive Hashing Retrieval")::

    image  -> CNN (or timm) tokens  X_i [B, N, d]
    text   -> [CLS] + P + words -> transformer  X_t [B, L + M, d]      (P: M learned prompt vectors)
    each modality m:  (X_m', P_m') = GatedFusion(X_m, P)                (core block: bidirectional
                      g_m = LN(mean(P_m')),  z_m = ResidualMLP(g_m)       Mamba + transformer + gate)
    codes h_m^K = tanh(W_K z_m), K in {16, 32, 64} plus an auxiliary long code K_aux;
    decoders D_K(h^K) reconstruct the long code.
    training only: label prompt  [CLS] + P + {learned class embeddings of the item's labels}
                   -> the text transformer -> fusion -> codes h_p^K (the affinity target)

One set of affinity prompt vectors P serves both modalities: the text encoder reads them as
context (prompt learning) and the fusion pairs them with each modality's tokens, so the pooled
prompt outputs of an image and of its caption live in one space (aligned by the global and
local InfoNCE losses). The reference code fuses an image with *its own caption* inside the
network, at test time too; here each modality is fused with the shared prompts alone, so a
query image is encoded without its paired text. The reference also writes the labels into a
prompt sentence ("This is an image containing ..."); here the label prompt is a set of learned
class embeddings read by the same text transformer with the same context vectors. It exists
only in training (it needs the labels): both modalities' codes are pulled towards the codes of
the label prompts of the items they share a class with.

**DCMH** (Jiang and Li, "Deep Cross-Modal Hashing", CVPR 2017), style: the same CNN followed,
as CNN-F is in DCMH, by two fully connected layers over its flattened feature map, and an MLP
over the bag of words, each modality with its own hash layers; no prompts, no fusion.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from ssmkit.layers.gated_fusion import GatedFusion
from ssmkit.registry import register_model
from ssmkit_apps.hashing.encoders import ConvImageEncoder, TextEncoder, TimmImageEncoder


def _check_bits(bits: tuple[int, ...] | list[int], aux_bits: int) -> tuple[int, ...]:
    bits = tuple(int(b) for b in bits)
    if not bits or any(b < 1 for b in bits) or len(set(bits)) != len(bits):
        raise ValueError(f"bits must be distinct positive code lengths; got {bits}")
    if aux_bits and aux_bits <= max(bits):
        raise ValueError(f"aux_bits={aux_bits} must exceed the longest code ({max(bits)})")
    return bits


def image_encoder(kind: str, d_model: int, image_size: int, timm_name: str, image_weights: str) -> nn.Module:
    if kind == "cnn":
        if image_weights:
            raise ValueError("model.image_weights needs model.image_encoder=timm (with the checkpoint's "
                             "model.timm_name); the built-in CNN trains from scratch")
        return ConvImageEncoder(d_model, image_size)
    if kind == "timm":
        return TimmImageEncoder(timm_name, d_model, image_size, image_weights)
    raise ValueError(f"image_encoder must be 'cnn' or 'timm'; got {kind!r}")


class ResidualMLP(nn.Module):
    """[.., d] -> [.., d]: pre-norm residual MLP blocks (the hashing trunk)."""

    def __init__(self, d: int, layers: int = 2, hidden: int = 2, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden * d), nn.GELU(),
                                                  nn.Dropout(dropout), nn.Linear(hidden * d, d)) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = x + b(x)
        return x


class PromptHash(nn.Module):
    """PromptHash: see the module docstring. Shapes: images [B, 3, H, W], tokens [B, L]."""

    name = "prompthash"

    def __init__(self, vocab_size: int, bits: tuple[int, ...] = (16, 32, 64), aux_bits: int = 128,
                 d_model: int = 128, n_prompts: int = 8, text_layers: int = 2, n_heads: int = 4, max_len: int = 24,
                 image_size: int = 48, image_encoder_kind: str = "cnn", timm_name: str = "vit_tiny_patch16_224",
                 image_weights: str = "", d_state: int = 16, mlp_layers: int = 2, dropout: float = 0.0,
                 n_classes: int = 0, pool_tokens: bool = True, expand: int = 2, backend: str = "auto"):
        super().__init__()
        self.bits = _check_bits(bits, aux_bits)
        self.n_classes, self.pool_tokens = n_classes, pool_tokens
        self.aux_bits = aux_bits
        self.image = image_encoder(image_encoder_kind, d_model, image_size, timm_name, image_weights)
        self.text = TextEncoder(vocab_size, d_model, text_layers, n_heads, max_len, n_ctx=n_prompts, dropout=dropout)
        self.prompts = nn.Parameter(torch.randn(n_prompts, d_model) * 0.02)
        self.label_embed = nn.Parameter(torch.randn(n_classes, d_model) * 0.02) if n_classes else None
        self.fusion = GatedFusion(d_model, d_state=d_state, expand=expand, n_heads=n_heads, dropout=dropout,
                                  pairing="concat", backend=backend)
        self.norm = nn.LayerNorm(d_model)
        self.trunk = ResidualMLP(d_model, mlp_layers, dropout=dropout)
        all_bits = (*self.bits, aux_bits) if aux_bits else self.bits
        # Hash layers are shared by both modalities (one code space), one per code length.
        self.heads = nn.ModuleDict({str(b): nn.Linear(d_model, b) for b in all_bits})
        self.decoders = nn.ModuleDict({str(b): nn.Sequential(nn.Linear(b, aux_bits), nn.GELU(),
                                                             nn.Linear(aux_bits, aux_bits))
                                       for b in self.bits} if aux_bits else {})

    def _fuse(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, N, d] -> (feature z [B, d], prompt outputs [B, M, d])."""
        if valid is not None:  # padding carries no content into the scan or the attention
            tokens = tokens * valid.unsqueeze(-1).to(tokens.dtype)
        prompts = self.prompts.unsqueeze(0).expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        # Prompts after the content: the forward scan carries the content into them.
        x_out, p_out = self.fusion(tokens, prompts)
        g = p_out.mean(1)
        if self.pool_tokens:  # plus the fused content tokens' mean: a short path from the encoder
            if valid is None:
                g = g + x_out.mean(1)
            else:
                w = valid.unsqueeze(-1).to(x_out.dtype)
                g = g + (x_out * w).sum(1) / w.sum(1).clamp_min(1.0)
        z = self.trunk(self.norm(g))
        return z, p_out

    def _codes(self, z: torch.Tensor) -> dict[int, torch.Tensor]:
        return {int(b): torch.tanh(head(z)) for b, head in self.heads.items()}

    def image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._fuse(self.image(images))

    def text_features(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, valid = self.text(tokens, self.prompts)
        return self._fuse(x, valid)

    def label_features(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The label prompt of multi-hot labels [B, C] -> (feature [B, d], prompt outputs)."""
        if self.label_embed is None or labels.shape[1] != self.n_classes:
            raise ValueError(f"label prompts need labels [B, {self.n_classes}] (model n_classes); "
                             f"got {tuple(labels.shape)}")
        items = self.label_embed.unsqueeze(0).expand(labels.shape[0], -1, -1)
        x, valid = self.text.forward_set(items, labels > 0, self.prompts)
        return self._fuse(x, valid)

    def encode_image(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        codes = self._codes(self.image_features(images)[0])
        return {b: codes[b] for b in self.bits}

    def encode_text(self, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
        codes = self._codes(self.text_features(tokens)[0])
        return {b: codes[b] for b in self.bits}

    def forward(self, images: torch.Tensor, tokens: torch.Tensor,
                labels: torch.Tensor | None = None) -> dict[str, object]:
        """Training outputs; ``labels`` [B, C] add the label prompt's codes (key "prompt")."""
        zi, pi = self.image_features(images)
        zt, pt = self.text_features(tokens)
        hi, ht = self._codes(zi), self._codes(zt)
        recon_i = {b: self.decoders[str(b)](hi[b]) for b in self.bits} if self.aux_bits else {}
        recon_t = {b: self.decoders[str(b)](ht[b]) for b in self.bits} if self.aux_bits else {}
        out = {"img": hi, "txt": ht, "img_feat": zi, "txt_feat": zt, "img_local": pi, "txt_local": pt,
               "img_recon": recon_i, "txt_recon": recon_t}
        if labels is not None and self.label_embed is not None:
            out["prompt"] = self._codes(self.label_features(labels)[0])
        return out


class DCMH(nn.Module):
    """DCMH-style baseline: CNN -> fully connected layers over its feature map -> tanh codes; bag of
    words -> MLP -> tanh codes."""

    name = "dcmh"

    def __init__(self, vocab_size: int, bits: tuple[int, ...] = (16, 32, 64), d_model: int = 128,
                 image_size: int = 48, image_encoder_kind: str = "cnn", timm_name: str = "vit_tiny_patch16_224",
                 image_weights: str = "", text_hidden: int = 512, dropout: float = 0.0):
        super().__init__()
        self.bits = _check_bits(bits, 0)
        self.vocab_size = vocab_size
        self.image = image_encoder(image_encoder_kind, d_model, image_size, timm_name, image_weights)
        with torch.no_grad():  # the token count of this encoder at this image size
            n_tokens = self.image.eval()(torch.zeros(1, 3, image_size, image_size)).shape[1]
        self.image.train()
        # CNN-F's fully connected layers (fc6, fc7) over the flattened last feature map, as in DCMH
        self.image_mlp = nn.Sequential(nn.Flatten(1), nn.Linear(n_tokens * d_model, text_hidden), nn.ReLU(),
                                       nn.Dropout(dropout), nn.Linear(text_hidden, d_model), nn.ReLU())
        self.text_mlp = nn.Sequential(nn.Linear(vocab_size, text_hidden), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(text_hidden, d_model), nn.ReLU())
        self.img_heads = nn.ModuleDict({str(b): nn.Linear(d_model, b) for b in self.bits})
        self.txt_heads = nn.ModuleDict({str(b): nn.Linear(d_model, b) for b in self.bits})

    def bag_of_words(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, L] ids -> [B, vocab] word presence (special tokens 0-3 excluded)."""
        if int(tokens.max()) >= self.vocab_size or int(tokens.min()) < 0:
            raise ValueError(f"token ids must lie in 0..{self.vocab_size - 1}")
        bow = torch.zeros(tokens.shape[0], self.vocab_size, device=tokens.device)
        bow.scatter_(1, tokens, 1.0)
        bow[:, :4] = 0
        return bow

    def encode_image(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        f = self.image_mlp(self.image(images))
        return {b: torch.tanh(self.img_heads[str(b)](f)) for b in self.bits}

    def encode_text(self, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
        f = self.text_mlp(self.bag_of_words(tokens))
        return {b: torch.tanh(self.txt_heads[str(b)](f)) for b in self.bits}

    def forward(self, images: torch.Tensor, tokens: torch.Tensor,
                labels: torch.Tensor | None = None) -> dict[str, object]:
        return {"img": self.encode_image(images), "txt": self.encode_text(tokens)}


def _same_arguments(cls: type) -> Callable:
    """Give a registered function its class's signature, so ``create_model`` checks argument names
    and ``select_kwargs`` picks the ones each model takes."""

    def deco(fn: Callable) -> Callable:
        fn.__signature__ = inspect.signature(cls)
        return fn

    return deco


@register_model("prompthash")
@_same_arguments(PromptHash)
def prompthash(vocab_size: int = 64, **kw) -> PromptHash:
    """PromptHash cross-modal hashing model (affinity prompts + gated SSM/attention fusion)."""
    return PromptHash(vocab_size, **kw)


@register_model("prompthash_tiny")
@_same_arguments(PromptHash)
def prompthash_tiny(vocab_size: int = 64, **kw) -> PromptHash:
    """PromptHash at test size: d=32, 4 prompts, one text layer."""
    kw = {"d_model": 32, "n_prompts": 4, "text_layers": 1, "d_state": 4, "mlp_layers": 1, "aux_bits": 96,
          "n_classes": 10, "bits": (16, 32), "max_len": 12, "image_size": 32, **kw}
    return PromptHash(vocab_size, **kw)


@register_model("dcmh")
@_same_arguments(DCMH)
def dcmh(vocab_size: int = 64, **kw) -> DCMH:
    """DCMH-style baseline (CNN and bag-of-words MLP, no prompts, no fusion)."""
    return DCMH(vocab_size, **kw)


__all__ = ["DCMH", "PromptHash", "ResidualMLP", "dcmh", "prompthash", "prompthash_tiny"]
