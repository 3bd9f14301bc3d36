"""Native route, LSTM and GRU with a dynamic sequence length: a tf.while_loop over a generated step method
(TensorArray outputs), lowered by the TF.js writer to v1 control flow and run with executeAsync. Checked against
PyTorch at lengths 1 to 130 in the generated TF model, in TF.js in Node (wasm, cpu) and in headless Chromium
(webgl, wasm) when it is installed. atol 1e-5 / rtol 1e-4 (float32; measured errors ~1e-7). A static length
keeps the unrolled form (no loop in the graph)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from tests.native_web_check import Tolerance, check_browser, check_node, check_tf, rebuild, write_web_model

TOL = Tolerance(atol=1e-5, rtol=1e-4)
LENGTHS = (5, 1, 37, 130)  # the first is the export example


class Recurrent(nn.Module):
    """A recurrent layer and a head over its outputs; returns (head(output), final hidden state)."""

    def __init__(self, kind: str, layers: int, bidirectional: bool, batch_first: bool) -> None:
        super().__init__()
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.kind = kind
        self.rnn = cls(6, 8, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
        self.head = nn.Linear(16 if bidirectional else 8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output, state = self.rnn(x)
        hidden = state[0] if self.kind == "lstm" else state
        return self.head(output), hidden


@dataclass(frozen=True)
class RnnCase:
    id: str
    kind: str
    layers: int
    bidirectional: bool
    batch_first: bool

    def module(self) -> Recurrent:
        torch.manual_seed(0)
        return Recurrent(self.kind, self.layers, self.bidirectional, self.batch_first).eval()

    def sets(self, batch: int = 2) -> list[list[np.ndarray]]:
        rng = np.random.default_rng(0)
        shape = (lambda t: (batch, t, 6)) if self.batch_first else (lambda t: (t, batch, 6))
        return [[rng.standard_normal(shape(t)).astype(np.float32)] for t in LENGTHS]

    @property
    def time_axis(self) -> int:
        return 1 if self.batch_first else 0


CASES = [
    RnnCase("lstm-2layer-bidirectional", "lstm", 2, True, True),
    RnnCase("gru-2layer-bidirectional", "gru", 2, True, True),
    RnnCase("lstm-time-major", "lstm", 1, False, False),
    RnnCase("gru-time-major", "gru", 1, False, False),
]


def _build(case: RnnCase, tmp_path: Path):  # noqa: ANN202 - (module, sets, rebuild result)
    module, sets = case.module(), case.sets()
    result = rebuild(module, sets[0], tmp_path / "tf", ["x"], {"x": {case.time_axis: "length"}})
    return module, sets, result


@pytest.mark.node
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_dynamic_length_in_tf_and_node(case: RnnCase, tmp_path: Path) -> None:
    module, sets, result = _build(case, tmp_path)
    assert result.inputs[0].web_shape[case.time_axis] is None
    assert any(op in result.tf_ops for op in ("While", "StatelessWhile")), result.tf_ops
    check_tf(result, module, sets, TOL)
    worst = check_node(result, module, sets, write_web_model(result, tmp_path / "web"), TOL)
    assert set(worst) == {"wasm", "cpu"}


@pytest.mark.browser
@pytest.mark.parametrize("case", [CASES[0], pytest.param(CASES[1], marks=pytest.mark.slow)], ids=lambda c: c.id)
def test_dynamic_length_in_chromium(case: RnnCase, tmp_path: Path) -> None:
    module, sets, result = _build(case, tmp_path)
    worst = check_browser(result, module, sets, write_web_model(result, tmp_path / "web"), TOL)
    assert set(worst) == {"webgl", "wasm"}


def test_static_length_stays_unrolled(tmp_path: Path) -> None:
    case = CASES[0]
    module, sets = case.module(), case.sets()
    result = rebuild(module, sets[0], tmp_path, ["x"], {})
    assert not any("While" in op for op in result.tf_ops), result.tf_ops
    assert "tf.while_loop" not in result.model_py.read_text()
    check_tf(result, module, sets[:1], TOL)


def test_dynamic_length_and_batch(tmp_path: Path) -> None:
    """Both the batch and the length dynamic: the input projection's reshape takes both from the input."""
    case = CASES[1]
    module = case.module()
    rng = np.random.default_rng(1)
    sets = [[rng.standard_normal((b, t, 6)).astype(np.float32)] for b, t in ((2, 5), (1, 9), (4, 2))]
    result = rebuild(module, sets[0], tmp_path, ["x"], {"x": {0: "batch", 1: "length"}})
    check_tf(result, module, sets, TOL)
