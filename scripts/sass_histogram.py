"""Compile a Triton scan kernel for sm_90 on a machine without a GPU and histogram its SASS.

    python scripts/sass_histogram.py [KERNELS] [--kernel _scan_bwd_kernel] [--dt bf16] [--N 16]
        [--BD 8] [--T 4] [--pf 1] [--maxnreg 168] [--dump out.sass] [--ttgir out.ttgir]

KERNELS is the kernels' file (default core/ssmkit/ops/selective_scan/triton_scan_kernels.py) or a
module name. A file is loaded on its own, without torch or the ssmkit package, so the count can
run under another Triton, e.g. the GPU machine's (3.6, whose layout choices differ from CI's 3.8):

    python3 -m venv /tmp/t36 && /tmp/t36/bin/pip install triton==3.6.0
    /tmp/t36/bin/python scripts/sass_histogram.py --kernel _scan_fwd_kernel --BD 16 --T 8

Constexpr switches from the environment (0/1 unless noted): REV (reverse scan), LANE_RS=k (the
dB/dC reduce-scatter over k lane bits), PATH_MODE / PATH_CL (path-index mode, channels-last map),
ASM_CVT (PTX upcast of 2-byte inputs), NSPLIT=k (the backward's pass 2 in k blocks of states),
SAVE (the forward keeps segment states, default 1), HZ (z gate, default 1); DIV16=0 drops the
JIT's divisibility-by-16 hints on integer arguments.

Prints the Triton version, registers, stack (spill) bytes, the instruction total and the counts of
the instructions that matter for the scan (SHFL, MUFU, loads/stores, barriers, FP32 ops, 16-bit
unpacking). Uses the ptxas, cuobjdump and nvdisasm binaries that ship with the triton wheel; no
device time.
"""
import argparse
import collections
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import types

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEFAULT_KERNELS = os.path.join(ROOT, "core", "ssmkit", "ops", "selective_scan", "triton_scan_kernels.py")
IO_PTRS = {"u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "dout_ptr", "y_ptr", "du_ptr", "ddelta_ptr", "dz_ptr"}
SHOWN = ["SHFL", "MUFU", "RED", "ATOM", "LDG", "STG", "LDS", "STS", "STSM", "BAR", "FFMA", "FMUL", "FADD", "F2F",
         "PRMT", "SHF", "SEL", "FSEL", "BRA"]


def load_kernels(spec: str):
    if not spec.endswith(".py"):
        return importlib.import_module(spec)
    # The kernels import their Triton helpers from sibling modules (ssmkit.ops.selective_scan.*).
    # Stand-in packages let those imports resolve without running the packages' __init__, which
    # needs torch (absent from a side venv holding only another Triton).
    here = os.path.dirname(os.path.abspath(spec))
    parts = ["ssmkit", "ssmkit.ops", "ssmkit.ops.selective_scan"]
    dirs = [os.path.dirname(os.path.dirname(here)), os.path.dirname(here), here]
    for name, path in zip(parts, dirs):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [path]
            sys.modules[name] = pkg
    loader = importlib.util.spec_from_file_location("scan_kernels", spec)
    mod = importlib.util.module_from_spec(loader)
    sys.modules["scan_kernels"] = mod  # Triton's JIT looks the module up while compiling
    loader.loader.exec_module(mod)
    return mod


def env_flag(name: str, default: int = 0) -> int:
    return int(os.environ.get(name, default))


def compile_kernel(fn, dt: str, N: int, BD: int, T: int, pf: bool, warps: int = 1, maxnreg: int | None = None):
    """As the JIT specializes a launch: pointers 16-byte aligned and, with DIV16=1 (default), the
    integer arguments divisible by 16 (L, D, N, ... of the GPU table's shapes; G is 1 there)."""
    path = bool(env_flag("PATH_MODE"))
    consts = dict(COMPUTE=tl.float32, BD=BD, NP=N, T=T, KSUB=32, HAS_D=True, HAS_Z=bool(env_flag("HZ", 1)),
                  HAS_BIAS=True, SOFTPLUS=True, HAS_DLAST=False, HAS_H0=False, SAVE=bool(env_flag("SAVE", 1)),
                  STORE_LAST=False, REVERSE=bool(env_flag("REV")), VARLEN=False, PREFETCH=pf, HAS_C=True,
                  LANE_RS=env_flag("LANE_RS"), PATH=path, DOUT_SHARED=path, PATH_CL=bool(env_flag("PATH_CL")),
                  ASM_CVT=bool(env_flag("ASM_CVT")), NSPLIT=env_flag("NSPLIT", 1), STORE_Y=False, STORE_DH0=True)
    div16 = bool(env_flag("DIV16", 1))
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            signature[name] = "constexpr"
            constexprs[(i,)] = consts[name]
            continue
        if name.endswith("_ptr"):
            signature[name] = f"*{dt}" if name in IO_PTRS else "*i32" if name in ("cu_ptr", "path_ptr") else "*fp32"
        else:
            signature[name] = "i32"
        if name.endswith("_ptr") or (div16 and name != "G"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    options = dict(num_warps=warps)
    if maxnreg:
        options["maxnreg"] = maxnreg
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


def histogram(kernel) -> tuple[collections.Counter, str, str]:
    """(opcode counts, SASS text, cuobjdump resource usage) of a compiled kernel."""
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
        cubin = f.name
    sass = subprocess.run([os.path.join(bindir, "nvdisasm"), "-c", cubin], capture_output=True, text=True).stdout
    usage = subprocess.run([os.path.join(bindir, "cuobjdump"), "--dump-resource-usage", cubin],
                           capture_output=True, text=True).stdout
    ops = collections.Counter()
    for line in sass.splitlines():
        m = re.search(r"/\*[0-9a-f]{4}\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", line)
        if m:
            ops[m.group(2).split(".")[0]] += 1
    return ops, sass, usage


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Constexpr switches come from the environment; see the module docstring.")
    p.add_argument("kernels", nargs="?", default=DEFAULT_KERNELS, help="kernels file or module")
    p.add_argument("--kernel", default="_scan_bwd_kernel", help="kernel name (default _scan_bwd_kernel)")
    p.add_argument("--dt", default="bf16", help="input dtype: bf16, fp16 or fp32 (default bf16)")
    p.add_argument("--N", type=int, default=16, help="state size (default 16)")
    p.add_argument("--BD", type=int, default=8, help="channels per program (default 8)")
    p.add_argument("--T", type=int, default=4, help="steps per chunk (default 4)")
    p.add_argument("--pf", type=int, default=1, help="1: register prefetch of the next chunk (default 1)")
    p.add_argument("--warps", type=int, default=1, help="warps per program (default 1)")
    p.add_argument("--maxnreg", type=int, default=None, help="cap on registers per thread (ptxas .maxnreg)")
    p.add_argument("--dump", default=None, help="write the SASS here")
    p.add_argument("--ttgir", default=None, help="write the TTGIR here (layouts and their conversions)")
    a = p.parse_args()
    if a.kernels.startswith("ssmkit"):
        sys.path.insert(0, os.path.join(ROOT, "core"))
    fn = getattr(load_kernels(a.kernels), a.kernel)
    k = compile_kernel(fn, a.dt, a.N, a.BD, a.T, bool(a.pf), a.warps, a.maxnreg)
    ops, sass, usage = histogram(k)
    m = re.search(r"REG:(\d+).*?STACK:(\d+)", usage)
    print(f"triton {triton.__version__} {a.kernel} {a.dt} N={a.N} BD={a.BD} T={a.T}: regs "
          f"{m.group(1) if m else '?'} stack {m.group(2) if m else '?'} total {sum(ops.values())}")
    print({o: ops[o] for o in SHOWN if ops[o]})
    if a.dump:
        with open(a.dump, "w") as f:
            f.write(sass)
    if a.ttgir:
        with open(a.ttgir, "w") as f:
            f.write(k.asm["ttgir"])


if __name__ == "__main__":
    main()
