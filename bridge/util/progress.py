"""Progress on the terminal: a spinner while a stage runs, then one line per stage with its status and figures."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from bridge.stages.result import StageResult, Status

_STYLE = {Status.PASS: "green", Status.INACCURATE: "yellow", Status.FAIL: "red", Status.SKIPPED: "dim"}


class Progress:
    """Prints stage lines to stderr (quiet=True prints nothing, for the Python API)."""

    def __init__(self, quiet: bool = False) -> None:
        # A private copy of the terminal's stderr: stages hide library chatter by redirecting fd 2, and the
        # spinner and stage lines must still reach the user.
        stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1) if _has_fd(sys.stderr) else sys.stderr
        self.console = Console(file=stream, highlight=False, soft_wrap=True)
        self.quiet = quiet

    @contextmanager
    def running(self, name: str) -> Iterator[None]:
        """Show a spinner labelled `name` while the body runs (only on a terminal)."""
        if self.quiet or not self.console.is_terminal:
            yield
            return
        with self.console.status(f"{name} ..."):
            yield

    def stage_done(self, stage: StageResult) -> None:
        """One line: mark, stage name, detail, seconds, worst max |Δ|, reason."""
        if self.quiet:
            return
        err = f"max|Δ| {stage.max_abs:.2g}" if stage.max_abs is not None else ""
        line = f"  {stage.status.symbol} {stage.name:<24} {stage.detail[:32]:<32} {stage.seconds:6.1f} s   {err}"
        if stage.reason:
            line += f"  ({stage.reason.splitlines()[0][:120]})"
        self.console.print(line.rstrip(), style=_STYLE[stage.status], markup=False)

    def note(self, text: str) -> None:
        """A plain informational line."""
        if not self.quiet:
            self.console.print(text, markup=False)


def _has_fd(stream: object) -> bool:
    try:
        stream.fileno()  # type: ignore[attr-defined]
        return True
    except (AttributeError, OSError, ValueError):
        return False
