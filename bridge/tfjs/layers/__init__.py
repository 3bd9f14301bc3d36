"""TF.js layers models (``tf.loadLayersModel``) written by bridge's own code from tf_keras and Keras 3 models.

The writer is resolved lazily, so the TensorFlow-free modules here (`registry`) import cheaply."""

from __future__ import annotations

from typing import Any

__all__ = ["LayersModelOptions", "save_keras_model", "write_layers_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from bridge.tfjs.layers import writer

        return getattr(writer, name)
    raise AttributeError(f"module 'bridge.tfjs.layers' has no attribute {name!r}")
