"""Recurrent nets with a dynamic sequence length through the ONNX route.

- The exported ONNX file runs in onnxruntime at lengths other than the example's (the exporter bakes the example
  length into intermediate shape annotations, which onnxruntime's optimizer trusts: a GRU exported at length 16
  failed at every other length in a fused Gemm's reshape). Compared with PyTorch at atol 1e-5; must-fail twin
  without bridge's fix.
- Slow tier: `bridge.convert(model, ["x:1x?x8"], route="onnx")` of a GRU and an LSTM passes every stage in Node
  (the web model used to fail in every TF.js backend with "All tensors passed to tf.addN() must have the same
  dtype": tests/test_tfjs_table.py has the writer's case and its twin).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ATOL = 1e-5
LENGTHS = (2, 5, 16, 121)


class Recurrent(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.rnn = (nn.GRU if kind == "gru" else nn.LSTM)(8, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


def _export(kind: str, path: Path) -> nn.Module:
    from bridge.onnx_route.export import export_onnx

    torch.manual_seed(0)
    model = Recurrent(kind).eval()
    export_onnx(model, (torch.randn(1, 16, 8),), path, input_names=["x"], output_names=["y"],
                dynamic_dims={"x": [1]})
    return model


def _ort_errors(model: nn.Module, path: Path) -> dict[int, str]:
    """Per length, '' when onnxruntime matches PyTorch, else what went wrong."""
    from bridge.onnx_route.onnxrt import run_onnx

    errors = {}
    for length in LENGTHS:
        x = torch.randn(1, length, 8, generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            want = model(x).numpy()
        try:
            got = run_onnx(path, {"x": x.numpy()})["y"]
            errors[length] = "" if np.allclose(got, want, atol=ATOL) else f"max|Δ| {np.abs(got - want).max()}"
        except Exception as exc:  # noqa: BLE001 - the twin expects onnxruntime to raise
            errors[length] = type(exc).__name__
    return errors


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_exported_recurrent_net_runs_at_every_length(kind: str, tmp_path: Path) -> None:
    model = _export(kind, tmp_path / "m.onnx")
    errors = _ort_errors(model, tmp_path / "m.onnx")
    assert not any(errors.values()), errors


def test_baked_example_length_breaks_onnxruntime_without_the_fix(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.onnx_route import export

    monkeypatch.setattr(export, "forget_example_sizes", lambda path, sizes: False)
    model = _export("gru", tmp_path / "m.onnx")
    errors = _ort_errors(model, tmp_path / "m.onnx")
    assert errors[16] == "" and any(errors[n] for n in LENGTHS if n != 16), errors


@pytest.mark.slow
@pytest.mark.node
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_dynamic_length_recurrent_net_converts_through_the_onnx_route(kind: str, tmp_path: Path) -> None:
    import bridge

    torch.manual_seed(0)
    result = bridge.convert(Recurrent(kind).eval(), ["x:1x?x8"], tmp_path / "out", route="onnx", browser=False,
                            samples=3)
    statuses = {stage.name: stage.status.value for stage in result.stages}
    assert result.ok, statuses
    assert all(statuses[name] == "pass" for name in ("onnx", "tf", "tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu"))
