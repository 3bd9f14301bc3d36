"""Number formatting and small figures shared by the reports (Markdown, HTML, JUnit)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def fmt(value: float | None, digits: int = 3) -> str:
    """`value` with `digits` significant digits, or an en dash when there is none."""
    if value is None:
        return "–"
    return f"{value:.{digits}g}"


def stage_max_abs(stage: Mapping[str, Any]) -> float | None:
    """The largest max |Δ| over a stage's outputs (report.json form), if any was compared."""
    values = [o["max_abs"] for o in stage.get("outputs", []) if o.get("max_abs") is not None]
    return max(values) if values else None
