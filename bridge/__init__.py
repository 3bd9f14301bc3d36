"""bridge: PyTorch to TensorFlow.js graph models, with parity proven at every stage.

The public API: `bridge.convert(model, inputs, out_dir, ...)` returns a `ConvertResult`. Heavy libraries (torch,
tensorflow) are imported only when a function that needs them is called.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from bridge.errors import BridgeError, UsageError  # noqa: E402

__all__ = ["__version__", "BridgeError", "UsageError", "convert"]


def convert(model: Any, inputs: Any, out_dir: Any, options: Any = None, **kwargs: Any) -> Any:
    """Convert a PyTorch model to a TF.js graph model; see `bridge.pipeline.convert`."""
    from bridge.pipeline import convert as _convert

    return _convert(model, inputs, out_dir, options, **kwargs)
