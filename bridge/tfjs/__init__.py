"""bridge's TF.js writers: graph models (`convert`), layers models (`layers`), the input-format readers
(`sources`). `save_keras_model` is the Keras user's entry point; it is resolved lazily so importing
`bridge.tfjs` stays free of TensorFlow."""

from __future__ import annotations

from typing import Any

__all__ = ["save_keras_model"]


def __getattr__(name: str) -> Any:
    if name == "save_keras_model":
        from bridge.tfjs.layers.writer import save_keras_model

        return save_keras_model
    raise AttributeError(f"module 'bridge.tfjs' has no attribute {name!r}")
