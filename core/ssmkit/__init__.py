"""ssmkit: selective-scan kernels, 2D/3D scans, gated blocks and the engine the apps run on.

Layers stack bottom-up: ``ops`` -> ``scans`` -> ``layers`` -> ``engine``; see docs/architecture.md.
"""

from ssmkit.registry import (
    create,
    create_block,
    create_model,
    create_scan,
    list_apps,
    list_blocks,
    list_models,
    list_registered,
    list_scans,
    register,
    register_app,
    register_bench,
    register_block,
    register_dataset,
    register_model,
    register_scan,
)

__version__ = "0.1.0"

__all__ = [
    "create", "create_block", "create_model", "create_scan", "list_apps", "list_blocks",
    "list_models", "list_registered", "list_scans", "register", "register_app", "register_bench",
    "register_block", "register_dataset", "register_model", "register_scan", "__version__",
]
