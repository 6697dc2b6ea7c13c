"""ssmkit.models: ready networks built from ssmkit's blocks.

- :class:`VSSM`: a VMamba-style SS2D image classifier (timm conventions), variants
  ``ssmkit_vssm_tiny`` and ``ssmkit_vssm_small``.
- :class:`VSSUNet`: a U-Net of VSS blocks for 2-D or 3-D segmentation (MONAI-style arguments),
  ``ssmkit_vss_unet``.

Importing this package registers them with ssmkit's model registry
(``ssmkit.create_model("ssmkit_vssm_tiny", num_classes=10)``, which also finds them without the
import) and, when timm is installed, registers the VSSM variants with timm's registry, so that
``timm.create_model("ssmkit_vssm_tiny", num_classes=10)`` works after ``import ssmkit.models``.
``import ssmkit`` alone imports neither this package nor timm.
"""

import importlib.util

from ssmkit.models.unet import VSSUNet
from ssmkit.models.vssm import VARIANTS, VSSM, build_vssm, ssmkit_vssm_small, ssmkit_vssm_tiny

TIMM_REGISTERED = importlib.util.find_spec("timm") is not None
if TIMM_REGISTERED:
    from ssmkit.models import _timm  # noqa: F401  (registers the VSSM variants with timm)

__all__ = ["TIMM_REGISTERED", "VARIANTS", "VSSM", "VSSUNet", "build_vssm", "ssmkit_vssm_small", "ssmkit_vssm_tiny"]
