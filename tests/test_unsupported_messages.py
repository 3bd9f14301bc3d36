"""The native route's unsupported-op message: what is unsupported (no converter, or the reason a converter refuses
these arguments), where each node is in the user's code (module path and class, source line), and the two ways
out: the ONNX route and bridge.native.register_converter, pointing at docs/SUPPORTED_OPS.md. Never the advice to
run the model in eager mode."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bridge.errors import UnsupportedOpsError
from bridge.native import rebuild_tf


class Atan(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atan(x)


class Bicubic(nn.Module):
    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(x, grid, mode="bicubic", align_corners=False)


class TwoGaps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(4, 4), Atan())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.lgamma(self.head(x)) + torch.atan(x)


class Inverse(nn.Module):
    """torch.linalg.inv decomposes into an error check with side effects: kept whole, it is named as itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(x) + 1


@dataclass(frozen=True)
class MessageCase:
    id: str
    make: Callable[[], nn.Module]
    shapes: list[tuple[int, ...]]
    says: tuple[str, ...]


CASES = [
    MessageCase("no-converter-in-submodule-and-top-level", TwoGaps, [(2, 4)], (
        "cannot rebuild 3 node(s)", "aten.atan.default: no converter; 2 node(s)", "in module head.1 (Atan)",
        "in the top-level forward()", "aten.lgamma.default: no converter; 1 node(s)",
        "test_unsupported_messages.py:")),
    MessageCase("converter-refuses-arguments", Bicubic, [(1, 2, 5, 5), (1, 3, 3, 2)], (
        "aten.grid_sampler_2d.default: its converter refuses this use: bicubic interpolation",
        "in the top-level forward() at test_unsupported_messages.py:")),
    MessageCase("linear-algebra-op-named-as-itself", Inverse, [(2, 3, 3)], (
        "aten.linalg_inv.default: no converter; 1 node(s)", "register_converter")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_unsupported_op_message(case: MessageCase, tmp_path: Path) -> None:
    inputs = [torch.randn(s) for s in case.shapes]
    with pytest.raises(UnsupportedOpsError) as caught:
        rebuild_tf(case.make().eval(), inputs, tmp_path, input_layouts={"in1": "source"} if len(inputs) > 1 else None,
                   input_names=[f"in{i}" for i in range(len(inputs))])
    text = str(caught.value)
    for part in case.says:
        assert part in text, f"{part!r} missing from:\n{text}"
    hint = caught.value.hint or ""
    for way_out in ("--route onnx", "route='onnx'", "bridge.native.register_converter", "docs/SUPPORTED_OPS.md"):
        assert way_out in hint, f"{way_out!r} missing from the next step: {hint}"
    assert "eager" not in text
