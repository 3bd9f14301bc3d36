"""Native route, torch.cond: both branches converted (nested functions of the generated __call__) and run as
tf.cond, which the TF.js writer lowers to Switch/Merge (executeAsync). Each case has input sets taking each branch,
checked against PyTorch in the generated TF model and in TF.js in Node (wasm, cpu); atol 1e-5 / rtol 1e-4.
Also: an unsupported op inside a branch is reported by the scan, and an effect token (an op with side effects) is a
typed capture error instead of an internal message."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn as nn

from bridge.errors import CaptureError, UnsupportedOpsError
from bridge.native import rebuild_tf
from tests.native_web_check import Tolerance, check_node, check_tf, rebuild, write_web_model

TOL = Tolerance(atol=1e-5, rtol=1e-4)


class TensorPredicate(nn.Module):
    """A data-dependent branch on a conv feature map: each branch has its own layer, and one returns the map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        z = y.mean((2, 3))

        def yes(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.a(z).relu(), y * 2

        def no(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.b(z) * 2, y - 1

        return torch.cond(z.sum() > 0, yes, no, (z, y))


class SizePredicate(nn.Module):
    """A branch on a dynamic size: long sequences are averaged, short ones summed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.shape[1] > 4, lambda t: t.mean(1), lambda t: t.sum(1) * 0.5, (x,))


class Nested(nn.Module):
    """A cond inside a cond branch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def inner(t: torch.Tensor) -> torch.Tensor:
            return torch.cond(t.max() > 1, lambda u: self.fc(u), lambda u: u - 1, (t,))

        return torch.cond(x.sum() > 0, inner, lambda t: -t, (x,))


@dataclass(frozen=True)
class CondCase:
    id: str
    build: Callable[[], nn.Module]
    sets: Callable[[np.random.Generator], list[list[np.ndarray]]]
    predicate: Callable[[nn.Module, torch.Tensor], bool]  # the (outer) branch PyTorch takes
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)


def _shifted(shape: tuple[int, ...], shifts: tuple[float, ...]) -> Callable[[np.random.Generator], list]:
    return lambda rng: [[(rng.standard_normal(shape) * 0.3 + s).astype(np.float32)] for s in shifts]


CASES = [
    CondCase("tensor-predicate", TensorPredicate, _shifted((2, 3, 8, 8), (-3.0, 3.0, -2.0)),
             lambda m, x: bool(m.conv(x).mean((2, 3)).sum() > 0)),
    CondCase("size-predicate", SizePredicate,
             lambda rng: [[rng.standard_normal((2, t, 3)).astype(np.float32)] for t in (6, 3, 9, 2)],
             lambda m, x: x.shape[1] > 4, dynamic={"x": {1: "length"}}),
    CondCase("nested", Nested, _shifted((2, 3), (2.0, 0.3, -1.0)), lambda m, x: bool(x.sum() > 0)),
]


@pytest.mark.node
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cond_in_tf_and_node(case: CondCase, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = case.build().eval()
    sets = case.sets(np.random.default_rng(0))
    with torch.no_grad():
        assert {case.predicate(module, torch.from_numpy(s[0])) for s in sets} == {True, False}  # both branches
    result = rebuild(module, sets[0], tmp_path / "tf", ["x"], case.dynamic)
    assert "tf.cond(" in result.model_py.read_text()
    check_tf(result, module, sets, TOL)
    check_node(result, module, sets, write_web_model(result, tmp_path / "web"), TOL)


class UnsupportedInBranch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda t: torch.lgamma(t), lambda t: t * 2, (x,))


def test_unsupported_op_inside_a_branch_is_reported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOpsError) as info:
        rebuild_tf(UnsupportedInBranch().eval(), [torch.randn(2, 3)], tmp_path)
    assert "aten.lgamma.default" in info.value.ops
    assert any("test_native_cond.py:" in where for where in info.value.ops["aten.lgamma.default"])


class Printing(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.ops.aten._print("forward ran")
        return x * 2


def test_effect_token_is_a_typed_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError) as info:
        rebuild_tf(Printing().eval(), [torch.randn(2)], tmp_path)
    err = info.value
    assert "side effects" in err.message and "aten._print" in err.message
    assert any("test_native_cond.py:" in line for line in err.details)  # where in the user's code
    assert "ONNX route" in (err.hint or "") and "InputKind" not in str(err)
