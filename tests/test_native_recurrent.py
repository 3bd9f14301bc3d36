"""Native route, LSTM and GRU over a static length: the op counts of the unrolled form (what makes it fast in
TF.js: per step one MatMul per layer and direction, one Split per gate group, no StridedSlice; stacked layers as one
wavefront, both directions of a layer in one loop)
and must-fail twins of the recurrent op cases (tests/native_op_cases/recurrent.py): the same comparison with
PyTorch (atol 1e-5 / rtol 1e-4) must notice the LSTM's gates in PyTorch's order (i, f, g, o read as i, f, o, g)
and a GRU whose b_hn is dropped, on one layer (the step path) and on two (the wavefront), and the flat wavefront's
block weight without the link from one layer to the next."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from bridge.native import rebuild_tf
from bridge.native.ops import recurrent
from tests.native_op_cases.base import ATOL, RTOL, Rnn


def _module(kind: str, layers: int, bidirectional: bool = False) -> nn.Module:
    torch.manual_seed(0)
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    return Rnn(cls(4, 3, num_layers=layers, batch_first=True, bidirectional=bidirectional), lambda y, *_: y).eval()


def _rebuilt(module: nn.Module, x: torch.Tensor, tmp_path: Path) -> tuple[np.ndarray, Counter]:
    result = rebuild_tf(module, [x], tmp_path, input_names=["x"])
    graph = result.model.__call__.get_concrete_function().graph.as_graph_def()  # type: ignore[attr-defined]
    return result.run_torch_layout(x.numpy())[0], Counter(n.op for n in graph.node)


def _x() -> torch.Tensor:
    return torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, False), (2, False), (3, False), (1, True)])
def test_unrolled_op_counts(kind: str, layers: int, bidirectional: bool, tmp_path: Path) -> None:
    """Per step one MatMul per direction (a lone unidirectional GRU layer: two, r,z and n), one Sigmoid, one or two
    Tanh, no StridedSlice; the input projections hoisted (one more MatMul per direction); L stacked layers take
    T + L - 1 flat wavefront steps of one MatMul each (every layer's gates at once) instead of L T steps, with no
    Unpack, Concat or Reshape per step; both directions of a layer share their T steps."""
    x, steps = _x(), 6
    module = _module(kind, layers, bidirectional)
    got, ops = _rebuilt(module, x, tmp_path)
    with torch.no_grad():
        np.testing.assert_allclose(got, module(x).numpy(), atol=ATOL, rtol=RTOL)
    matmuls = ops["MatMul"] + ops["BatchMatMulV2"]
    if bidirectional:
        assert matmuls == 2 + 2 * steps, ops
    elif layers > 1:
        steps += layers - 1
        assert matmuls == 1 + steps, ops
        # set-up and read-out only (the layer-major form took 3 of them per step: 3 (T + L - 1) >= 21 here)
        assert ops["Unpack"] + ops["ConcatV2"] + ops["Reshape"] <= 12, ops
    else:
        assert matmuls == 1 + steps * (1 if kind == "lstm" else 2), ops
    assert ops["StridedSlice"] <= 4 * layers + 4, ops  # initial and final states only, never per step
    assert ops["Sigmoid"] == steps and ops["Tanh"] == steps * (2 if kind == "lstm" else 1), ops


@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_gates_in_pytorch_order_fail(layers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Must-fail twin: the weights kept in PyTorch's gate order (i, f, g, o) while the cell reads i, f, o, g."""
    module, x = _module("lstm", layers), _x()
    with torch.no_grad():
        expected = module(x).numpy()
    monkeypatch.setattr(recurrent, "lstm_ifog", lambda w: w)
    got, _ = _rebuilt(module, x, tmp_path)
    assert not np.allclose(got, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("layers", [1, 2])
def test_gru_without_b_hn_fails(layers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Must-fail twin: b_hn dropped from the reset product r * (W_hn h + b_hn)."""
    module, x = _module("gru", layers), _x()
    with torch.no_grad():
        expected = module(x).numpy()
    monkeypatch.setattr(recurrent, "gru_hn_bias", lambda b_hh: np.zeros_like(b_hh[: b_hh.shape[0] // 3]))
    got, _ = _rebuilt(module, x, tmp_path)
    assert not np.allclose(got, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("layers", [1, 2])
def test_gru_b_hn_outside_the_reset_product_fails(layers: int, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Must-fail twin: b_hn folded into the input projection with the other biases (outside r * (...)), as if
    the n gate's biases summed like r's and z's."""
    module, x = _module("gru", layers), _x()
    with torch.no_grad():
        expected = module(x).numpy()
    monkeypatch.setattr(recurrent, "gru_input_bias", lambda b_ih, b_hh: b_ih + b_hh)
    monkeypatch.setattr(recurrent, "gru_hn_bias", lambda b_hh: np.zeros_like(b_hh[: b_hh.shape[0] // 3]))
    got, _ = _rebuilt(module, x, tmp_path)
    assert not np.allclose(got, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_wavefront_without_the_link_between_layers_fails(kind: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Must-fail twin of the flat wavefront: the block weight without layer 0's rows into layer 1's columns (the
    upper layer's input weights), as if each layer only read its own state."""
    module, x = _module(kind, 2), _x()
    with torch.no_grad():
        expected = module(x).numpy()
    block = recurrent.flat_block_weight

    def unlinked(info, arrays):  # type: ignore[no-untyped-def]
        w = block(info, arrays).copy()
        for group in range(4):
            w[:info.hidden, recurrent._group_cols(info.layers, info.hidden, group, 1)] = 0
        return w
    monkeypatch.setattr(recurrent, "flat_block_weight", unlinked)
    got, _ = _rebuilt(module, x, tmp_path)
    assert not np.allclose(got, expected, atol=ATOL, rtol=RTOL)
