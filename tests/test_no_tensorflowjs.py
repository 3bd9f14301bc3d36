"""bridge never imports or depends on the `tensorflowjs` pip package."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT = re.compile(r"^\s*(import\s+tensorflowjs|from\s+tensorflowjs\b)", re.M)


def test_no_module_imports_tensorflowjs() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "bridge").rglob("*.py") if IMPORT.search(p.read_text())]
    assert offenders == []


def test_the_check_can_fail() -> None:
    assert IMPORT.search("import numpy\nfrom tensorflowjs.converters import x\n")


def test_not_a_dependency() -> None:
    text = (ROOT / "pyproject.toml").read_text() + (ROOT / "requirements" / "lock-py311-cpu.txt").read_text()
    assert "tensorflowjs" not in text.lower()
