"""report.json (for machines) and report.md (for pull requests) from a conversion's stage results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.stages import StageResult, Status
from bridge.templating import render


@dataclass
class IOReport:
    """One input or output as the report shows it."""

    name: str
    shape: list[int | None]
    web_shape: list[int | None]
    dtype: str
    layout: str

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        return dict(self.__dict__)


@dataclass
class Report:
    """Everything a conversion reports."""

    route: str
    status: Status
    model: dict[str, Any]
    stages: list[StageResult]
    samples: int
    artifacts: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
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


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}"


def _stage_max_abs(stage: dict[str, Any]) -> float | None:
    values = [o["max_abs"] for o in stage["outputs"] if o.get("max_abs") is not None]
    return max(values) if values else None


def render_markdown(report: dict[str, Any]) -> str:
    """report.md from report.json's content."""
    symbols = {s.value: s.symbol for s in Status}
    return render("report.md.j2", symbols=symbols, fmt=_fmt, stage_max_abs=_stage_max_abs, **report)


def write_reports(report: Report, folder: Path) -> list[Path]:
    """Write report.json and report.md into `folder`; returns their paths."""
    data = report.to_dict()
    json_path, md_path = folder / "report.json", folder / "report.md"
    json_path.write_text(json.dumps(data, indent=2, default=json_default) + "\n")
    data = json.loads(json_path.read_text())
    md_path.write_text(render_markdown(data))
    from bridge.report_html import write_html_report

    return [json_path, md_path, write_html_report(data, folder)]


def json_default(value: Any) -> Any:
    """json.dumps `default=` for report data: arrays and numpy scalars as lists/numbers, paths as strings."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to report.json")
