"""Check a Keras-2-style model topology against what tfjs-layers 4.22 can load and run, before anything is written.

Every offending layer is collected, so one `UnsupportedLayersError` names them all: layers holding Python code
(Lambda), classes tfjs-layers does not register (custom or newer Keras classes), and options tfjs-layers refuses
at load time or silently computes differently (GRU ``reset_after``, ReLU slopes, grouped convolutions, ...).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from bridge.errors import UnsupportedLayersError
from bridge.tfjs.layers.registry import (
    ACTIVATION_ALIASES,
    ACTIVATIONS,
    BRIDGE_CUSTOM_KEY,
    CODE_LAYERS,
    LAYER_CLASSES,
)

_STAGE = "tfjs-layers-write"
_MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})
_WRAPPERS = frozenset({"Bidirectional", "TimeDistributed"})
_INPUT_DTYPES = frozenset({"float32", "int32", "bool"})
GRAPH_MODEL_HINT = "convert the model to a graph model instead (--output-format tfjs_graph_model): it holds the " \
                   "computation, not the Python classes"

Problem = tuple[str, str, str]  # (layer name, class name, reason)


def check_topology(topology: Mapping[str, Any]) -> None:
    """Raise `UnsupportedLayersError` naming every layer of `topology` (``{"class_name", "config"}``) that a TF.js
    layers model cannot hold."""
    problems = list(topology_problems(topology))
    if problems:
        raise UnsupportedLayersError(
            f"{len(problems)} layer(s) cannot go into a TF.js layers model", layers=problems, stage=_STAGE,
            hint=GRAPH_MODEL_HINT)


def topology_problems(topology: Mapping[str, Any], *, options: bool = True) -> Iterator[Problem]:
    """Every (layer name, class name, reason) of `topology` that tfjs-layers cannot load or would compute wrongly;
    with `options` False only the classes are checked (Python code, classes tfjs-layers lacks)."""
    for layer in model_layers(topology.get("config")):
        yield from _layer_problems(layer, options)


def model_layers(config: Any) -> list[Mapping[str, Any]]:
    """The layer entries of a Sequential (a list, or ``{"layers": [...]}``) or Functional config."""
    if isinstance(config, list):
        return list(config)
    if isinstance(config, Mapping):
        return list(config.get("layers") or [])
    return []


def _layer_problems(layer: Mapping[str, Any], options: bool) -> Iterator[Problem]:
    """Problems of one layer entry (nested models and wrapped layers included)."""
    class_name = str(layer.get("class_name"))
    config = layer.get("config") or {}
    name = str(layer.get("name") or (config.get("name") if isinstance(config, Mapping) else None) or "?")
    if class_name in _MODEL_CLASSES:
        for inner in model_layers(config):
            yield from _layer_problems(inner, options)
        return
    if class_name in CODE_LAYERS:
        yield name, class_name, "holds Python code (its function cannot be loaded in TF.js)"
        return
    if class_name not in LAYER_CLASSES and is_bridge_custom_layer(class_name, config):
        return
    if class_name not in LAYER_CLASSES:
        registered = layer.get("registered_name")
        custom = isinstance(registered, str) and ">" in registered
        yield name, class_name, ("a layer class defined in Python code" if custom
                                 else "tfjs-layers 4.22 has no layer class of this name")
        return
    for reason in (_option_problems(class_name, config) if options else ()):
        yield name, class_name, reason
    if class_name in _WRAPPERS and isinstance(config.get("layer"), Mapping):
        inner = dict(config["layer"])
        inner.setdefault("name", f"{name}/{inner.get('config', {}).get('name', 'layer')}")
        yield from _layer_problems(inner, options)


def is_bridge_custom_layer(class_name: str, config: Any) -> bool:
    """True for a custom class bridge generated (``Bridge...`` with ``bridge_custom: 1`` in its config): its
    JavaScript class ships beside model.json (custom_layers.js), registered before tf.loadLayersModel."""
    return class_name.startswith("Bridge") and isinstance(config, Mapping) and config.get(BRIDGE_CUSTOM_KEY) == 1


def _option_problems(class_name: str, config: Mapping[str, Any]) -> Iterator[str]:
    """Options of a registered class that tfjs-layers refuses or computes differently."""
    for key in ("activation", "recurrent_activation"):
        if key in config:
            reason = _activation_problem(config[key])
            if reason:
                yield f"{key}: {reason}"
    if config.get("activity_regularizer") is not None:
        yield "an activity_regularizer (tfjs-layers refuses to call such layers)"
    if class_name in ("GRU", "GRUCell") and config.get("reset_after"):
        yield "reset_after=True (tfjs-layers' GRUCell supports reset_after=False only)"
    if class_name == "ELU" and float(config.get("alpha", 1.0)) != 1.0:
        yield f"alpha={config.get('alpha')} (tfjs-layers' ELU layer supports alpha=1 only)"
    if class_name == "ReLU" and (config.get("negative_slope") or config.get("threshold")):
        yield "negative_slope / threshold (tfjs-layers' ReLU has max_value only)"
    if class_name.startswith("Conv") and int(config.get("groups") or 1) != 1:
        yield f"groups={config.get('groups')} (tfjs-layers has no grouped convolution)"
    if class_name == "Conv1D" and config.get("padding") == "causal":
        yield "padding='causal' (tfjs-layers' Conv1D does not implement it)"
    if class_name == "Conv2DTranspose" and config.get("output_padding") is not None:
        yield "output_padding (tfjs-layers' Conv2DTranspose has none)"
    if class_name == "BatchNormalization":
        yield from _batch_norm_problems(config)
    if class_name == "InputLayer" and str(config.get("dtype") or "float32") not in _INPUT_DTYPES:
        yield f"input dtype {config.get('dtype')} (TF.js tensors are float32, int32 or bool)"
    if class_name in ("RNN", "Bidirectional") and isinstance(config.get("cell"), Mapping):
        cell = str(config["cell"].get("class_name"))
        if cell not in LAYER_CLASSES:
            yield f"RNN cell class {cell} (not in tfjs-layers)"


def _batch_norm_problems(config: Mapping[str, Any]) -> Iterator[str]:
    """BatchNormalization options beyond tfjs-layers' plain batch norm over one axis."""
    if config.get("renorm"):
        yield "renorm=True (tfjs-layers has no batch renormalization)"
    if config.get("virtual_batch_size") is not None:
        yield "virtual_batch_size (tfjs-layers has no ghost batch norm)"
    axis = config.get("axis")
    if isinstance(axis, list) and len(axis) != 1:
        yield f"axis={axis} (tfjs-layers normalizes over one axis)"


def _activation_problem(value: Any) -> str | None:
    """Why an activation identifier cannot be loaded by tfjs-layers, or None."""
    value = activation_name(value)
    if value is None:
        return None
    if not isinstance(value, str):
        return f"{value!r} is not an activation name"
    if ACTIVATION_ALIASES.get(value, value) in ACTIVATIONS:
        return None
    return f"{value!r} (tfjs-layers has no activation of this name)"


def activation_name(value: Any) -> Any:
    """An activation identifier as a name where it is one: a serialized plain function (``{"class_name":
    "function", "config": "gelu"}``, as tf_keras writes activations it reloaded from an .h5 file) becomes its
    name; strings and anything else are returned unchanged."""
    if isinstance(value, Mapping) and value.get("class_name") == "function" and isinstance(value.get("config"), str):
        return value["config"]
    return value
