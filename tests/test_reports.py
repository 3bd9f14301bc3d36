"""report.html (self-contained, rendered in Chromium without page errors, screenshot kept in test-results/), its
SVG plots and error profiles, and the JUnit XML (checked against the elements and attributes the usual JUnit schema
requires: Ant's junit.xsd for testsuite/testcase/failure, Jenkins' junit-10.xsd for skipped)."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.report.junit import junit_tree, write_junit
from bridge.parity.metrics import error_profile
from bridge.report.writer import render_markdown
from bridge.report.html import (bars_svg, histogram_svg, layer_curve_svg, render_html,
                                scatter_svg)
from test_bisect import CULPRIT, converted, report_of

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "test-results" / "report.png"

# ------------------------------------------------------------------------------------------------ error profiles

PROFILE_CASES = [
    # (id, got, want): the histogram counts every finite element once, exact matches are counted, the worst
    # element is among the scatter points
    ("exact", np.arange(10.0), np.arange(10.0)),
    ("small noise", np.linspace(-1, 1, 1000) + 1e-6, np.linspace(-1, 1, 1000)),
    ("one bad element", np.r_[np.zeros(499), 0.5], np.zeros(500)),
    ("nan skipped", np.r_[np.nan, 1.0, 2.0], np.r_[0.0, 1.0, 2.5]),
]


@pytest.mark.parametrize("got, want", [c[1:] for c in PROFILE_CASES], ids=[c[0] for c in PROFILE_CASES])
def test_error_profile(got: np.ndarray, want: np.ndarray) -> None:
    profile = error_profile(got, want)
    finite = np.isfinite(got) & np.isfinite(want)
    diff = np.abs(got - want)[finite]
    assert sum(profile["counts"]) == finite.sum()
    assert profile["exact"] == int((diff == 0).sum())
    assert len(profile["counts"]) == len(profile["log10_edges"]) - 1
    worst = int(np.flatnonzero(finite)[np.argmax(diff)])
    assert [float(f"{want[worst]:.6g}"), float(f"{got[worst]:.6g}")] in profile["scatter"]
    assert len(profile["scatter"]) <= 240 + 16
    if diff.max() > 0:  # the bin of the largest error holds at least one element
        k = int(np.searchsorted(profile["log10_edges"], np.log10(diff.max()), side="right")) - 1
        assert profile["counts"][min(k, len(profile["counts"]) - 1)] >= 1


# ------------------------------------------------------------------------------------------------ SVG plots

LAYERS = {"points": [{"path": "a"}, {"path": "b"}, {"path": "c"}],
          "first_divergence": {"observed_at": "b"},
          "stages": [{"stage": "tfjs-graph", "layers": [
              {"path": "a", "max_abs": 1e-7, "status": "pass"}, {"path": "b", "max_abs": 2e-2, "status": "inaccurate"},
              {"path": "c", "max_abs": 3e-2, "status": "inaccurate"}]}]}
SVG_CASES = [
    ("histogram", lambda: histogram_svg(error_profile(np.r_[1e-7, 1e-3], np.zeros(2)), 1e-4, "h"), 2),
    ("scatter", lambda: scatter_svg([[0.0, 0.1], [1.0, 1.0], [2.0, 2.5]], "s"), 3),
    ("bars", lambda: bars_svg([("onnx", 1.5), ("tf", 0.5)], "s", "t"), 2),
    ("layer curve", lambda: layer_curve_svg(LAYERS), 3),
]


@pytest.mark.parametrize("make, marks", [c[1:] for c in SVG_CASES], ids=[c[0] for c in SVG_CASES])
def test_svg_plots_are_well_formed(make: Any, marks: int) -> None:
    svg = str(make())
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    shapes = root.findall(".//{http://www.w3.org/2000/svg}rect") + root.findall(".//{http://www.w3.org/2000/svg}circle")
    assert len(shapes) >= marks  # one mark per bar / point at least


def test_layer_curve_needs_layers() -> None:
    assert layer_curve_svg({"points": [], "stages": []}) is None


# ------------------------------------------------------------------------------------------------ report.html

URL = re.compile(r"""(?:src|href)\s*=\s*["'](?!#)|url\(|@import|https?://(?!www\.w3\.org/2000/svg)""")


@pytest.mark.node
def test_html_report_is_self_contained_and_names_the_divergence(tmp_path_factory: pytest.TempPathFactory) -> None:
    out = converted(tmp_path_factory, "wrong-web")
    text = (out / "report.html").read_text()
    assert not URL.search(text), URL.search(text)  # nothing is fetched: readable offline
    assert "<script" not in text
    assert f"First diverging layer: <code>{CULPRIT}</code>" in text
    assert text.count("<svg") >= 5  # distributions, layer curve, scatter, ops, timings
    for stage in ("onnx", "tf", "savedmodel", "tfjs-graph", "tfjs-node-wasm", "tfjs-node-cpu"):
        assert f"<code>{stage}</code>" in text
    assert "Transpose ops" in text and "parameters" in text


@pytest.mark.node
def test_markdown_report_still_renders_with_layers(tmp_path_factory: pytest.TempPathFactory) -> None:
    report = report_of(converted(tmp_path_factory, "wrong-web"))
    assert report["layers"]["first_divergence"]["layer"] == CULPRIT
    assert "| tfjs-graph |" in render_markdown(report)


def test_html_report_without_optional_parts() -> None:
    """An ONNX-file conversion: no parameters, no layers, no profiles, a skipped stage; the page still renders."""
    report = {"bridge_version": "0", "route": "onnx", "status": "skipped", "samples": 1, "options": {},
              "model": {"source": "m.onnx", "kind": "onnx", "parameters": None, "inputs": [], "outputs": []},
              "stages": [{"name": "onnx", "status": "skipped", "seconds": 0.0, "reason": "given .onnx",
                          "detail": "", "outputs": []}], "artifacts": [], "versions": {}}
    text = render_html(report)
    assert "No per-layer comparison was run" in text and "given .onnx" in text


@pytest.mark.node
@pytest.mark.browser
def test_html_report_renders_in_chromium(tmp_path_factory: pytest.TempPathFactory) -> None:
    from playwright.sync_api import sync_playwright

    from bridge.runtime.browser import CHROMIUM_ARGS, browser_status, chromium_executable, launchable_binary

    if browser_status().problems:
        pytest.skip("; ".join(browser_status().problems))
    page_html = converted(tmp_path_factory, "wrong-web") / "report.html"
    errors: list[str] = []
    requests: list[str] = []
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=launchable_binary(chromium_executable() or "chromium"),
                                             headless=True, args=list(CHROMIUM_ARGS), chromium_sandbox=False)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_html.as_uri(), wait_until="load")
            svg_sizes = page.eval_on_selector_all("svg", "nodes => nodes.map(n => n.getBoundingClientRect().width)")
            callout = page.inner_text(".callout")
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert requests == [page_html.as_uri()]  # the page itself, nothing else
    assert len(svg_sizes) >= 5 and all(w > 100 for w in svg_sizes)
    assert CULPRIT in callout and "tfjs-graph" in callout
    assert SCREENSHOT.stat().st_size > 20_000


# ------------------------------------------------------------------------------------------------ JUnit

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
DECIMAL = re.compile(r"^\d+(\.\d+)?$")
SUITE_ATTRS = ("name", "tests", "failures", "errors", "time", "timestamp", "hostname", "id", "package")


def junit_problems(root: ET.Element) -> list[str]:
    """What violates the JUnit schema's required structure (empty when the file is valid)."""
    problems = []
    if root.tag != "testsuites":
        return [f"root is {root.tag}, not testsuites"]
    for suite in root:
        if suite.tag != "testsuite":
            problems.append(f"testsuites holds {suite.tag}")
            continue
        problems += [f"testsuite lacks {a}" for a in SUITE_ATTRS if a not in suite.attrib]
        if not TIMESTAMP.match(suite.get("timestamp", "")):
            problems.append("timestamp is not ISO 8601 without a time zone")
        tags = [c.tag for c in suite]
        if tags[:1] != ["properties"] or tags[-2:] != ["system-out", "system-err"] or set(tags[1:-2]) - {"testcase"}:
            problems.append(f"testsuite children out of order: {tags}")
        cases = suite.findall("testcase")
        for case in cases:
            problems += [f"testcase lacks {a}" for a in ("name", "classname", "time") if a not in case.attrib]
            if not DECIMAL.match(case.get("time", "")):
                problems.append(f"testcase time {case.get('time')!r} is not a decimal")
            if len(case) > 1 or any(c.tag not in ("failure", "error", "skipped") for c in case):
                problems.append(f"testcase {case.get('name')} has children {[c.tag for c in case]}")
            problems += [f"failure in {case.get('name')} lacks type" for c in case.findall("failure")
                         if "type" not in c.attrib]
        counts = {"tests": len(cases), "failures": len(suite.findall("testcase/failure")),
                  "errors": len(suite.findall("testcase/error")), "skipped": len(suite.findall("testcase/skipped"))}
        problems += [f"{k}={suite.get(k)} but {v} found" for k, v in counts.items() if suite.get(k) != str(v)]
    return problems


def _stage(name: str, status: str, outputs: list[str], reason: str | None = None) -> dict[str, Any]:
    return {"name": name, "status": status, "seconds": 1.25, "reason": reason, "detail": "",
            "outputs": [{"name": o, "status": status, "max_abs": 0.5, "max_rel": 0.1, "cosine": 0.99, "atol": 1e-4,
                         "rtol": 1e-3, "message": "max |Δ| 0.5 exceeds atol"} for o in outputs]}


def _report(*stages: dict[str, Any]) -> dict[str, Any]:
    return {"bridge_version": "0", "route": "onnx", "status": "pass", "samples": 3, "model": {"source": "m.py:Net"},
            "stages": list(stages), "layers": None}


JUNIT_CASES = [
    # (id, report, tests, failures, skipped)
    ("all pass", _report(_stage("onnx", "pass", ["y"]), _stage("tfjs-node-wasm", "pass", ["y", "z"])), 3, 0, 0),
    ("inaccurate output", _report(_stage("tfjs-node-wasm", "inaccurate", ["y"])), 1, 1, 0),
    ("runtime failure without outputs", _report(_stage("tfjs-node-cpu", "fail", [], reason="load: bad shard")), 1, 1, 0),
    ("skipped stage", _report(_stage("browser-webgl", "skipped", [], reason="no Chromium")), 1, 0, 1),
]


@pytest.mark.parametrize("report, tests, failures, skipped", [c[1:] for c in JUNIT_CASES],
                         ids=[c[0] for c in JUNIT_CASES])
def test_junit_cases_and_schema(tmp_path: Path, report: dict[str, Any], tests: int, failures: int,
                                skipped: int) -> None:
    path = write_junit(report, tmp_path / "ci" / "junit.xml")
    root = ET.parse(path).getroot()
    assert junit_problems(root) == []
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (str(tests), str(failures),
                                                                                 str(skipped))
    assert float(suite.get("time")) == pytest.approx(1.25 * len(report["stages"]))
    names = [c.get("name") for c in suite.findall("testcase")]
    for stage in report["stages"]:
        expected = [f"{stage['name']}[{o['name']}]" for o in stage["outputs"]] or [stage["name"]]
        assert all(n in names for n in expected)


BROKEN_CASES = [
    ("missing classname", lambda r: r.find("testsuite/testcase").attrib.pop("classname")),
    ("wrong failure count", lambda r: r.find("testsuite").set("failures", "7")),
    ("failure without type", lambda r: r.find("testsuite/testcase/failure").attrib.pop("type")),
    ("system-out first", lambda r: r.find("testsuite").insert(0, ET.Element("system-out"))),
]


@pytest.mark.parametrize("breaks", [c[1] for c in BROKEN_CASES], ids=[c[0] for c in BROKEN_CASES])
def test_junit_validator_can_fail(breaks: Any) -> None:
    root = copy.deepcopy(junit_tree(_report(_stage("tfjs-node-wasm", "inaccurate", ["y"]))).getroot())
    breaks(root)
    assert junit_problems(root) != []


@pytest.mark.node
def test_junit_of_a_real_divergence(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    report = report_of(converted(tmp_path_factory, "wrong-web"))
    root = ET.parse(write_junit(report, tmp_path / "junit.xml")).getroot()
    assert junit_problems(root) == []
    failures = {c.get("name"): c.find("failure") for c in root.iter("testcase") if c.find("failure") is not None}
    assert {"tfjs-graph[output_0]", "tfjs-node-wasm[output_0]", "tfjs-node-cpu[output_0]"} <= set(failures)
    assert all(f.get("type") == "inaccurate" and CULPRIT in f.text for f in failures.values())
    assert "onnx[output_0]" not in failures
