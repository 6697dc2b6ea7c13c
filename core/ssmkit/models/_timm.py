"""timm entry points for the VSSM backbones: ``timm.create_model("ssmkit_vssm_tiny", ...)``.

Imported by ``ssmkit.models`` when timm is installed (never by ``import ssmkit``). Built through
timm's ``build_model_with_cfg``, so ``features_only=True``, ``out_indices``, ``num_classes``,
``global_pool`` and ``in_chans`` behave as for timm's own models. No weights are published and
nothing is downloaded: ``pretrained=True`` needs a local file,
``pretrained_cfg_overlay=dict(file="weights.safetensors")`` (a state dict of this architecture;
a classifier of another size is dropped and re-initialised, as timm does).
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ssmkit.models.vssm import VARIANTS, VSSM


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.9,
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.proj", "classifier": "head.fc", "license": "apache-2.0", **kwargs,
    }


# timm's register_model reads this module attribute by name.
default_cfgs = generate_default_cfgs({name: _cfg() for name in VARIANTS})


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> VSSM:
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if pretrained and not (overlay.get("file") or overlay.get("state_dict")):
        raise ValueError(f"{variant} has no published weights and ssmkit downloads nothing; pass pretrained=False, "
                         "or pretrained=True with pretrained_cfg_overlay=dict(file='weights.safetensors')")
    # One feature map per stage (timm's default out_indices assume a fifth, stem-level map).
    feature_cfg = {"out_indices": tuple(range(len(kwargs.get("depths", VARIANTS[variant]["depths"])))),
                   "flatten_sequential": True}
    return build_model_with_cfg(VSSM, variant, pretrained, feature_cfg=feature_cfg,
                                **{**VARIANTS[variant], **kwargs})


@register_model
def ssmkit_vssm_tiny(pretrained: bool = False, **kwargs: Any) -> VSSM:
    """VMamba-style SS2D classifier, tiny (dims 96-768, depths 2-2-5-2)."""
    return _create("ssmkit_vssm_tiny", pretrained, **kwargs)


@register_model
def ssmkit_vssm_small(pretrained: bool = False, **kwargs: Any) -> VSSM:
    """VMamba-style SS2D classifier, small (dims 96-768, depths 2-2-15-2)."""
    return _create("ssmkit_vssm_small", pretrained, **kwargs)
