"""The model zoo (benchmarks/zoo_models.py, run by benchmarks/model_zoo.py): real architectures from transformers'
modeling code and hand-written common kinds, static and dynamic, on route auto.

Slow tier (BRIDGE_SLOW=1), table-driven over the zoo's own table: every (model, variant) converts in its own
process, as the runner does, with every stage passing, TF.js in Node (wasm, cpu) and Chromium (webgl, wasm,
IndexedDB) included, on the route the table expects; or, for a variant the table records a known outcome for
(a fallback to the ONNX route, a failing stage, a typed error), exactly that outcome, so a regression and a fix
both fail the case. Stage tolerances are bridge's parity policy (atol 1e-4 / rtol 1e-3 against PyTorch).

Default tier: the runner's judgement of rows on hand-made data, its time limit, and one run of the command on the
smallest model (about 15 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import model_zoo as zoo  # noqa: E402
from benchmarks.zoo_models import FAST_MODEL, ZOO, Expect, select  # noqa: E402

ATOL = 1e-4  # bridge's default parity tolerance; a tiny depthwise net stays far below it


# ---------------------------------------------------------------------------------------------------- slow: the table

PAIRS = [(model.name, variant) for model, variant in select()]


@pytest.mark.slow
@pytest.mark.node
@pytest.mark.browser
@pytest.mark.parametrize("name, variant", PAIRS, ids=[f"{n}-{v}" for n, v in PAIRS])
def test_zoo_model_has_its_expected_outcome(name: str, variant: str, tmp_path: Path) -> None:
    row = zoo.run_row(name, variant, zoo.RunOptions(browser=True), tmp_path)
    assert row["deviations"] == [], zoo.row_line(row)
    expect = ZOO[name].variant(variant).expect
    if expect.clean:
        assert row["status"] == "pass" and row["route"] == "native", zoo.row_line(row)


# ---------------------------------------------------------------------------------------------------- fast: judging

def _stages(*failing: str, browser: bool = True, route: str = "native") -> list[dict[str, Any]]:
    names = ["capture" if route == "native" else "onnx", "tf", "savedmodel", "tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu", "browser-webgl",
             "browser-wasm", "browser-indexeddb"]
    return [{"name": n, "status": "fail" if n in failing else ("pass" if browser or not n.startswith("browser-")
                                                                 else "skipped"), "max_abs": 1e-6}
            for n in names]


def _row(status: str = "pass", route: str = "native", stages: list[dict[str, Any]] | None = None,
         **extra: Any) -> dict[str, Any]:
    return {"model": "m", "variant": "static", "status": status, "route": route,
            "stages": _stages(route=route) if stages is None else stages, **extra}


JUDGE_CASES = [
    ("clean pass", _row(), Expect(), True, []),
    ("browser off: its skipped stages do not count", _row(stages=_stages(browser=False)), Expect(), False, []),
    ("browser on: a skipped stage does", _row(stages=_stages(browser=False)), Expect(), True,
     ["stages not passing: browser-indexeddb, browser-wasm, browser-webgl"]),
    ("fell back unexpectedly", _row(route="onnx", native_failure="no converter for aten.foo"), Expect(), True,
     ["ended on the onnx route, expected native (native failure: no converter for aten.foo)"]),
    ("known fallback", _row(route="onnx", native_failure="no converter for aten.foo"),
     Expect(route="onnx", native_reason="aten.foo"), True, []),
    ("known fallback, another reason now", _row(route="onnx", native_failure="RecursionError"),
     Expect(route="onnx", native_reason="aten.foo"), True,
     ["native failure changed: expected 'aten.foo', got 'RecursionError'"]),
    ("known fallback fixed", _row(), Expect(route="onnx", native_reason="aten.foo"), True,
     ["ended on the native route, expected onnx"]),
    ("a stage regressed", _row(stages=_stages("tfjs-node-cpu")), Expect(), True,
     ["stages not passing: tfjs-node-cpu"]),
    ("known failing stage", _row(status="fail", stages=_stages("browser-webgl")),
     Expect(failing=("browser-webgl",)), True, []),
    ("known failing stage fixed", _row(), Expect(failing=("browser-webgl",)), True,
     ["known failing stages now pass: browser-webgl"]),
    ("known failing browser stage, browser off", _row(stages=_stages(browser=False)),
     Expect(failing=("browser-webgl",)), False, []),
    ("a stage missing", _row(stages=_stages()[:5]), Expect(), True,
     ["stages missing: browser-indexeddb, browser-wasm, browser-webgl, tfjs-node-cpu"]),
    ("an error", _row(status="error", route=None, error="ConversionError", reason="[capture] boom"), Expect(),
     True, ["error: ConversionError: [capture] boom"]),
    ("a known error", _row(status="error", route=None, error="ConversionError", reason="[capture] boom"),
     Expect(route=None, error="ConversionError"), True, []),
    ("a known error fixed", _row(), Expect(route=None, error="ConversionError", why="x"), True,
     ["expected ConversionError (x), got pass: no error"]),
    ("a timeout", _row(status="timeout", route=None, error="TimeoutExpired", reason="stopped"), Expect(), True,
     ["timeout: TimeoutExpired: stopped"]),
]


@pytest.mark.parametrize("name, row, expect, browser, want", JUDGE_CASES, ids=[c[0] for c in JUDGE_CASES])
def test_deviations(name: str, row: dict[str, Any], expect: Expect, browser: bool, want: list[str]) -> None:
    assert zoo.deviations(row, expect, browser, ("wasm", "cpu")) == want


@pytest.mark.parametrize("stages, want", [
    (_stages(), "✓"),
    (_stages("tf"), "✗ tf"),
    ([{"name": "tf", "status": "inaccurate"}, {"name": "capture", "status": "pass"}], "≈ tf"),
    (_stages(browser=False), "✓"),
    ([], ""),
])
def test_group_cell(stages: list[dict[str, Any]], want: str) -> None:
    assert zoo.group_cell(stages, ("capture", "tf", "savedmodel")) == want


def test_group_by_prefix_takes_stages_added_to_the_plan() -> None:
    stages = [{"name": "browser-webgl", "status": "pass"}, {"name": "browser-webgpu", "status": "fail"}]
    assert zoo.group_cell(stages, ("browser-",)) == "✗ browser-webgpu"


def test_browser_group_skipped_is_a_dash() -> None:
    assert zoo.group_cell(_stages(browser=False), ("browser-",)) == "–"


def test_native_failure_is_read_from_the_fallback_note() -> None:
    notes = ["warning: something", zoo.NATIVE_FELL_BACK + "[capture] no converter for aten.foo | next step: x"]
    assert zoo.native_failure(notes) == "[capture] no converter for aten.foo | next step: x"
    assert zoo.native_failure(["warning: something"]) is None


def test_summary_counts_passes_per_variant_and_route() -> None:
    rows = [_row(), {**_row(route="onnx"), "variant": "dynamic"}, {**_row(status="fail"), "variant": "dynamic"},
            {**_row(), "deviations": ["x"]}]
    summary = zoo.summarize(rows)
    assert summary["pass"] == 3 and summary["total"] == 4
    assert summary["by_variant"] == {"static": {"pass": 2, "total": 2}, "dynamic": {"pass": 1, "total": 2}}
    assert summary["pass_by_route"] == {"native": 2, "onnx": 1}
    assert summary["failures"] == ["m [dynamic]"] and summary["unexpected"] == ["m [static]"]
    assert zoo.pass_line(summary).startswith("3/4 pass (static 2/2, dynamic 1/2; native 2, onnx 1)")


def test_select_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="nosuchmodel"):
        select(["nosuchmodel"])
    with pytest.raises(ValueError, match="sideways"):
        select(["bert"], ["sideways"])
    assert [(m.name, v) for m, v in select(["bert"], ["dynamic"])] == [("bert", "dynamic")]
    assert {m.name for m, _ in select(["gpt*"])} == {"gpt2", "gpt2_masked", "gpt_neo"}


# ---------------------------------------------------------------------------------------------------- fast: running

def test_a_row_past_its_time_limit_is_stopped(tmp_path: Path) -> None:
    """The child process (its imports alone take longer than 2 s) is killed and the row says so."""
    row = zoo.run_row(FAST_MODEL, "static", zoo.RunOptions(browser=False, node_backends=("wasm",), time_limit_s=2),
                      tmp_path)
    assert row["status"] == "timeout" and "2 s time limit" in row["reason"]
    assert row["wall_s"] < 10 and row["deviations"]


@pytest.mark.node
def test_the_zoo_command_on_the_smallest_model(tmp_path: Path) -> None:
    from bridge.runtime.node import node_status

    if not node_status().ok:
        pytest.skip("Node and the pinned TF.js packages are needed: " + "; ".join(node_status().problems))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "model_zoo.py"), "--models", FAST_MODEL,
                           "--variants", "static", "--no-browser", "--node-backends", "wasm", "--work",
                           str(tmp_path / "work"), "--results", str(tmp_path / "results")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "zoo.json").read_text())
    [row] = report["rows"]
    assert (row["model"], row["variant"], row["status"], row["route"]) == (FAST_MODEL, "static", "pass", "native")
    assert row["native_failure"] is None and row["deviations"] == []
    ran = {s["name"]: s for s in row["stages"] if s["status"] != "skipped"}
    assert list(ran) == ["capture", "tf", "savedmodel", "tfjs-graph", "tfjs-node-wasm"]
    assert all(s["status"] == "pass" and s["max_abs"] <= ATOL for n, s in ran.items() if n != "capture")
    assert row["max_abs"] == max(s["max_abs"] for n, s in ran.items() if n != "capture")
    assert row["web_model"]["op_count"] > 5 and row["web_model"]["transposes"] == 0
    assert 0 < row["convert_s"] < row["wall_s"] and row["parameters"] > 1000
    assert report["summary"]["pass"] == 1 and "1/1 pass (static 1/1; native 1, onnx 0)" in done.stdout
    markdown = (tmp_path / "results" / "zoo.md").read_text()
    assert "1/1 pass" in markdown
    assert f"| {FAST_MODEL} | static | x:1x3x32x32 | native | ✓ | ✓ | ✓ | – |" in markdown
