"""Write one pinned launch config per fla-core kernel on the GLA path, for FLA_CACHE_MODE=default.

Why: fla-core 0.6.0 autotunes every Triton kernel on its first call for each new key (head dims,
head count, chunk size). On the GLA path that is about 260 configs to compile (for example 48
for `chunk_fwd_kernel_h` alone): minutes on a fresh GPU machine, 155 s for the first small GLA
call on an H100 (22 s with the pins). fla's own escape hatch is a config
directory (FLA_CONFIG_DIR) holding `{kernel_name}.json` with a `default_config`, read when
FLA_CACHE_MODE=default. This script writes that directory; the raw `chunk_gla` baseline and our
GLA op then launch the very same kernels, so an overhead ratio between them stays fair (absolute
times may be slower than fla's autotuned ones; say so next to any number).

    python3 scripts/fla_pinned_configs.py /tmp/fla_configs
    export FLA_CONFIG_DIR=/tmp/fla_configs FLA_CACHE_MODE=default   # before importing fla

In a Python process, ``pin_in_process()`` (after ``import fla.ops.gla``) also pins the two
kernels fla tunes with plain ``triton.autotune``, which do not read FLA_CONFIG_DIR.

The choices are mid-range members of each kernel's own autotune list on an H100 (where fla's
BK_LIST is [32, 64] and BV_LIST [64, 128]). BK=32/BV=64 are the smallest tiles of the backward
kernels, so fla's early prune (tiles must be smaller than K/V or the minimum) never rejects them;
`chunk_gla_bwd_kernel_inter` uses 8 warps because fla drops BK=32 with 4 warps on Hopper with
triton 3.6-3.7 (a WGMMA miscompile it works around).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# kernel name -> (tile kwargs, num_warps, num_stages)
PINNED: dict[str, tuple[dict, int, int]] = {
    "chunk_local_cumsum_scalar_kernel": ({}, 4, 3),
    "chunk_local_cumsum_vector_kernel": ({"BS": 32}, 4, 3),
    "chunk_global_cumsum_scalar_kernel": ({"BT": 64}, 4, 2),
    "chunk_global_cumsum_vector_kernel": ({"BT": 64}, 4, 2),
    "chunk_fwd_kernel_h": ({"BK": 64, "BV": 64}, 4, 2),
    "chunk_bwd_kernel_dh": ({"BK": 64, "BV": 64}, 4, 2),
    "chunk_gla_fwd_A_kernel_intra_sub_inter": ({"BK": 64}, 4, 2),
    "chunk_gla_fwd_A_kernel_intra_sub_intra": ({}, 4, 2),
    "chunk_gla_fwd_A_kernel_intra_sub_intra_split": ({}, 4, 3),
    "chunk_gla_fwd_A_kernel_intra_sub_intra_merge": ({}, 4, 3),
    "chunk_gla_fwd_kernel_o": ({"BK": 64, "BV": 64}, 4, 2),
    "chunk_gla_bwd_kernel_intra": ({}, 4, 2),
    "chunk_gla_bwd_kernel_dA": ({}, 4, 2),
    "chunk_gla_bwd_kernel_dv": ({"BK": 32, "BV": 64}, 4, 2),
    "chunk_gla_bwd_kernel_inter": ({"BK": 32, "BV": 64}, 8, 2),
}


def pin_in_process() -> list[str]:
    """Give every already-importable fla autotuner named in PINNED just its pinned config.

    Two of the GLA path's kernels (`chunk_fwd_kernel_h`, `chunk_bwd_kernel_dh`, 48 configs each)
    use plain `triton.autotune`, which never reads FLA_CONFIG_DIR: on the device they alone took
    about 150 s to tune for one key. A Triton autotuner holding a single config launches it
    without benchmarking, so this pins them (and the rest, belt and braces) in this process.
    Returns the names pinned; import fla.ops.gla before calling.
    """
    import triton
    from triton.runtime.autotuner import Autotuner

    pinned = []
    for module in [m for name, m in list(sys.modules.items()) if name.startswith("fla.ops") and m is not None]:
        for obj in list(vars(module).values()):
            tuner = obj
            while tuner is not None and not isinstance(tuner, Autotuner):
                tuner = getattr(tuner, "fn", None)
            name = getattr(getattr(tuner, "fn", None), "__name__", None)
            if tuner is None or name not in PINNED or name in pinned:
                continue
            kwargs, warps, stages = PINNED[name]
            tuner.configs = [triton.Config(dict(kwargs), num_warps=warps, num_stages=stages)]
            pinned.append(name)
    return pinned


def write(directory: str | Path) -> Path:
    """Write `{kernel}.json` for every pinned kernel into `directory`; returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, (kwargs, warps, stages) in PINNED.items():
        cfg = {"kwargs": kwargs, "num_warps": warps, "num_stages": stages, "num_ctas": 1}
        (out / f"{name}.json").write_text(json.dumps({"kernel_name": name, "default_config": cfg}, indent=1))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="directory for the {kernel}.json files (created); point FLA_CONFIG_DIR at it")
    print(write(parser.parse_args().out_dir))
