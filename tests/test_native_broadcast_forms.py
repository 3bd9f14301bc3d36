"""Broadcast operands reshaped into suffixes (`suffix_shaped`, bridge/native/ops/elementwise.py): TF.js 4.22's
wasm kernels for comparisons, logical ops, Maximum, Minimum and Pow are 10-20x slower when a size-1 axis is
broadcast among aligned axes. Table: operand shapes, how many operands the generated model reshapes, and the
numbers against PyTorch (the op cases broadcast-leading-ones / broadcast-inner-size-one also run them in TF.js)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.native import rebuild_tf
from tests.native_op_cases.elementwise import broadcast_mix
from tests.test_native_ops import count_tf_ops

# (a shape, b shape, Reshape nodes in the generated model): broadcast_mix has 7 ops reading b (b itself or b as
# bool), each reshaped when b's leading size-1 axes can go
CASES = [
    ((1, 1, 6, 5), (1, 1, 1, 5), 7),
    ((1, 1, 6, 5), (1, 1, 1, 1), 7),  # a single element: reshaped to a scalar
    ((1, 1, 6, 5), (1, 6, 5), 0),  # already a suffix (leading size-1 axes of the same rank cost nothing)
    ((2, 3, 4), (3, 4), 0),  # already a suffix
    ((2, 3, 4), (2, 1, 4), 0),  # a size-1 axis between others: no reshape helps
    ((2, 3, 4), (2, 3, 4), 0),
]


class Mix(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return broadcast_mix(a, b)


@pytest.mark.parametrize("a_shape, b_shape, reshapes", CASES, ids=[f"{a}-{b}" for a, b, _ in CASES])
def test_suffix_reshapes(a_shape: tuple[int, ...], b_shape: tuple[int, ...], reshapes: int, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(a_shape, generator=gen), torch.randn(b_shape, generator=gen)
    result = rebuild_tf(Mix().eval(), [a, b], tmp_path, input_names=["in0", "in1"],
                        input_layouts={"in0": "source", "in1": "source"})
    got = result.run_torch_layout(a.numpy(), b.numpy())[0]
    np.testing.assert_allclose(got, broadcast_mix(a, b).numpy(), atol=1e-5, rtol=1e-4)
    assert count_tf_ops(result.model, "Reshape") == reshapes
