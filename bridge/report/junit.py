"""`--junit FILE`: the parity report as JUnit XML, one test case per stage and output, for CI dashboards.

The layout follows the common JUnit schema (Ant's / Jenkins'): ``testsuites`` > ``testsuite`` (name, tests,
failures, errors, skipped, time, timestamp, hostname, id, package; then properties, the test cases, system-out and
system-err) > ``testcase`` (name, classname, time) with an optional ``failure`` (message, type) or ``skipped``
(message) child. An inaccurate or failing output is a failure; a stage that failed without comparing outputs (a
runtime error) is one test case with a failure of type ``error``; a skipped stage is one skipped test case.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bridge.errors import OutputError
from bridge.report.formatting import fmt

SUITE = "bridge parity"


def _case(parent: ET.Element, classname: str, name: str, seconds: float) -> ET.Element:
    return ET.SubElement(parent, "testcase", {"classname": classname, "name": name, "time": f"{seconds:.3f}"})


def _output_text(output: Mapping[str, Any]) -> str:
    return (f"max_abs {fmt(output.get('max_abs'))}, max_rel {fmt(output.get('max_rel'))}, "
            f"cosine {fmt(output.get('cosine'))}, atol {output.get('atol')}, rtol {output.get('rtol')}")


def _stage_cases(suite: ET.Element, stage: Mapping[str, Any], layers_note: str | None) -> dict[str, int]:
    """The test cases of one stage; returns counts of tests, failures, skipped."""
    classname = f"bridge.{stage['name']}"
    status, outputs = stage["status"], stage.get("outputs") or []
    seconds = float(stage.get("seconds") or 0.0)
    if status == "skipped":
        case = _case(suite, classname, stage["name"], seconds)
        ET.SubElement(case, "skipped", {"message": stage.get("reason") or "skipped"})
        return {"tests": 1, "failures": 0, "skipped": 1}
    if not outputs:
        case = _case(suite, classname, stage["name"], seconds)
        if status != "pass":
            failure = ET.SubElement(case, "failure", {"message": (stage.get("reason") or status)[:500],
                                                      "type": "error"})
            failure.text = stage.get("reason") or status
            return {"tests": 1, "failures": 1, "skipped": 0}
        return {"tests": 1, "failures": 0, "skipped": 0}
    failures = 0
    for output in outputs:
        case = _case(suite, classname, f"{stage['name']}[{output['name']}]", seconds / len(outputs))
        if output["status"] != "pass":
            failures += 1
            message = output.get("message") or output["status"]
            failure = ET.SubElement(case, "failure", {"message": f"{output['status']}: {message}"[:500],
                                                      "type": output["status"]})
            failure.text = "\n".join(filter(None, [_output_text(output), layers_note]))
    return {"tests": len(outputs), "failures": failures, "skipped": 0}


def junit_tree(report: Mapping[str, Any]) -> ET.ElementTree:
    """The JUnit XML tree of a report (report.json's content)."""
    root = ET.Element("testsuites", {"name": SUITE})
    timestamp = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0).isoformat()
    source = str(report.get("model", {}).get("source", "model"))
    suite = ET.SubElement(root, "testsuite", {"name": f"{SUITE}: {source}", "id": "0", "package": "bridge",
                                              "timestamp": timestamp, "hostname": socket.gethostname() or "localhost"})
    properties = ET.SubElement(suite, "properties")
    for key in ("bridge_version", "route", "status", "samples"):
        ET.SubElement(properties, "property", {"name": key, "value": str(report.get(key))})
    layers = report.get("layers") or {}
    note = layers.get("summary") if layers.get("first_divergence") else None
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    seconds = 0.0
    for stage in report.get("stages", []):
        for key, value in _stage_cases(suite, stage, note).items():
            totals[key] += value
        seconds += float(stage.get("seconds") or 0.0)
    ET.SubElement(suite, "system-out").text = f"status: {report.get('status')}" + (f"\n{note}" if note else "")
    ET.SubElement(suite, "system-err").text = ""
    counts = {"tests": str(totals["tests"]), "failures": str(totals["failures"]), "errors": "0",
              "skipped": str(totals["skipped"]), "time": f"{seconds:.3f}"}
    suite.attrib.update(counts)
    root.attrib.update({k: v for k, v in counts.items() if k != "skipped"})
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(report: Mapping[str, Any], path: Path | str) -> Path:
    """Write the report as JUnit XML to `path` (its folder is created); returns the path."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        junit_tree(report).write(target, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise OutputError(f"cannot write the JUnit file {target}: {exc.strerror}", stage="junit",
                          hint="pass a writable path to --junit") from exc
    return target
