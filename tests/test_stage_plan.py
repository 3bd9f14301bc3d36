"""The one stage plan: the stages each entry point runs, the one overall-status rule, quantized web models judged
with the same tolerance in every web stage (convert and parity alike), and a stage added in one place showing up
everywhere (convert, parity, assert_parity, the reports, the JUnit file)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bridge
from bridge.options import ConvertOptions
from bridge.parity.metrics import DEFAULT_TOLERANCE
from bridge.stages import plan as plan_module
from bridge.stages.artifacts import Artifact
from bridge.stages.context import StageEnv, TolerancePolicy
from bridge.stages.plan import Entry, PlanRequest, Runtime, Selection, Stage, build_plan
from bridge.stages.result import StageResult, Status, overall_status, stages_ok
from test_bisect import SPEC, make_net

ROOT = Path(__file__).resolve().parents[1]
WEB = ("tfjs-node-wasm", "tfjs-node-cpu", "browser-webgl", "browser-wasm", "browser-webgpu")
BROWSER = ("browser-webgl", "browser-wasm", "browser-webgpu", "browser-indexeddb")

# ------------------------------------------------------------------------------------------------ plans (unit)

PLAN_CASES = [
    # (id, request, stages in the plan, stages turned off)
    ("convert native", PlanRequest(Entry.CONVERT, "native", ConvertOptions()),
     ["capture", "tf", "savedmodel", "tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu", *BROWSER], []),
    ("convert onnx, wasm only, no browser", PlanRequest(Entry.CONVERT, "onnx", ConvertOptions(
        node_backends=("wasm",), browser=False)), ["onnx", "tf", "savedmodel", "tfjs-graph", "tfjs-node-wasm",
                                                   *BROWSER], list(BROWSER)),
    ("parity onnx", PlanRequest(Entry.PARITY, "onnx", ConvertOptions()),
     ["onnx", "tf", "savedmodel", "tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu", *BROWSER], []),
    ("assert_parity, replay", PlanRequest(Entry.ASSERT, None, ConvertOptions(browser=False), replay=True),
     ["tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu"], []),
    ("assert_parity, browser", PlanRequest(Entry.ASSERT, None, ConvertOptions(node_backends=()), replay=False),
     list(BROWSER), []),
    ("bridge tfjs, layers", PlanRequest(Entry.CONVERT, "tf", ConvertOptions(web_formats=("layers",))),
     ["tfjs-layers", "tfjs-layers-node-wasm", "tfjs-layers-node-cpu", "tfjs-layers-fit", "browser-layers-webgl",
      "browser-layers-wasm", "browser-layers-indexeddb"], []),
    ("bridge tfjs, graph", PlanRequest(Entry.CONVERT, "tf", ConvertOptions()),
     ["tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu", *BROWSER], []),
]


@pytest.mark.parametrize("request_, names, off", [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES])
def test_plans(request_: PlanRequest, names: list[str], off: list[str]) -> None:
    plan = build_plan(request_)
    assert [p.stage.name for p in plan] == names
    assert [p.stage.name for p in plan if p.selection is Selection.OFF] == off
    assert all(p.produce is (request_.entry is Entry.CONVERT) for p in plan)


def test_every_stage_name_is_declared_once() -> None:
    names = [s.name for s in plan_module.STAGES]
    assert len(names) == len(set(names))
    web = [s for s in plan_module.STAGES if {Artifact.WEB_MODEL, Artifact.LAYERS_MODEL} & set(s.judges)
           and s.tolerance is not TolerancePolicy.EXACT and s.name not in ("tfjs-layers-fit", "train-step")]
    assert {s.name for s in web} == {"tfjs-graph", *WEB, "tfjs-layers", "tfjs-layers-node-wasm",
                                     "tfjs-layers-node-cpu", "browser-layers-webgl", "browser-layers-wasm"}
    assert all(s.tolerance is TolerancePolicy.WEB for s in web)  # quantization widens every web stage alike


def test_no_stage_name_is_compared_by_prefix_outside_the_plan() -> None:
    pattern = re.compile(r"""(startswith|removeprefix)\(\s*["'](browser|tfjs|onnx|tf|capture|savedmodel)""")
    hits = [f"{path.relative_to(ROOT)}:{n}" for path in (ROOT / "bridge").rglob("*.py")
            if "node_modules" not in path.parts and path.name != "plan.py"
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def _results(*statuses: Status) -> list[StageResult]:
    return [StageResult(f"s{i}", status) for i, status in enumerate(statuses)]


STATUS_CASES = [
    # (id, statuses, strict, overall, ok)
    ("all pass", (Status.PASS, Status.PASS), False, Status.PASS, True),
    ("a skip", (Status.PASS, Status.SKIPPED), False, Status.PASS, True),
    ("a skip, strict", (Status.PASS, Status.SKIPPED), True, Status.FAIL, False),
    ("only skips", (Status.SKIPPED,), False, Status.PASS, True),
    ("inaccurate", (Status.PASS, Status.INACCURATE, Status.SKIPPED), False, Status.INACCURATE, False),
    ("a failure wins", (Status.INACCURATE, Status.FAIL), False, Status.FAIL, False),
    ("no stages", (), False, Status.FAIL, True),
]


@pytest.mark.parametrize("statuses, strict, overall, ok", [c[1:] for c in STATUS_CASES],
                         ids=[c[0] for c in STATUS_CASES])
def test_the_one_overall_status_rule(statuses: tuple[Status, ...], strict: bool, overall: Status, ok: bool) -> None:
    assert overall_status(_results(*statuses), strict) is overall
    assert stages_ok(_results(*statuses), strict) is ok


# ------------------------------------------------------------------------------------------------ quantized models


@pytest.fixture(scope="module", params=["uint8", "float16"])
def quantized(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    out = tmp_path_factory.mktemp(f"quantized-{request.param}") / "out"
    return request.param, bridge.convert(make_net(), [SPEC], out, route="native", quantize=(request.param,))


def _tolerances(stages: list[Any], names: tuple[str, ...]) -> set[tuple[float, float]]:
    return {(o.atol, o.rtol) for s in stages if s.name in names for o in s.outputs}


@pytest.mark.node
@pytest.mark.browser
def test_quantized_conversion_passes_every_stage_with_one_web_tolerance(quantized: tuple[str, Any]) -> None:
    dtype, result = quantized
    if result.stage("browser-webgl").status is Status.SKIPPED:
        pytest.skip(f"Chromium is not available: {result.stage('browser-webgl').reason}")
    assert all(s.status is Status.PASS for s in result.stages), [(s.name, s.status, s.reason) for s in result.stages]
    web = _tolerances(result.stages, ("tfjs-graph", *WEB))
    assert len(web) == 1  # one tolerance for every web stage, Node and browser alike
    atol, rtol = web.pop()
    assert atol > DEFAULT_TOLERANCE.atol and rtol > DEFAULT_TOLERANCE.rtol  # widened by the quantization
    assert _tolerances(result.stages, ("tf", "savedmodel")) == {(DEFAULT_TOLERANCE.atol, DEFAULT_TOLERANCE.rtol)}
    # The widening is needed: in the browser, the quantized weights are off by more than the default tolerance.
    browser_error = max(result.stage(n).max_abs for n in ("browser-webgl", "browser-wasm"))
    if dtype == "uint8":
        assert browser_error > DEFAULT_TOLERANCE.atol


@pytest.mark.node
@pytest.mark.browser
def test_quantized_folder_passes_bridge_parity_with_the_same_tolerances(quantized: tuple[str, Any]) -> None:
    from bridge.parity.recheck import run_parity

    _, result = quantized
    if result.stage("browser-webgl").status is Status.SKIPPED:
        pytest.skip(f"Chromium is not available: {result.stage('browser-webgl').reason}")
    run = run_parity(result.out_dir)
    assert run.exit_code == 0, [(s.name, s.status, s.reason) for s in run.stages]
    names = ("tfjs-graph", *WEB)
    assert _tolerances(run.stages, names) == _tolerances(result.stages, names)


# ------------------------------------------------------------------------------------------------ a stage added once


def _dummy_check(verdict: Status) -> Any:
    def check(env: StageEnv) -> StageResult:
        """Counts the web model's shards: a real look at the artifact the stage judges."""
        web = env.artifacts.web_model
        assert web is not None
        shards = len(list(web.path.glob("group1-shard*")))
        return StageResult(env.name, verdict if shards else Status.FAIL, detail=f"{shards} shard(s) seen",
                           reason=None if verdict is Status.PASS else "failed on purpose")
    return check


@pytest.fixture()
def with_dummy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Status:
    verdict = request.param
    dummy = Stage("dummy-check", Runtime.TENSORFLOW, judges=(Artifact.WEB_MODEL,), check=_dummy_check(verdict))
    monkeypatch.setattr(plan_module, "STAGES", (*plan_module.STAGES, dummy))  # the one place
    return verdict


@pytest.mark.node
@pytest.mark.parametrize("with_dummy", [Status.PASS, Status.FAIL], indirect=True, ids=["passing", "failing"])
def test_a_stage_added_in_one_place_appears_everywhere(with_dummy: Status, tmp_path: Path) -> None:
    from bridge.cli import main as cli_main
    from bridge.parity.recheck import run_parity
    from bridge.testing import check_parity

    passes = with_dummy is Status.PASS
    out = tmp_path / "out"
    result = bridge.convert(make_net(), [SPEC], out, route="native", browser=False, node_backends=("wasm",))
    assert result.stage("dummy-check").status is with_dummy and result.ok is passes
    assert result.stage("dummy-check").detail == "1 shard(s) seen"
    assert "dummy-check" in (out / "report.md").read_text() and "dummy-check" in (out / "report.html").read_text()
    assert [s["name"] for s in result.report["stages"]][-1] == "dummy-check"

    junit = tmp_path / "parity.xml"
    assert cli_main(["parity", str(out), "--no-browser", "--junit", str(junit)]) == (0 if passes else 3)
    cases = {c.get("classname"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert ("bridge.dummy-check" in cases) and ((cases["bridge.dummy-check"].find("failure") is None) is passes)
    assert "dummy-check" in (out / "parity" / "report.md").read_text()
    assert [s.name for s in run_parity(out, browser=False).stages][-1] == "dummy-check"

    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    check = check_parity(make_net(), out / "web_model", {"x": x}, layers=False)
    assert [s.name for s in check.stages] == ["tfjs-node-wasm", "dummy-check"] and check.ok is passes


def test_architecture_doc_shows_the_declared_stages() -> None:
    """docs/architecture.md's stage table is the one `stage_table()` renders from `STAGES`."""
    from bridge.stages.plan import stage_table

    assert stage_table() in (ROOT / "docs" / "architecture.md").read_text()


@pytest.mark.node
def test_a_stage_finding_reaches_the_terminal_and_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    """Findings (e.g. a node over WebGL's texture limit, a kernel a backend lacks) are printed under the stage line
    and kept in the report's notes, also when the stage passed."""
    from bridge.stages.tensorflow import _texture_finding

    over = {"over": {"8192": [{"node": "big/MatMul", "op": "MatMul", "shape": [1, 90000000], "texture": [9487, 9487]}]}}
    text = _texture_finding(over)
    assert "big/MatMul (9487x9487)" in text and "8192" in text

    def check(env: StageEnv) -> StageResult:
        return StageResult(env.name, Status.PASS, extra={"findings": [text]})

    dummy = Stage("dummy-finding", Runtime.TENSORFLOW, judges=(Artifact.WEB_MODEL,), check=check)
    monkeypatch.setattr(plan_module, "STAGES", (*plan_module.STAGES, dummy))
    result = bridge.convert(make_net(), [SPEC], tmp_path / "out", route="native", browser=False, node_backends=(),
                            quiet=False)
    assert result.ok and f"dummy-finding: {text}" in result.report["notes"]
    assert text in capfd.readouterr().err
