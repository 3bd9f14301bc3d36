"""Failures inside the ONNX route's tools reach the user as one clean ExportError: the ONNX node and op, the PyTorch
op, module and source line it came from, the two ways out (the native route with a registered converter, or another
call), and onnx2tf's or the exporters' raw output only under --verbose: never ANSI colour codes, never onnx2tf's
generic advice ("Read this and deal with it"), never "run the model once in eager mode" for an op that simply has
no conversion.

Cases: a real onnx2tf failure (torch.fft.rfft: onnx2tf cannot build DFT), a real exporter failure (torch.linalg.inv:
neither exporter has it), and onnx2tf replaced by a fake printing its colour-coded log (deterministic wording)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from unittest import mock

import pytest
import torch
from torch import nn

import bridge
from bridge.errors import ExportError
from bridge.onnx_route.failures import clean, log_errors, unsupported_exporter_ops, user_frame


class Rfft(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(self.proj(x)).abs()  # the source line the error must name


class Inverse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(self.head(x).reshape(2, 2, 2))


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * 2.0


_FAKE_LOG = ("\x1b[31mERROR:\x1b[0m The trace log is below.\nTraceback (most recent call last):\n"
             '  File "onnx2tf.py", line 1, in convert\nValueError: Frobnicate cannot take rank 2\n'
             "\x1b[31mERROR:\x1b[0m onnx_op_name: {node}\n"
             "\x1b[31mERROR:\x1b[0m Read this and deal with it. (a link to onnx2tf's parameter replacement docs)\n"
             "\x1b[31mERROR:\x1b[0m Alternatively, if the input OP has a dynamic dimension, use the -b option.\n")


def _fake_onnx2tf(**kwargs: object) -> None:
    """onnx2tf failing on the model's Gemm node, printing a log like the real one."""
    import onnx

    model = onnx.load(str(kwargs["input_onnx_file_path"]), load_external_data=False)
    node = next(n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul"))
    print(_FAKE_LOG.format(node=node))
    raise ValueError("Frobnicate cannot take rank 2")


def _with_fake_onnx2tf(model: nn.Module, spec: str, out: Path, verbose: bool) -> None:
    from bridge.util.quiet import import_onnx2tf

    with mock.patch.object(import_onnx2tf(), "convert", _fake_onnx2tf):
        bridge.convert(model, [spec], out, route="onnx", browser=False, verbose=verbose)


@dataclass(frozen=True)
class ErrorCase:
    id: str
    run: Callable[[Path], None]
    stage: str
    says: tuple[str, ...]        # in str(error): what failed, where, the ways out
    verbose: bool = False


CASES = [
    ErrorCase("onnx2tf-rfft", lambda out: bridge.convert(Rfft(), ["x:2x16"], out, route="onnx", browser=False),
              "onnx-to-tf", ("onnx2tf cannot convert ONNX node", "(DFT)", "aten._fft_r2c", "test_onnx_route_errors.py:",
                             "torch.fft.rfft(self.proj(x))", "--route native", "register_converter",
                             "docs/SUPPORTED_OPS.md", "--verbose")),
    ErrorCase("exporters-linalg-inv",
              lambda out: bridge.convert(Inverse(), ["x:2x4"], out, route="onnx", browser=False),
              "onnx-export", ("no ONNX conversion for aten.linalg_inv_ex", "torch.linalg.inv(self.head(x)",
                              "test_onnx_route_errors.py:", "--route native", "register_converter",
                              "docs/SUPPORTED_OPS.md", "--verbose")),
    ErrorCase("fake-onnx2tf-log", lambda out: _with_fake_onnx2tf(Scaled(), "x:3x6", out, False), "onnx-to-tf",
              ("(Gemm)", "aten.linear", "in module proj", "why: ValueError: Frobnicate cannot take rank 2",
               "the native route (--route native), which converts aten.linear", "--verbose")),
    # --verbose: the log went to the terminal as it was written, so the error only summarises
    ErrorCase("fake-onnx2tf-log-verbose", lambda out: _with_fake_onnx2tf(Scaled(), "x:3x6", out, True), "onnx-to-tf",
              ("onnx2tf cannot convert", "why: ValueError: Frobnicate cannot take rank 2", "--route native"),
              verbose=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_onnx_route_failure_is_one_clean_error(case: ErrorCase, tmp_path: Path) -> None:
    with pytest.raises(ExportError) as caught:
        case.run(tmp_path / "out")
    error = caught.value
    text = str(error)
    assert error.stage == case.stage
    for part in case.says:
        assert part in text, f"{part!r} missing from:\n{text}"
    for banned in ("\x1b[", "Read this and deal with it", "eager mode", "Traceback", "-b option"):
        assert banned not in text, f"{banned!r} reached the user:\n{text}"
    assert ("--verbose" in (error.hint or "")) is not case.verbose
    assert not (tmp_path / "out").exists()


def test_log_filter_keeps_only_model_specific_lines() -> None:
    """Must-fail twin of the filter: the raw log holds the colour codes and the advice the error leaves out."""
    raw = _FAKE_LOG.format(node="node_Gemm_0") + "\x1b[31mERROR:\x1b[0m Frobnicate OP is not yet implemented.\n"
    assert "\x1b[" in raw and "Read this" in raw
    assert log_errors(clean(raw)) == ["onnx2tf: Frobnicate OP is not yet implemented."]


def test_exporter_reasons_name_the_ops() -> None:
    reasons = ["DispatchError: No ONNX function found for <OpOverload(op='aten.linalg_inv_ex', overload='default')>.",
               ("UnsupportedOperatorError: Exporting the operator 'aten::linalg_inv' to ONNX opset version 20 is not "
                "supported")]
    assert unsupported_exporter_ops(reasons) == ["aten.linalg_inv_ex.default"]
    assert unsupported_exporter_ops(reasons[1:]) == ["aten.linalg_inv"]
    assert unsupported_exporter_ops(["RuntimeError: this forward always fails"]) == []


def test_user_frame_skips_torch_frames() -> None:
    trace = ('File "/home/u/model.py", line 12, in forward\n    return self.lin(x)\n'
             '  File "/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py", line 134, in forward\n    r')
    assert user_frame(trace) == "model.py:12 (`return self.lin(x)`)"
    assert user_frame('File "/venv/site-packages/torch/nn/functional.py", line 9, in f\n    x') == ""

