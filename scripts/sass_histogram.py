"""Compile a Triton scan kernel for sm_90 on a machine without a GPU and histogram its SASS.

    python scripts/sass_histogram.py ssmkit.ops.selective_scan.triton_scan \
        [--kernel _scan_bwd_kernel] [--dt bf16] [--N 16] [--BD 8] [--T 4] [--pf 1] [--maxnreg 168] \
        [--dump out.sass]     # REV=1 in the environment compiles the reverse-scan variant,
                              # LANE_RS=k the dB/dC reduce-scatter over k lane bits, PATH_MODE=1
                              # the path-index mode; DIV16=0 drops the JIT's divisibility hints

Prints registers, stack (spill) bytes, the instruction total and the counts of the instructions
that matter for the scan (SHFL, MUFU, loads/stores, barriers, FP32 ops). Uses the ptxas,
cuobjdump and nvdisasm binaries that ship with the triton wheel; no device time.
"""
import os, re, sys, collections, subprocess, tempfile, json
import triton
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "core"))
import importlib
mod = importlib.import_module(sys.argv[1] if len(sys.argv) > 1 else "ssmkit.ops.selective_scan.triton_scan")

def compile_kernel(fn, signature, constexprs, num_warps=1, maxnreg=None):
    # As the JIT specializes a launch: pointers 16-byte aligned and, with DIV16=1 (default), the
    # integer arguments divisible by 16 (L, D, N, ... of the issue shapes).
    div16 = bool(int(os.environ.get("DIV16", "1")))
    attrs = {(i,): [["tt.divisibility", 16]] for i, (n, t) in enumerate(signature.items())
             if t.startswith("*") or (div16 and t == "i32" and n not in ("G",))}
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    opts = dict(num_warps=num_warps)
    if maxnreg: opts["maxnreg"] = maxnreg
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)

def hist(k):
    cubin = k.asm["cubin"]
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin); path = f.name
    nvd = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/nvdisasm")
    sass = subprocess.run([nvd, "-c", path], capture_output=True, text=True).stdout
    ops = collections.Counter()
    for line in sass.splitlines():
        m = re.search(r"/\*[0-9a-f]{4}\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", line)
        if m:
            ops[m.group(2).split(".")[0]] += 1
    return ops, sass


def bwd_sig(dt="bf16", N=16, BD=8, T=4, KSUB=32, pf=1, warps=1, maxnreg=None, fn=None):
    fn = fn or mod._scan_bwd_kernel
    names = fn.arg_names
    ptr_types = {"u_ptr": dt, "delta_ptr": dt, "B_ptr": dt, "C_ptr": dt, "z_ptr": dt, "dout_ptr": dt,
                 "du_ptr": dt, "path_ptr": "i32", "ddelta_ptr": dt, "dz_ptr": dt}
    const = dict(COMPUTE="fp32", BD=BD, NP=N, T=T, KSUB=KSUB, HAS_D=True, HAS_Z=True, HAS_BIAS=True,
                 SOFTPLUS=True, HAS_DLAST=False, LANE_RS=int(os.environ.get("LANE_RS", "0")), PATH=bool(int(os.environ.get("PATH_MODE", "0"))), DOUT_SHARED=bool(int(os.environ.get("PATH_MODE", "0"))), REVERSE=bool(int(os.environ.get("REV", "0"))), VARLEN=False, PREFETCH=bool(pf), HAS_C=True)
    sig, cx = {}, {}
    import triton.language as tl
    for n in names:
        if n.endswith("_ptr"):
            sig[n] = "*" + ptr_types.get(n, "fp32")
        elif n in const or (n.isupper() and n not in ("L", "D", "N", "G", "DPG", "NSEG", "SEGS_PER_PART", "SEGLEN", "SDN", "P", "DU")):
            v = const.get(n)
            if n == "COMPUTE":
                v = tl.float32
            sig[n] = "constexpr"; cx[(names.index(n),)] = v
        else:
            sig[n] = "i32"
    return compile_kernel(fn, sig, cx, warps, maxnreg)

if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--kernel", default="_scan_bwd_kernel")
    p.add_argument("--dt", default="bf16"); p.add_argument("--N", type=int, default=16)
    p.add_argument("--BD", type=int, default=8); p.add_argument("--T", type=int, default=4)
    p.add_argument("--pf", type=int, default=1); p.add_argument("--warps", type=int, default=1)
    p.add_argument("--maxnreg", type=int, default=None); p.add_argument("--dump", default=None)
    a = p.parse_args(sys.argv[2:])
    k = bwd_sig(a.dt, a.N, a.BD, a.T, 32, a.pf, a.warps, a.maxnreg, getattr(mod, a.kernel))
    ops, sass = hist(k)
    import tempfile as _t
    with _t.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"]); cpath = f.name
    cuo = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    res = subprocess.run([cuo, "--dump-resource-usage", cpath], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+).*?STACK:(\d+)", res)
    print("regs", m.group(1) if m else res, "stack", m.group(2) if m else "?", "total", sum(ops.values()))
    print({o: ops[o] for o in ["SHFL", "MUFU", "RED", "ATOM", "LDG", "STG", "LDS", "STS", "BAR", "FFMA", "FMUL", "FADD", "F2F", "PRMT", "SEL", "FSEL", "BRA"] if ops[o]})
    if a.dump: open(a.dump, "w").write(sass)
