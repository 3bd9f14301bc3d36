"""A Keras model (tf_keras or Keras 3) as what a TF.js layers model holds: the Keras 2 ``modelTopology`` and the
weights under the names tfjs-layers looks them up by.

tfjs-layers names a layer's variables ``<layer>/<weight>`` (``dense/kernel``, ``lstm/recurrent_kernel``) and,
loading, also accepts Keras 2's ``<layer>/<cell>/<weight>`` (``lstm/lstm_cell/kernel``) by dropping the cell part.
tf_keras names weights exactly so (plus ``:0``), which is why a Keras 3 model is first rebuilt in tf_keras.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.errors import ConversionError, UsageError
from bridge.tfjs.layers.compat import activation_name, check_topology, model_layers, topology_problems
from bridge.tfjs.layers.registry import ACTIVATION_ALIASES

_STAGE = "tfjs-layers-write"


@dataclass(frozen=True)
class KerasModelParts:
    """What the writer needs from a Keras model: the tf_keras model (the source itself, or its Keras 3 rebuild),
    the topology, the weights in order, and the source's Keras flavour and version."""

    tf_keras_model: Any
    topology: dict[str, Any]
    weights: list[tuple[str, np.ndarray]]
    flavour: str  # "tf_keras" or "keras3"
    keras_version: str


def keras_flavour(model: Any) -> str:
    """``tf_keras`` for a tf_keras (Keras 2) model, ``keras3`` for a Keras 3 model; UsageError otherwise."""
    import keras
    import tf_keras

    if isinstance(model, tf_keras.Model):
        return "tf_keras"
    if isinstance(model, keras.Model):
        return "keras3"
    raise UsageError(f"expected a Keras model (tf_keras or Keras 3), got {type(model).__name__}", stage=_STAGE,
                     hint="pass a keras.Model / tf_keras.Model, or a model file to bridge tfjs")


def model_parts(model: Any) -> KerasModelParts:
    """Topology and weights of `model`, checked for TF.js (`UnsupportedLayersError` names every layer TF.js
    cannot hold, before any rebuilding or writing)."""
    import keras
    import tf_keras

    flavour = keras_flavour(model)
    if flavour == "keras3":
        from bridge.tfjs.layers.keras3 import to_tf_keras

        _check_source_classes(model)
        clone = to_tf_keras(model)
        version = keras.__version__
    else:
        _require_layer_graph(model)
        clone = model
        version = tf_keras.__version__
    topology = tfjs_topology(json.loads(clone.to_json()))
    check_topology(topology)
    return KerasModelParts(tf_keras_model=clone, topology=topology, weights=named_weights(clone),
                           flavour=flavour, keras_version=str(version))


def _require_layer_graph(model: Any) -> None:
    """A subclassed tf_keras model has no config of layers; refuse it with the way out."""
    from bridge.errors import UnsupportedLayersError

    if type(model).__name__ not in ("Sequential", "Functional") and not getattr(model, "_is_graph_network", False):
        raise UnsupportedLayersError(
            "a subclassed Keras model has no layer graph a TF.js layers model can hold",
            layers=[(model.name, type(model).__name__, "subclassed model: its call() is Python code")],
            stage=_STAGE, hint="convert it to a graph model instead (--output-format tfjs_graph_model)")


def _check_source_classes(model: Any) -> None:
    """Name Lambda and unknown classes from the Keras 3 config itself (before the Keras 2 rebuild, which would
    fail on them less helpfully)."""
    from bridge.errors import UnsupportedLayersError
    from bridge.tfjs.layers.compat import GRAPH_MODEL_HINT
    from bridge.tfjs.layers.keras3 import model_class_name

    model_class_name(model)
    problems = list(topology_problems({"config": model.get_config()}, options=False))
    if problems:
        raise UnsupportedLayersError(f"{len(problems)} layer(s) cannot go into a TF.js layers model",
                                     layers=problems, stage=_STAGE, hint=GRAPH_MODEL_HINT)


# Config keys tf_keras writes for a class although the layer never uses them, and tfjs-layers refuses.
_UNUSED_KEYS: dict[str, tuple[str, ...]] = {
    "SeparableConv2D": ("kernel_initializer", "kernel_regularizer", "kernel_constraint"),
}


def tfjs_topology(topology: dict[str, Any]) -> dict[str, Any]:
    """`topology` (tf_keras ``to_json``) as tfjs-layers loads it: activation names spelled as tfjs registers
    them, and keys tf_keras writes but tfjs refuses (and the layer never reads) left out."""
    for layer in _all_layers(topology.get("config")):
        config = layer.get("config")
        if not isinstance(config, dict):
            continue
        for key in ("activation", "recurrent_activation"):
            value = activation_name(config.get(key))
            if isinstance(value, str):
                config[key] = ACTIVATION_ALIASES.get(value, value)
        for key in _UNUSED_KEYS.get(str(layer.get("class_name")), ()):
            config.pop(key, None)
    return topology


def _all_layers(config: Any) -> list[dict[str, Any]]:
    """Every layer entry, nested models' and wrapped layers' included."""
    found: list[dict[str, Any]] = []
    for layer in model_layers(config):
        found.append(layer)  # type: ignore[arg-type]
        inner = layer.get("config")
        if layer.get("class_name") in ("Sequential", "Functional", "Model"):
            found += _all_layers(inner)
        elif isinstance(inner, dict) and isinstance(inner.get("layer"), dict):
            found.append(inner["layer"])
    return found


def named_weights(model: Any) -> list[tuple[str, np.ndarray]]:
    """Every weight of the tf_keras `model` (trainable and not), by layer, named as tfjs-layers looks it up."""
    named: list[tuple[str, np.ndarray]] = []
    for layer in leaf_layers(model):
        for weight in layer.weights:
            named.append((weight_name(layer.name, weight.name), np.asarray(weight.numpy())))
    counts = Counter(name for name, _ in named)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise ConversionError(f"several weights would share the names {duplicates}", stage=_STAGE,
                              hint="give the layers (and nested models' layers) unique names")
    return named


def leaf_layers(model: Any) -> list[Any]:
    """Layers holding weights directly, nested models flattened, each layer once (shared layers once)."""
    leaves: list[Any] = []
    seen: set[int] = set()
    for layer in model.layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        leaves += leaf_layers(layer) if hasattr(layer, "layers") and hasattr(layer, "to_json") else [layer]
    return leaves


def weight_name(layer: str, weight: str) -> str:
    """``<layer>/...`` without the ``:0`` suffix; a weight not scoped under its layer gets the layer prefix."""
    base = weight.rsplit(":", 1)[0] if ":" in weight else weight
    return base if base.startswith(f"{layer}/") else f"{layer}/{base.rsplit('/', 1)[-1]}"
