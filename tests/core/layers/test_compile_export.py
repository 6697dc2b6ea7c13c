"""torch.compile, torch.export and ONNX for the registered blocks, on CPU at tiny widths.

Compiling is slow on a 2-core machine, so the default run keeps to the cheap end: every block
through TorchDynamo (``backend="eager"``: the graph capture, with ``fullgraph=True`` where the
block allows it), the core mixers through AOTAutograd as one graph (``backend="aot_eager"``), and
their export to ``torch.export`` and ONNX. The ``slow`` run compiles every block with Inductor.
Which blocks capture as one graph and why the others do not is the table in docs/library.md;
``GRAPH_BREAKS`` below is that table's source.
"""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

from ssmkit.registry import create_block, list_blocks

D_MODEL = 8
# Tiny odd shapes: compile and export time grows with the unrolled scan loops.
SHAPES = {"seq": (2, 5, D_MODEL), "image2d": (2, D_MODEL, 3, 4), "volume3d": (1, D_MODEL, 2, 3, 3)}

_SCAN = "the chunked CPU selective scan"
# Blocks that Dynamo cannot capture as one graph with their default CPU scans, and why.
GRAPH_BREAKS = {
    # it caps the intra-op threads around each call: torch.get_num_threads() returns an int,
    # which Dynamo cannot put in a graph
    **dict.fromkeys(["mamba", "bimamba", "mamba_block", "gated_fusion", "ss2d", "ss3d", "vss_block",
                     "gamba_cell", "gamba_block"], _SCAN),
    # the chunked GLA picks its intra-chunk form from the data (a host sync on the gate span)
    "gla": "the chunked GLA",
}
# Blocks whose default CPU scans fail under AOTAutograd/Inductor: the chunked selective scan
# writes through out= views that cannot be functionalised when its channels form groups (the K
# paths of SS2D/SS3D). With the plain-PyTorch reference scans they compile.
AOT_NEEDS_REFERENCE = {"ss2d", "ss3d", "vss_block", "gamba_cell", "gamba_block", "gla"}


def _inputs(block: torch.nn.Module, batch: int = 2) -> tuple[torch.Tensor, ...]:
    kind = getattr(block, "input_kind", "seq")
    if kind == "custom":  # two token streams
        x = block.example_input(batch, 3, 2)
        return tuple(x)
    shape = SHAPES[kind]
    return (torch.randn(batch, *shape[1:]),)


def _run(fn, xs, params, grad: bool = True):
    xs = [x.detach().clone().requires_grad_(grad) for x in xs]
    out = fn(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    if not grad:
        return [o.detach() for o in outs], []
    gen = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    grads = torch.autograd.grad(loss, [*xs, *params], allow_unused=True)
    return [o.detach() for o in outs], grads


def _check_compiled(name: str, block_kw: dict, backend: str, fullgraph: bool, grad: bool = True,
                    tol: float = 1e-4) -> None:
    torch.manual_seed(0)
    block = create_block(name, d_model=D_MODEL, **block_kw).eval()
    xs = _inputs(block)
    params = [p for p in block.parameters() if p.requires_grad]
    with torch.set_grad_enabled(grad):
        ref_out, ref_grads = _run(block, xs, params, grad)  # eager first: also fills the scan index caches
        torch._dynamo.reset()
        compiled = torch.compile(block, backend=backend, fullgraph=fullgraph)
        out, grads = _run(compiled, xs, params, grad)
    for o, r in zip(out, ref_out):
        assert o.shape == r.shape and torch.allclose(o, r, rtol=tol, atol=tol), \
            f"{name}: compiled output differs by {float((o - r).abs().max()):.3g}"
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        if r is None:
            assert g is None, f"{name}: gradient {i} appears only when compiled"
            continue
        err = float((g - r).abs().max() / r.abs().max().clamp_min(1e-6))
        assert err < tol * 10, f"{name}: compiled gradient {i} differs (rel {err:.3g})"


# Blocks built from the ones above (same kernels, bigger graphs): compiled in the slow run only.
HEAVY = {"bimamba", "mamba_block", "gated_fusion", "ss3d", "vss_block", "gamba_cell", "gamba_block"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in list_blocks()])
def test_block_compiles_and_matches_eager(name):
    """Forward and every gradient through TorchDynamo's capture."""
    _check_compiled(name, {}, "eager", fullgraph=name not in GRAPH_BREAKS)


@pytest.mark.parametrize("name, kw", [("gla", {}), ("mamba", {}), ("ss2d", {"impl": "materialized"})])
def test_core_mixer_compiles_as_one_graph_with_reference_scans(name, kw):
    # the layers hold nothing that breaks a graph: only the fast CPU scans do. Forward only: in
    # the backward, AOTAutograd's Linear decomposition views a transposed input (Mamba feeds its
    # projections [B, d_inner, L].transpose(1, 2)) and fails; eager and Dynamo-only are fine.
    _check_compiled(name, {"backend": "reference", **kw}, "aot_eager", fullgraph=True, grad=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_blocks())
def test_block_compiles_with_inductor(name):
    """Inference-mode Inductor compile; the fast scans where they compile, else the reference ones."""
    kw = {"backend": "reference"} if name in AOT_NEEDS_REFERENCE else {}
    _check_compiled(name, kw, "inductor", fullgraph=name not in GRAPH_BREAKS or bool(kw), grad=False)


# --------------------------------------------------------------------------- export and ONNX
# The core mixers at the input shapes their export is tested at (scan loops unroll, so the
# exported graph is specialised to this sequence length / map size).
EXPORT_CASES = {
    "mamba": ((2, 5, D_MODEL), {}),
    "gla": ((2, 5, D_MODEL), {"num_heads": 2, "gate_low_rank_dim": 4}),
    "ss2d": ((2, D_MODEL, 3, 4), {"impl": "materialized"}),
}


@pytest.mark.parametrize("name", sorted(EXPORT_CASES))
def test_core_mixer_exports_and_runs_in_onnxruntime(name, tmp_path):
    shape, kw = EXPORT_CASES[name]
    torch.manual_seed(0)
    # The default CPU scans cannot be exported (docs/library.md says why); the reference scans can.
    block = create_block(name, d_model=D_MODEL, backend="reference", **kw).eval()
    x, x2 = torch.randn(shape), torch.randn(shape)
    with torch.no_grad():
        ref2 = block(x2)  # eager first: SS2D builds (and checks) its scan index map for this shape
        ep = torch.export.export(block, (x,))
    got = ep.module()(x2)  # a fresh input: the program computes, it did not capture constants
    assert torch.allclose(got, ref2, rtol=1e-5, atol=1e-5), f"{name}: exported program differs"

    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(ep, (x,), str(path), dynamo=True)
    runner = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {runner.get_inputs()[0].name: x2.numpy()}
    out = torch.from_numpy(runner.run(None, feed)[0])
    assert out.shape == ref2.shape and torch.allclose(out, ref2, rtol=1e-4, atol=1e-4), \
        f"{name}: ONNX Runtime output differs by {float((out - ref2).abs().max()):.3g}"
