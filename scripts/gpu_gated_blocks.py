"""Issue 6 on a GPU machine, in ONE process: fla-core autotunes every kernel on its first call
(minutes of compiling on a fresh machine). With FLA_CACHE_MODE=default (set by gpu_env.sh) its
kernels are pinned instead (scripts/fla_pinned_configs.py, in process too); either way the
compiled kernels live in the process, so the GLA overhead bench, the `gpu` tests and the blocks
bench share them.

    PYTHONPATH=core:apps:/tmp/site python3 scripts/gpu_gated_blocks.py --out $OUT

Steps, each logged with its wall time to OUT/gated_blocks.log: (1) one small chunk_gla forward and
backward to pay the compile (and autotuning when not pinned); (2) ssmkit.bench.blocks_a.gla_fla_overhead (the issue's
B=8, T=4096, H=16, K=V=128 bf16 comparison); (3) pytest -m gpu on the GLA, gated-block and Mamba
tests, in-process; (4) `ssmkit bench blocks --gpu --no-pairs` for every registered block.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--skip", default="", help="comma-separated steps to skip: warm,overhead,tests,blocks")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "gated_blocks.log"), "w")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    # If a step stalls (fla autotuning, a compile), the stacks every 90 s say where.
    faulthandler.dump_traceback_later(90, repeat=True)
    t0 = time.time()
    log(f"FLA_CACHE_MODE={os.environ.get('FLA_CACHE_MODE', 'unset (autotune)')}")
    log(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
    rc = 0
    if os.environ.get("FLA_CACHE_MODE") == "default":
        import fla.ops.gla  # noqa: F401  (imports every module whose kernels get pinned)

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from fla_pinned_configs import pin_in_process

        log(f"pinned in process: {', '.join(pin_in_process())}")
    if "warm" not in skip:
        from ssmkit.ops.gla import gla

        q, k, v = (torch.randn(2, 256, 4, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        g = torch.nn.functional.logsigmoid(torch.randn(2, 256, 4, 128, device="cuda")).to(torch.bfloat16)
        o = gla(q, k, v, g, head_first=False, backend="fla")
        o = o[0] if isinstance(o, tuple) else o
        o.float().sum().backward()
        torch.cuda.synchronize()
        log(f"warm-up (fla compile; autotuning too unless pinned) done at {time.time() - t0:.0f} s")
    if "overhead" not in skip:
        from ssmkit.bench.blocks_a import gla_fla_overhead

        rows = gla_fla_overhead()
        log(json.dumps(rows))
        log(f"overhead done at {time.time() - t0:.0f} s")
    if "tests" not in skip:
        import pytest

        # `python -m pytest` puts the repo root on sys.path (the tests import tests.conftest);
        # an in-process pytest.main does not.
        sys.path.insert(0, os.getcwd())

        rc |= pytest.main(["-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/core/ops/test_gla.py",
                           "tests/core/layers/test_gated_blocks_a.py", "tests/core/layers/test_mamba.py"])
        log(f"tests rc={rc} at {time.time() - t0:.0f} s")
    if "blocks" not in skip:
        from ssmkit.bench.blocks import run

        rc |= run(["--gpu", "--no-pairs", "--json", os.path.join(args.out, "blocks.json")])
        log(f"blocks done at {time.time() - t0:.0f} s")
    return int(bool(rc))


if __name__ == "__main__":
    sys.exit(main())
