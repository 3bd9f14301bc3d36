"""Atomic output folders: success replaces, failure and interruption leave the old output and no temp folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.util.atomic import atomic_output_dir
from bridge.errors import OutputError


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_success_moves_into_place(tmp_path: Path) -> None:
    with atomic_output_dir(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("new")
    assert (tmp_path / "out" / "a.txt").read_text() == "new"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_keeps_previous_output(tmp_path: Path, error: BaseException) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(type(error)):
        with atomic_output_dir(out, force=True) as staging:
            (staging / "half.txt").write_text("half")
            raise error
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert _leftovers(tmp_path) == []


def test_existing_output_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputError):
        with atomic_output_dir(out):
            pass
    with atomic_output_dir(out, force=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert _leftovers(tmp_path) == []
