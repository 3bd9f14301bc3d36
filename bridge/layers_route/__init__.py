"""The layers route: a PyTorch network as a trainable TF.js layers model (``tf.loadLayersModel``), one training
step checked against PyTorch's, and the weights trained in TF.js back into the PyTorch module.

- `write_layers_route(module, example_inputs, out_dir, LayersRouteOptions(...))` -> `LayersRouteResult`: the
  layers model folder (model.json, weight shards, custom_layers.js when custom layers were needed); in memory
  only: `convert_to_layers`.
- `train_step_parity(module, model_dir, inputs, target, optimizer=..., learning_rate=...)` -> `TrainStepResult`.
- `import_weights(tfjs_model_dir, module)` -> state_dict; `save_state_dict(state, "trained.safetensors")`.
- `run_layers_model(model_dir, input_sets, ...)`: bridge.runtime.node's runner with the folder's custom layers
  registered; `custom_objects(layers_route_metadata)`: the tf_keras classes to reload a folder in Python.

Names resolve lazily, so importing the package does not import TensorFlow.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "LayersRouteOptions": "bridge.layers_route.convert",
    "LayersConversion": "bridge.layers_route.convert",
    "convert_to_layers": "bridge.layers_route.convert",
    "LayersRouteResult": "bridge.layers_route.writer",
    "write_layers_route": "bridge.layers_route.writer",
    "write_conversion": "bridge.layers_route.writer",
    "TrainStepResult": "bridge.layers_route.train_step",
    "WeightCheck": "bridge.layers_route.train_step",
    "train_step_parity": "bridge.layers_route.train_step",
    "import_weights": "bridge.layers_route.importer",
    "save_state_dict": "bridge.layers_route.importer",
}

__all__ = ["LayersConversion", "LayersRouteOptions", "LayersRouteResult", "TrainStepResult", "WeightCheck",
           "convert_to_layers", "custom_objects", "import_weights", "save_state_dict", "train_step_parity", "write_conversion", "write_layers_route"]


def __getattr__(name: str) -> Any:
    if name == "custom_objects":
        return import_module("bridge.layers_route.custom_layers").custom_objects_from_metadata
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bridge.layers_route' has no attribute {name!r}")
