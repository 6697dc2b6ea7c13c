"""The ``Examples:`` in public docstrings run as written (doctest), in the default test run.

One test per module, so a broken example names its module. A module listed here must hold at
least one example: a list that silently ran nothing would pass forever.
"""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

MODULES = [
    "ssmkit._checks",
    "ssmkit.registry",
    "ssmkit.engine.files",
    "ssmkit.ops.selective_scan",
    "ssmkit.ops.selective_scan.samples",
    "ssmkit.ops.utils.cu_seqlens",
    "ssmkit.ops.utils.dtype",
    "ssmkit.ops.utils.permutation",
    "ssmkit.ops.utils.shapes",
    "ssmkit.layers.mamba",
    "ssmkit.layers.ss2d",
    "ssmkit.bench.table",
    "ssmkit.ops",
    "ssmkit.ops.causal_conv1d",
    "ssmkit.scans",
    "ssmkit.engine.inputs",
    "ssmkit.engine.fit",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    # The examples draw random inputs; restore the global generator so other tests see no change.
    with torch.random.fork_rng():
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
