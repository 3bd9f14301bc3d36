"""Native op cases by family: each module here (other than base) exports CASES; EXTRA_CASES joins them in name
order so test ids stay stable."""

from __future__ import annotations

import importlib
import pkgutil

from tests.native_op_cases.base import OpCase


def _collect() -> list[OpCase]:
    cases: list[OpCase] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name != "base":
            cases.extend(importlib.import_module(f"{__name__}.{info.name}").CASES)
    return cases


EXTRA_CASES = _collect()
