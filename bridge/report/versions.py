"""Versions of every component a conversion used, recorded in the report."""

from __future__ import annotations

import platform
from importlib import metadata

from bridge import __version__

PACKAGES = ("torch", "tensorflow", "onnx", "onnxruntime", "onnx2tf", "onnxscript", "numpy")


def component_versions() -> dict[str, str]:
    """bridge, Python, the Python packages and the pinned TF.js packages, as name -> version."""
    versions = {"bridge": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    try:
        from bridge.runtime.node import node_status

        status = node_status()
        versions["node"] = status.node_version or "missing"
        versions.update({k: v or "missing" for k, v in status.packages.items()})
    except Exception:  # versions are informative; never fail a conversion over them
        versions["node"] = "unknown"
    return versions
