"""Properties of the scan kernels' sm_90 compile that a CPU can check (the Triton wheel ships ptxas).

- The backward's lane reduce-scatter (dB/dC, ``LANE_RS``) addresses lanes, not tensor elements.
  Its PTX shuffles exchange values between lanes whose ids differ in one bit; they sum the right
  numbers only if, in the layout Triton gives the shuffled tiles, lane bit b moves along the
  channel axis by 2**b (and nowhere else). Checked on every shuffle in the TTGIR, so a Triton
  upgrade that changes the layout fails here, not silently in dB/dC on a GPU.
- With ``ASM_CVT`` every 2-byte input is converted to float32 by the PTX cvt right after its
  load, and no layout conversion moves 16-bit values (Triton 3.6 otherwise shuffles packed bf16
  pairs and runs the elementwise math on replicated copies: docs/kernels.md, "2-byte inputs").
"""

from __future__ import annotations

import math
import re

import pytest
import triton  # a core dependency on Linux; the CPU compile needs no GPU


def _compile(kernel: str, dtype: str = "bf16", **consts) -> dict:
    """The asm dict (ttgir, ptx, ...) of one scan kernel compiled for sm_90, 2-byte inputs of
    ``dtype``, N = 16 and the constexprs given (the rest default to the bf16 N = 16 case)."""
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ssmkit.ops.selective_scan import triton_scan_kernels as kernels

    fn = getattr(kernels, kernel)
    io_ptrs = {"u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "dout_ptr", "du_ptr", "ddelta_ptr", "dz_ptr",
               "y_ptr"}
    base = dict(COMPUTE=tl.float32, NP=16, KSUB=32, HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True,
                HAS_DLAST=False, HAS_H0=False, SAVE=True, STORE_LAST=False, REVERSE=False, VARLEN=False,
                PREFETCH=True, PATH=False, DOUT_SHARED=False, PATH_CL=False, LANE_RS=0, ASM_CVT=False, NSPLIT=1,
                STORE_Y=False, STORE_DH0=True)
    base.update(consts)
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in base:
            signature[name] = "constexpr"
            constexprs[(i,)] = base[name]
        elif name.endswith("_ptr"):
            signature[name] = f"*{dtype}" if name in io_ptrs else "*i32" if name in ("cu_ptr", "path_ptr") else "*fp32"
            attrs[(i,)] = [["tt.divisibility", 16]]  # as the JIT specializes an aligned launch
        else:
            signature[name] = "i32"
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=1)).asm


def _lane_bases(layout: str, shape: list[int]) -> list[list[int]]:
    """For each lane-id bit, the tensor coordinate offset it moves to (zeros: a broadcast lane)."""
    if "#ttg.linear" in layout:
        lanes = re.search(r"lane = \[(.*?)\]\s*,\s*warp", layout).group(1)
        return [[int(v) for v in b.split(",")] for b in re.findall(r"\[([-\d,\s]+)\]", lanes)]
    def field(key: str) -> list[int]:
        return [int(v) for v in re.search(key + r" = \[([\d,\s]+)\]", layout).group(1).split(",")]

    per_thread, threads, order = field("sizePerThread"), field("threadsPerWarp"), field("order")
    bases = []
    for dim in order:  # fastest dimension first
        for j in range(int(math.log2(threads[dim]))):
            step = per_thread[dim] << j
            bases.append([step if d == dim and step < shape[dim] else 0 for d in range(len(shape))])
    return bases


@pytest.mark.parametrize("BD,T,NP,levels", [pytest.param(8, 4, 16, 3, id="BD8_N16"),
                                             pytest.param(4, 4, 16, 2, id="BD4_N16"),
                                             pytest.param(4, 4, 8, 2, id="BD4_N8"),
                                             # 2 channels per program: small B·D (the occupancy rule)
                                             pytest.param(2, 4, 16, 1, id="BD2_N16")])
def test_shuffles_move_along_the_channel_axis(BD, T, NP, levels):
    ttgir = _compile("_scan_bwd_kernel", BD=BD, T=T, NP=NP, LANE_RS=levels)["ttgir"]
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


@pytest.mark.parametrize("kernel,BD,T,dtype,loads,extra", [
    pytest.param("_scan_fwd_kernel", 16, 8, "bf16", 5, {}, id="fwd_bf16"),  # u, delta, B, C, z
    pytest.param("_scan_fwd_kernel", 16, 8, "fp16", 5, {}, id="fwd_fp16"),
    # pass 1: u, delta, B; pass 2: those, C, z and dout
    pytest.param("_scan_bwd_kernel", 8, 4, "bf16", 9, {}, id="bwd_bf16"),
    # N = 64's backward: pass 2 over two blocks of states, each loading its own B and C.
    pytest.param("_scan_bwd_kernel", 4, 8, "bf16", 11, dict(NP=64, NSPLIT=2, PREFETCH=False),
                 id="bwd_bf16_N64_two_blocks"),
])
def test_two_byte_inputs_are_converted_right_after_their_loads(kernel, BD, T, dtype, loads, extra):
    asm = _compile(kernel, dtype, BD=BD, T=T, ASM_CVT=True, **extra)
    ir = "f16" if dtype == "fp16" else "bf16"
    cvts = re.findall(rf'tt\.elementwise_inline_asm "cvt\.f32\.{ir} \$0, \$1;"', asm["ttgir"])
    assert len(cvts) == loads, f"{len(cvts)} PTX conversions from {ir} in {kernel}; expected one per loaded input"
    assert f"cvt.f32.{ir}" in asm["ptx"]
    moved = [line.strip()[:160] for line in asm["ttgir"].splitlines()
             if "ttg.convert_layout" in line and re.search(rf"x{ir}, #", line)]
    assert not moved, f"layout conversions of {ir} tiles in {kernel}: {moved}"


def test_without_asm_cvt_the_kernels_use_tritons_cast():
    ttgir = _compile("_scan_fwd_kernel", "bf16", BD=16, T=8, ASM_CVT=False)["ttgir"]
    assert "cvt.f32.bf16" not in ttgir and "arith.extf" in ttgir
