"""`bridge doctor`: which components are installed, at which versions, and what to do about missing ones."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata

PYTHON_PACKAGES = ("torch", "tensorflow", "onnx", "onnxruntime", "onnx2tf", "onnxscript", "numpy", "jinja2",
                   "safetensors", "rich", "playwright")
SETUP_HINT = "run scripts/setup.sh (or make setup) from the bridge checkout"


@dataclass(frozen=True)
class Component:
    """One checked component: its version when found, else the problem and how to fix it."""

    name: str
    version: str | None
    problem: str | None = None
    required: bool = True


def python_components() -> list[Component]:
    """Versions of Python and the Python packages bridge uses (read from metadata, nothing is imported)."""
    found = [Component("python", platform.python_version())]
    for name in PYTHON_PACKAGES:
        try:
            found.append(Component(name, metadata.version(name), required=name != "playwright"))
        except metadata.PackageNotFoundError:
            found.append(Component(name, None, f"not installed: {SETUP_HINT}", required=name != "playwright"))
    return found


def node_components() -> list[Component]:
    """Node and the pinned TF.js npm packages."""
    from bridge.runtime.node import node_status

    status = node_status()
    components = [Component("node", status.node_version, None if status.node_version else
                            "Node is not installed: apt-get install nodejs npm (Node 20)")]
    for package, version in status.packages.items():
        components.append(Component(package, version, None if version else f"missing: {SETUP_HINT}"))
    extra = [p for p in status.problems if not any(p == c.problem for c in components)]
    if extra and all(c.problem is None for c in components):
        components.append(Component("tfjs-runtime", None, "; ".join(extra)))
    return components


def chromium_component() -> Component:
    """Debian's Chromium driven by Playwright, used by the browser stages (optional: they are skipped without it)."""
    from bridge.runtime.browser import browser_status

    status = browser_status()
    problem = "; ".join(status.problems) + " (browser stages are skipped)" if status.problems else None
    return Component("chromium", status.chromium_version, problem, required=False)


def collect() -> list[Component]:
    """Every component bridge checks, in display order."""
    return python_components() + node_components() + [chromium_component()]


def render(components: list[Component]) -> str:
    """A table for the terminal, then a plain verdict line."""
    lines = []
    for c in components:
        mark = "ok " if c.problem is None else ("-- " if not c.required else "!! ")
        lines.append(f"{mark}{c.name:<32} {c.version or '':<16} {c.problem or ''}".rstrip())
    missing = [c.name for c in components if c.problem and c.required]
    lines.append("all required components are present" if not missing
                 else f"missing or broken: {', '.join(missing)}")
    return "\n".join(lines)
