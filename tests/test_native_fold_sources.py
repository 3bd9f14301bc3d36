"""Constant sources (arange, full, ... with literal sizes) fold into constants at rebuild time
(bridge/native/fold.py), so what is computed from them alone folds too; random and large sources stay ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridge.native.capture import build_graph, capture
from bridge.native.fold import MAX_SOURCE_ELEMENTS, fold_weight_ops
from bridge.native.registry import default_registry, load_builtins


class AddsArange(torch.nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (torch.arange(self.n, dtype=torch.float32) * 2)


class AddsNoise(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand(x.shape[-1])


CASES = [
    # (module, input size, arange/rand node left in the graph)
    (AddsArange(8), 8, False),
    (AddsArange(MAX_SOURCE_ELEMENTS + 1), MAX_SOURCE_ELEMENTS + 1, True),  # too large to store
    (AddsNoise(), 8, True),  # random: never folded
]


@pytest.mark.parametrize("module, size, kept", CASES)
def test_constant_sources_fold(module: torch.nn.Module, size: int, kept: bool) -> None:
    load_builtins()
    keep = {t for t in default_registry().targets() if t.startswith("aten.")}
    x = torch.randn(2, size)
    graph = build_graph(capture(module.eval(), (x,), keep=keep, dynamic_dims={}, strict=False), name="m",
                        input_names=["x"], output_names=None)
    fold_weight_ops(graph)
    sources = [n for n in graph.nodes if n.target.split(".")[1] in ("arange", "rand")]
    assert bool(sources) is kept, [n.target for n in graph.nodes]
    if not kept:
        doubled = [v for v in graph.arrays.values() if v.shape == (size,)][-1]  # arange, then arange * 2
        np.testing.assert_array_equal(doubled, np.arange(size, dtype=np.float32) * 2)
