"""Atomic output folders: everything is written to a temporary folder beside the target and moved into place
only when the whole run succeeded, so a failed or interrupted run leaves the previous output untouched."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bridge.errors import OutputError


def check_output_dir(target: Path, force: bool) -> None:
    """Refuse an existing non-empty output folder unless `force`, and a target that is a file."""
    if target.exists() and not target.is_dir():
        raise OutputError(f"output path {target} exists and is not a folder", stage="output",
                          hint="choose another --out")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise OutputError(f"output folder {target} exists and is not empty", stage="output",
                          hint="pass --force to replace it, or choose another --out")


@contextmanager
def atomic_output_dir(target: Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; on success it replaces `target`, on any error (including
    KeyboardInterrupt) it is removed and `target` is left as it was."""
    target = target.resolve()
    check_output_dir(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        _publishable(staging)
        _replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publishable(folder: Path) -> None:
    """Give the output the permissions of files made normally (mkdtemp makes 0700 folders, and some writers 0600
    files), so a web server running as another user can read it."""
    mask = _umask()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def _replace(staging: Path, target: Path) -> None:
    """Move `staging` into place; an old `target` is moved aside first and deleted only after the move."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "previous")
    try:
        os.replace(staging, target)
    except OSError:
        if old is not None:
            os.replace(old / "previous", target)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
