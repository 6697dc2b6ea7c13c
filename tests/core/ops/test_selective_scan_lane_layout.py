"""The backward's lane reduce-scatter (dB/dC, ``LANE_RS``) addresses lanes, not tensor elements.

Its PTX shuffles exchange values between lanes whose ids differ in one bit; they sum the right
numbers only if, in the layout Triton gives the shuffled tiles, lane bit b moves along the channel
axis by 2**b (and nowhere else). This compiles the backward kernel for sm_90 with the installed
Triton (no GPU needed: the wheel ships ptxas) and checks that on every shuffle in the TTGIR, so a
Triton upgrade that changes the layout fails here, not silently in dB/dC on a GPU.
"""

from __future__ import annotations

import math
import re

import pytest

triton = pytest.importorskip("triton")


def _compile_backward(BD: int, T: int, levels: int) -> str:
    """TTGIR of the bf16 backward kernel at N = 16 with the reduce-scatter over ``levels`` lane bits."""
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ssmkit.ops.selective_scan import triton_scan_kernels as kernels

    fn = kernels._scan_bwd_kernel
    bf16_ptrs = {"u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "dout_ptr", "du_ptr", "ddelta_ptr", "dz_ptr"}
    consts = dict(COMPUTE=tl.float32, BD=BD, NP=16, T=T, KSUB=32, HAS_D=True, HAS_Z=True, HAS_BIAS=True,
                  SOFTPLUS=True, HAS_DLAST=False, REVERSE=False, VARLEN=False, PREFETCH=True, PATH=False,
                  DOUT_SHARED=False, PATH_CL=False, LANE_RS=levels)
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            signature[name] = "constexpr"
            constexprs[(i,)] = consts[name]
        elif name.endswith("_ptr"):
            signature[name] = "*bf16" if name in bf16_ptrs else "*i32" if name in ("cu_ptr", "path_ptr") else "*fp32"
            attrs[(i,)] = [["tt.divisibility", 16]]  # as the JIT specializes an aligned launch
        else:
            signature[name] = "i32"
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=1)).asm["ttgir"]


def _lane_bases(layout: str, shape: list[int]) -> list[list[int]]:
    """For each lane-id bit, the tensor coordinate offset it moves to (zeros: a broadcast lane)."""
    if "#ttg.linear" in layout:
        lanes = re.search(r"lane = \[(.*?)\]\s*,\s*warp", layout).group(1)
        return [[int(v) for v in b.split(",")] for b in re.findall(r"\[([-\d,\s]+)\]", lanes)]
    field = lambda key: [int(v) for v in re.search(key + r" = \[([\d,\s]+)\]", layout).group(1).split(",")]
    per_thread, threads, order = field("sizePerThread"), field("threadsPerWarp"), field("order")
    bases = []
    for dim in order:  # fastest dimension first
        for j in range(int(math.log2(threads[dim]))):
            step = per_thread[dim] << j
            bases.append([step if d == dim and step < shape[dim] else 0 for d in range(len(shape))])
    return bases


@pytest.mark.parametrize("BD,T,levels", [(8, 4, 3), (4, 4, 2)])
def test_shuffles_move_along_the_channel_axis(BD, T, levels):
    ttgir = _compile_backward(BD, T, levels)
    layouts = dict(re.findall(r"^#(\w+) = (#ttg\.\w+<\{.*\}>)", ttgir, flags=re.M))
    shuffles = re.findall(r'tt\.elementwise_inline_asm "shfl\.sync\.bfly\.b32 \$0, \$1, (\d+), 31, -1;"'
                          r".*?: tensor<([\dx]+)xi32, #(\w+)>", ttgir)
    # dB and dC: one shuffle per halving step each.
    assert sorted(int(m) for m, _, _ in shuffles) == sorted(2 * [1 << b for b in range(levels)])
    for mask, shape, name in shuffles:
        dims = [int(s) for s in shape.split("x")]
        bit = int(mask).bit_length() - 1
        moved = _lane_bases(layouts[name], dims)[bit]
        channel_only = [0] * (len(dims) - 1) + [int(mask)]
        assert moved == channel_only, (
            f"lane bit {bit} of the shuffled [{shape}] tile moves by {moved} in layout {layouts[name]}; the "
            f"reduce-scatter needs {channel_only} (set_tile_config(lane_rs=0) avoids it)")
