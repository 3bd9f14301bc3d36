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


def test_output_is_readable_by_another_user(tmp_path: Path) -> None:
    """Folders made by mkdtemp are 0700 and some writers make 0600 files: the published output is world-readable
    (under the usual umask 022), so a web server running as another user can serve it."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "out") as staging:
            (staging / "web_model").mkdir(mode=0o700)
            secret = staging / "web_model" / "weights.safetensors"
            secret.write_text("w")
            secret.chmod(0o600)
    finally:
        os.umask(previous)
    for path in (tmp_path / "out", tmp_path / "out" / "web_model", tmp_path / "out" / "web_model" / "weights.safetensors"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, (path, oct(mode))
