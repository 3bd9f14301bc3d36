"""Stage results: what each stage did, how long it took and how close its numbers are to the reference; and the one
rule that turns a run's stage results into its overall status."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """The outcome of a stage or of one output's check. Never a bare number."""

    PASS = "pass"
    INACCURATE = "inaccurate"
    FAIL = "fail"
    SKIPPED = "skipped"

    @property
    def symbol(self) -> str:
        """A one-character mark for terminals and Markdown."""
        return {"pass": "✓", "inaccurate": "≈", "fail": "✗", "skipped": "–"}[self.value]


STATUS_ORDER = {Status.PASS: 0, Status.SKIPPED: 1, Status.INACCURATE: 2, Status.FAIL: 3}


def worst_status(statuses: list[Status]) -> Status:
    """The worst of several statuses (fail > inaccurate > skipped > pass); pass for an empty list."""
    return max(statuses, key=STATUS_ORDER.__getitem__, default=Status.PASS)


def overall_status(stages: "list[StageResult]", strict: bool) -> Status:
    """A run's status: the worst stage that ran (a skipped stage counts as failed with `strict`); fail for a run
    without stages. The one rule behind `bridge convert`, `bridge parity` and `assert_parity`."""
    if not stages:
        return Status.FAIL
    statuses = [Status.FAIL if strict and s.status is Status.SKIPPED else s.status for s in stages]
    return worst_status([s for s in statuses if s is not Status.SKIPPED])


def stages_ok(stages: "list[StageResult]", strict: bool) -> bool:
    """True when every stage passed (skipped stages count as failures only with `strict`)."""
    allowed = {Status.PASS} if strict else {Status.PASS, Status.SKIPPED}
    return all(s.status in allowed for s in stages)


@dataclass
class OutputParity:
    """Parity of one output of one stage against the reference, over every sample input."""

    name: str
    status: Status
    max_abs: float | None
    max_rel: float | None
    mean_abs: float | None
    cosine: float | None
    atol: float
    rtol: float
    nan_mismatch: int = 0
    inf_mismatch: int = 0
    top1_agreement: float | None = None
    message: str | None = None
    profile: dict[str, Any] | None = None  # error histogram and scatter sample for report.html

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        data = dict(self.__dict__)
        data["status"] = self.status.value
        return data


@dataclass
class StageResult:
    """One pipeline stage: its status, duration, reason (for skips and failures), detail and parity per output."""

    name: str
    status: Status
    seconds: float = 0.0
    reason: str | None = None
    detail: str = ""
    outputs: list[OutputParity] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_abs(self) -> float | None:
        """The largest max-abs error over this stage's outputs, if any were compared."""
        values = [o.max_abs for o in self.outputs if o.max_abs is not None]
        return max(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        return {"name": self.name, "status": self.status.value, "seconds": round(self.seconds, 3),
                "reason": self.reason, "detail": self.detail,
                "outputs": [o.to_dict() for o in self.outputs], **({"extra": self.extra} if self.extra else {})}
