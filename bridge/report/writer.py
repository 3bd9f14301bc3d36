"""The report of a run, as data (`Report`), and the one writer of report.json (for machines), report.md (for pull
requests) and report.html (for people), used by `bridge convert` and `bridge parity` alike."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.report.formatting import fmt, stage_max_abs
from bridge.report.versions import component_versions
from bridge.source.ports import Interface
from bridge.stages.result import StageResult, Status
from bridge.util.templating import render


@dataclass
class Report:
    """Everything a run reports."""

    route: str | None
    status: Status
    model: dict[str, Any]
    stages: list[StageResult]
    samples: int
    artifacts: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=component_versions)
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    layers: dict[str, Any] | None = None  # bridge.bisect.Bisection.to_dict(), when bisection ran

    def to_dict(self) -> dict[str, Any]:
        """The report as report.json holds it."""
        return {"bridge_version": __version__, "route": self.route, "status": self.status.value,
                "model": self.model, "samples": self.samples, "options": self.options,
                "stages": [s.to_dict() for s in self.stages], "artifacts": self.artifacts,
                "versions": self.versions, "notes": self.notes,
                "layers": self.layers}


def model_section(*, source: str, kind: str, parameters: int | None, weights: Any, interface: Interface,
                  untrusted_pickle_loaded: bool = False) -> dict[str, Any]:
    """The report's ``model`` section: where the model came from and its interface."""
    def io(described: dict[str, Any]) -> dict[str, Any]:
        return {k: described[k] for k in ("name", "shape", "web_shape", "dtype", "layout")}

    return {"source": source, "kind": kind, "parameters": parameters, "weights": weights,
            "untrusted_pickle_loaded": untrusted_pickle_loaded,
            "inputs": [io(p.describe()) for p in interface.inputs],
            "outputs": [io(p.describe()) for p in interface.outputs]}


def render_markdown(report: dict[str, Any]) -> str:
    """report.md from report.json's content."""
    symbols = {s.value: s.symbol for s in Status}
    return render("report.md.j2", symbols=symbols, fmt=fmt, stage_max_abs=stage_max_abs, **report)


def write_reports(report: Report, folder: Path, web_model: Path | None = None) -> list[Path]:
    """Write report.json, report.md and report.html into `folder` (the html takes the op histogram and quantization
    from `web_model`, default ``folder/web_model``); returns their paths."""
    from bridge.report.html import write_html_report

    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "report.json", folder / "report.md"
    json_path.write_text(json.dumps(report.to_dict(), indent=2, default=json_default) + "\n")
    data = json.loads(json_path.read_text())
    md_path.write_text(render_markdown(data))
    return [json_path, md_path, write_html_report(data, folder, web_model=web_model)]


def json_default(value: Any) -> Any:
    """json.dumps `default=` for report data: arrays and numpy scalars as lists/numbers, paths as strings."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to report.json")
