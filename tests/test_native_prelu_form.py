"""PReLU as TF.js's Prelu (`prelu_weight` in bridge/native/ops/elementwise.py): torch.export writes nn.PReLU as
where(x > 0, x, w * x), which TF.js wasm runs as Greater + SelectV2 (13 of 28 ms in a MobileNet-style net); the
native route writes relu(x) + (-w) * relu(-x), which the TF.js writer fuses into the convolution before it. Table:
a module, whether its web model holds a fused Prelu and no SelectV2, and its numbers against PyTorch in TF
and in TF.js (Node, wasm). Twins: wheres that are not a PReLU get no Prelu."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bridge.native import rebuild_tf


class ConvPReLU(nn.Module):
    """A conv and a PReLU (`channels` weights: 1 is a shared weight), weights away from PyTorch's 0.25 default."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.PReLU(channels)
        with torch.no_grad():
            self.act.weight.copy_(torch.linspace(-0.5, 0.7, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class WhereNotPReLU(nn.Module):
    """where(x > threshold, x, w * x): a PReLU only when the threshold is 0."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.conv, self.threshold = nn.Conv2d(3, 4, 3, padding=1), threshold
        self.w = nn.Parameter(torch.linspace(-0.5, 0.7, 4).view(1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.where(y > self.threshold, y, self.w * y)


class GateReadTwice(nn.Module):
    """A PReLU whose comparison is read elsewhere too: the where must stay."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.PReLU(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.where(y > 0, y, self.act.weight.view(1, 4, 1, 1) * y) + (y > 0).float()


CASES: list[tuple[str, Callable[[], nn.Module], bool]] = [
    ("per-channel", lambda: ConvPReLU(4), True),
    ("shared-weight", lambda: ConvPReLU(1), True),
    ("threshold-not-zero", lambda: WhereNotPReLU(0.1), False),
    ("threshold-zero", lambda: WhereNotPReLU(0.0), True),
    ("comparison-read-elsewhere", GateReadTwice, False),
]


@pytest.mark.node
@pytest.mark.parametrize("make, prelu", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_prelu_form(make: Callable[[], nn.Module], prelu: bool, tmp_path: Path) -> None:
    from bridge.runtime.node import node_status, run_graph_model
    from bridge.tfjs.convert import TfjsOptions, convert_saved_model
    from bridge.tfjs.reader import read_web_model

    if not node_status().ok:
        pytest.skip("Node harness unavailable")
    torch.manual_seed(0)
    module = make().eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        want = module(x).numpy()
    result = rebuild_tf(module, [x], tmp_path / "tf", input_names=["x"])
    np.testing.assert_allclose(result.run_torch_layout(x.numpy())[0], want, atol=1e-5, rtol=1e-4)
    convert_saved_model(result.saved_model_dir, tmp_path / "web", TfjsOptions())
    graph = read_web_model(tmp_path / "web").graph_def
    fused = [s.decode() for n in graph.node for s in n.attr["fused_ops"].list.s]
    assert ("Prelu" in fused) is prelu, fused
    if prelu:
        assert not {"SelectV2", "Greater"} & {n.op for n in graph.node}
    feeds = {i.name: i.move_to_web(x.numpy()) for i in result.inputs}
    run = run_graph_model(tmp_path / "web", [feeds], backends=["wasm"])["wasm"]
    assert run.ok, run.error
    first = result.outputs[0]
    np.testing.assert_allclose(first.to_torch(run.outputs[0][first.name]), want, atol=1e-5, rtol=1e-4)


def test_wrong_sign_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Must-fail twin: relu(x) + w * relu(-x) (the weight not negated) gives -w * x for negative x."""
    from bridge.native.ops import elementwise

    monkeypatch.setattr(elementwise, "negated_weight", lambda w: w)
    torch.manual_seed(0)
    module, x = ConvPReLU(4).eval(), torch.randn(2, 3, 6, 6)
    result = rebuild_tf(module, [x], tmp_path / "tf", input_names=["x"])
    with torch.no_grad():
        assert not np.allclose(result.run_torch_layout(x.numpy())[0], module(x).numpy(), atol=1e-5, rtol=1e-4)
