"""Shared test setup: quiet TensorFlow, deterministic seeds, the slow marker."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `slow` cases unless BRIDGE_SLOW=1 or `-m slow` was asked for."""
    if os.environ.get("BRIDGE_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow case: run with BRIDGE_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
