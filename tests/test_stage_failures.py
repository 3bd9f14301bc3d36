"""Any exception inside a stage becomes one typed bridge error naming the stage: a failure while *making* the native
route's TF model falls back to the ONNX route (`--route auto`) with the reason on the terminal and in the report; a
failure while *writing* the web model ends the run (exit 1); a failure while *judging* an artifact is that stage's
failure (exit 3). Never a traceback. Also: a data-dependent Python `if` is named with its source line and the ways
out, and the ONNX fallback says it baked one branch in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bridge.cli import main as cli_main
from bridge.stages import plan

ROOT = Path(__file__).resolve().parents[1]
MLP = str(ROOT / "examples/mlp/model.py:MLP")
ARGS = ["--input", "x:2x32", "--no-browser", "--node-backends", "wasm"]


def _boom(*_: Any, **__: Any) -> Any:
    raise ValueError("injected failure")


def _with(stage_name: str, **changes: Any) -> tuple[plan.Stage, ...]:
    """STAGES with one stage's check, producers or session replaced."""
    from dataclasses import replace

    return tuple(replace(s, **changes) if s.name == stage_name else s for s in plan.STAGES)


INJECTIONS = [
    # (id, stage, replacement fields, route, exit code, the failed stage's status, text on stderr)
    ("capture raises: falls back", "capture",
     {"produce": {"native": plan.Producer(_boom, (), ())}}, "auto", 0, None, "falling back to the ONNX route"),
    ("capture raises, native forced", "capture",
     {"produce": {"native": plan.Producer(_boom, (), ())}}, "native", 1, None, "[capture] ValueError"),
    ("writer raises", "tfjs-graph",
     {"produce": {plan.ANY_ROUTE: plan.Producer(_boom, (), ())}}, "native", 1, None, "[tfjs-graph] ValueError"),
    ("tf check raises", "tf", {"check": _boom}, "native", 3, "fail", "parity did not hold"),
    ("savedmodel check raises", "savedmodel", {"check": _boom}, "onnx", 3, "fail", "parity did not hold"),
    ("replay raises", "tfjs-graph", {"check": _boom}, "native", 3, "fail", "parity did not hold"),
]


@pytest.mark.node
@pytest.mark.parametrize("stage, changes, route, code, status, text", [c[1:] for c in INJECTIONS],
                         ids=[c[0] for c in INJECTIONS])
def test_injected_stage_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                 stage: str, changes: dict[str, Any], route: str, code: int, status: str | None,
                                 text: str) -> None:
    monkeypatch.setattr(plan, "STAGES", _with(stage, **changes))
    out = tmp_path / "out"
    result = cli_main(["convert", MLP, *ARGS, "--route", route, "--out", str(out)])
    err = capsys.readouterr().err
    assert result == code, err
    assert text in err and "Traceback" not in err, err
    if code == 1:
        assert not out.exists() and "injected failure" in err and "next step:" in err
        return
    report = json.loads((out / "report.json").read_text())
    if status is None:  # the fallback: the ONNX route converted it, and the report says why
        assert report["route"] == "onnx" and any("injected failure" in n for n in report["notes"])
        return
    failed = next(s for s in report["stages"] if s["name"] == stage)
    assert failed["status"] == status and "injected failure" in failed["reason"]
    assert all(s["status"] == "pass" for s in report["stages"] if s["name"] == "tfjs-node-wasm")


class _Branches(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        if y.sum() > 0:  # the data-dependent branch
            return y * 2
        return y - 1


def test_a_data_dependent_if_is_named_with_its_line_and_the_ways_out(tmp_path: Path) -> None:
    from bridge.errors import DataDependentBranchError
    from bridge.native.rebuild import rebuild_tf

    with pytest.raises(DataDependentBranchError) as caught:
        rebuild_tf(_Branches(), (torch.randn(1, 4),), tmp_path)
    error = caught.value
    assert error.where is not None and error.where.startswith("test_stage_failures.py:")
    assert "if y.sum() > 0" in error.message
    assert "torch.where" in (error.hint or "") and "torch.cond" in (error.hint or "")


@pytest.mark.node
def test_the_onnx_fallback_says_it_baked_in_a_branch(tmp_path: Path) -> None:
    import bridge

    result = bridge.convert(_Branches(), ["x:1x4"], tmp_path / "out", browser=False, node_backends=("wasm",))
    assert result.report["route"] == "onnx"
    assert any("traces one branch" in note and "test_stage_failures.py:" in note for note in result.report["notes"])


@pytest.mark.node
@pytest.mark.parametrize("session, stages", [("tfjs-node", ["tfjs-node-wasm"]),
                                             ("chromium", ["browser-webgl", "browser-wasm", "browser-webgpu",
                                                           "browser-indexeddb"])])
def test_a_runtime_session_that_raises_fails_its_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        session: str, stages: list[str]) -> None:
    import bridge

    monkeypatch.setitem(plan.SESSIONS, session, _boom)
    result = bridge.convert(torch.nn.Linear(3, 2), ["x:1x3"], tmp_path / "out", route="native",
                            node_backends=("wasm",))
    for name in stages:
        stage = result.stage(name)
        assert stage.status.value == "fail" and "injected failure" in (stage.reason or "")
    assert result.stage("tfjs-graph").status.value == "pass" and not result.ok
