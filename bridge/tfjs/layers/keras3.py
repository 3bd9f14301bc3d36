"""A Keras 3 model as the Keras 2 (tf_keras) model TF.js reads: config translated, then rebuilt in tf_keras.

tfjs-layers 4.22 reads Keras 2's JSON layout only. Keras 3 writes another one: ``inbound_nodes`` as
``{"args": [keras tensors], "kwargs": {}}`` instead of ``[[layer, node, tensor, kwargs], ...]``, dtype policies as
objects, ``batch_shape`` for ``batch_input_shape``, ``module`` / ``registered_name`` on every object, and a few
options Keras 2 does not have. `keras2_config` translates the layout; options without a Keras 2 counterpart are
dropped when they hold their neutral value and refused otherwise (they would change the numbers). `to_tf_keras`
then builds the translated config in tf_keras and copies the weights layer by layer: tf_keras checks the config
(any key it does not know fails there, naming the layer) and its weight names are the ones TF.js expects
(a Keras 3 DepthwiseConv2D calls its kernel ``kernel``, TF.js wants ``depthwise_kernel``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import ConversionError, UnsupportedLayersError

_STAGE = "tfjs-layers-write"
_TENSOR = "__keras_tensor__"
# Keras 3 options Keras 2 lacks, with the value that means "off"; any other value is refused.
_NEUTRAL: dict[str, Any] = {
    "quantization_config": None, "lora_rank": None, "lora_alpha": None, "rms_scaling": False,
    "renorm": False, "renorm_clipping": None, "optional": False,
    "input_axes": None, "output_axes": None,
}
_ALWAYS_DROPPED = frozenset({"seed", "renorm_momentum", "build_config", "compile_config"})
# Options that only change masked time steps: harmless in a model nothing masks (Keras 3 sets
# zero_output_for_mask on every RNN inside a Bidirectional that returns sequences).
_MASK_ONLY = frozenset({"zero_output_for_mask"})
_RENAMED: dict[str, dict[str, str]] = {"LeakyReLU": {"negative_slope": "alpha"}, "InputLayer": {"batch_shape":
                                                                                                  "batch_input_shape"}}
# Keras 3 activations whose Keras 2 / TF.js namesake computes something else.
_CHANGED_ACTIVATIONS: dict[str, str] = {
    "hard_sigmoid": "Keras 3's hard_sigmoid is relu6(x + 3) / 6; TF.js computes Keras 2's clip(0.2 x + 0.5)",
}


@dataclass
class _Context:
    """One translation: whether anything in the model masks time steps, and the problems found so far."""

    masked: bool
    problems: list[tuple[str, str, str]] = field(default_factory=list)

    def refuse(self, name: str, class_name: str, reason: str) -> None:
        """Record that layer `name` (`class_name`) cannot be translated, and why."""
        self.problems.append((name, class_name, reason))


def keras2_config(model_config: Mapping[str, Any], class_name: str) -> dict[str, Any]:
    """The Keras-2-style ``{"class_name", "config"}`` of a Keras 3 model config (`model.get_config()`).

    Raises `UnsupportedLayersError` naming every layer whose options have no Keras 2 counterpart."""
    text = json.dumps(model_config)
    ctx = _Context(masked='"Masking"' in text or '"mask_zero": true' in text)
    config = _model_config(dict(model_config), ctx)
    if ctx.problems:
        raise UnsupportedLayersError(
            f"{len(ctx.problems)} layer(s) of the Keras 3 model use options a TF.js layers model cannot express",
            layers=ctx.problems, stage=_STAGE,
            hint="change those options in the model, or convert it to a graph model (--output-format "
                 "tfjs_graph_model)")
    return {"class_name": class_name, "config": config}


def _model_config(config: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    """Translate a Sequential or Functional config (layers, connections, input and output layers)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "layers":
            out[key] = [_layer(layer, ctx) for layer in value]
        elif key in ("input_layers", "output_layers"):
            out[key] = endpoint_list(value)
        elif key == "dtype":
            out[key] = _plain(value, "", "", ctx)
        elif key not in _ALWAYS_DROPPED:
            out[key] = value
    return out


def endpoint_list(value: Any) -> list[Any]:
    """``[[layer, node, tensor], ...]``: Keras 3 writes a single endpoint unnested."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [list(value)]
    return [list(v) for v in value]


def _layer(layer: Mapping[str, Any], ctx: _Context) -> dict[str, Any]:
    """One layer entry: class name, translated config, name and inbound nodes."""
    class_name = str(layer.get("class_name"))
    name = str(layer.get("name") or layer.get("config", {}).get("name", "?"))
    out: dict[str, Any] = {"class_name": class_name}
    if class_name in ("Sequential", "Functional", "Model"):
        out["config"] = _model_config(dict(layer["config"]), ctx)
    else:
        out["config"] = _layer_config(class_name, name, dict(layer.get("config") or {}), ctx)
    if "name" in layer:
        out["name"] = layer["name"]
    if "inbound_nodes" in layer:
        out["inbound_nodes"] = [_node(node, name, class_name, ctx) for node in layer["inbound_nodes"]]
    return out


def _layer_config(class_name: str, name: str, config: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    """A layer's config in Keras 2 terms; options without a Keras 2 counterpart are checked and dropped."""
    if class_name == "Bidirectional":
        config = _bidirectional(name, config, ctx)
    renames = _RENAMED.get(class_name, {})
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in _ALWAYS_DROPPED:
            continue
        if key in _MASK_ONLY:
            if value and ctx.masked:
                ctx.refuse(name, class_name, f"Keras 3 option {key}={value!r} in a masked model "
                           "(TF.js keeps the previous output at masked steps)")
            continue
        if key in _NEUTRAL:
            if value != _NEUTRAL[key]:
                ctx.refuse(name, class_name, f"Keras 3 option {key}={value!r} has no Keras 2 / TF.js counterpart")
            continue
        if key in ("activation", "recurrent_activation") and value in _CHANGED_ACTIVATIONS:
            ctx.refuse(name, class_name, f"{key}={value!r}: {_CHANGED_ACTIVATIONS[value]}")
        out[renames.get(key, key)] = _plain(value, name, class_name, ctx)
    return out


def _bidirectional(name: str, config: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    """Keras 3 serializes a Bidirectional's generated backward copy and names the wrapped layer ``forward_<x>``;
    Keras 2 (and tfjs-layers, which derives both directions from ``layer``) keeps only the original layer."""
    config = dict(config)
    forward, backward = config.get("layer"), config.pop("backward_layer", None)
    if not isinstance(forward, Mapping):
        return config
    inner = dict(forward.get("config") or {})
    if backward is not None and not _mirrors(inner, dict(backward.get("config") or {})):
        ctx.refuse(name, "Bidirectional", "a backward layer that is not the forward layer reversed "
                   "(tfjs-layers builds it from the forward layer)")
    if str(inner.get("name", "")).startswith("forward_"):
        inner["name"] = inner["name"][len("forward_"):]
    config["layer"] = {**forward, "config": inner}
    return config


def _mirrors(forward: Mapping[str, Any], backward: Mapping[str, Any]) -> bool:
    """True when `backward` is `forward` with go_backwards flipped (what Bidirectional generates)."""
    def same(config: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in config.items() if k not in ("name", "go_backwards")}

    return same(forward) == same(backward) and bool(forward.get("go_backwards")) != bool(backward.get("go_backwards"))


def _plain(value: Any, name: str, class_name: str, ctx: _Context) -> Any:
    """Nested Keras 3 objects in Keras 2 form: dtype policies become their name, serialized objects lose
    ``module`` / ``registered_name``, nested layers (Bidirectional, TimeDistributed) are translated."""
    if isinstance(value, list):
        return [_plain(v, name, class_name, ctx) for v in value]
    if not isinstance(value, dict):
        return value
    if "class_name" in value and "config" in value:
        inner_class = str(value["class_name"])
        if inner_class.endswith("DTypePolicy"):
            return _dtype_name(value, name, class_name, ctx)
        if inner_class == _TENSOR:
            ctx.refuse(name, class_name, "a tensor inside the layer's config")
            return None
        inner = value["config"]
        if isinstance(inner, dict) and "name" in inner and _is_layer_class(inner_class):
            inner = _layer_config(inner_class, str(inner["name"]), dict(inner), ctx)
        elif isinstance(inner, dict):
            inner = _object_config(inner_class, inner, name, class_name, ctx)
        return {"class_name": inner_class, "config": inner}
    return {k: _plain(v, name, class_name, ctx) for k, v in value.items()}


def _object_config(object_class: str, config: Mapping[str, Any], name: str, class_name: str,
                   ctx: _Context) -> dict[str, Any]:
    """The config of a nested object (initializer, regularizer, constraint) without Keras-3-only options."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in _NEUTRAL:
            if value != _NEUTRAL[key]:
                ctx.refuse(name, class_name, f"{object_class} option {key}={value!r} has no Keras 2 / TF.js "
                           "counterpart")
            continue
        out[key] = _plain(value, name, class_name, ctx)
    return out


def _is_layer_class(class_name: str) -> bool:
    """True when `class_name` names a Keras layer (wrapped layers carry whole layer configs)."""
    import keras

    return isinstance(getattr(keras.layers, class_name, None), type)


def _dtype_name(policy: Mapping[str, Any], name: str, class_name: str,
                ctx: _Context) -> str:
    """A Keras 3 dtype policy as the dtype string Keras 2 writes; mixed precision is refused (TF.js computes
    float32)."""
    dtype = str(policy.get("config", {}).get("name", "float32"))
    if dtype.startswith("mixed_"):
        ctx.refuse(name, class_name, f"dtype policy {dtype!r}: TF.js layers compute in float32")
    return dtype


def _node(node: Any, name: str, class_name: str, ctx: _Context) -> list[list[Any]]:
    """One Keras 3 call ``{"args", "kwargs"}`` as Keras 2 node data ``[[layer, node, tensor, kwargs], ...]``."""
    if isinstance(node, list):  # already Keras 2 style
        return node
    tensors: list[list[Any]] = []
    for arg in node.get("args", []):
        if not _collect_tensors(arg, tensors):
            ctx.refuse(name, class_name, f"called with a non-tensor argument {json.dumps(arg)[:80]}")
    kwargs: dict[str, Any] = {}
    for key, value in (node.get("kwargs") or {}).items():
        if _holds_tensor(value):
            ctx.refuse(name, class_name, f"called with a tensor keyword argument {key!r}")
        elif value is not None:
            kwargs[key] = value
    return [[*history, kwargs] for history in tensors]


def _collect_tensors(arg: Any, out: list[list[Any]]) -> bool:
    """Append the keras_history of every Keras tensor in `arg` (a tensor or nested list of tensors); False when
    `arg` holds anything else."""
    if isinstance(arg, list):
        return all(_collect_tensors(a, out) for a in arg)
    if isinstance(arg, dict) and arg.get("class_name") == _TENSOR:
        out.append(list(arg["config"]["keras_history"]))
        return True
    return False


def _holds_tensor(value: Any) -> bool:
    """True when a kwargs value holds a Keras tensor."""
    if isinstance(value, list):
        return any(_holds_tensor(v) for v in value)
    return isinstance(value, dict) and (value.get("class_name") == _TENSOR
                                        or any(_holds_tensor(v) for v in value.values()))


def to_tf_keras(model: Any) -> Any:
    """The Keras 3 `model` rebuilt as a tf_keras model with the same weights (see module doc)."""
    import tf_keras

    topology = keras2_config(model.get_config(), model_class_name(model))
    try:
        clone = tf_keras.models.model_from_json(json.dumps(topology))
    except (TypeError, ValueError, KeyError) as exc:
        raise ConversionError(f"the Keras 3 model's config does not translate to Keras 2: {exc}", stage=_STAGE,
                              hint="convert it to a graph model instead (--output-format tfjs_graph_model)"
                              ) from exc
    _copy_weights(model, clone)
    return clone


def model_class_name(model: Any) -> str:
    """``Sequential`` or ``Functional``; a subclassed Keras 3 model has no config TF.js can read."""
    import keras

    if isinstance(model, keras.Sequential):
        return "Sequential"
    if isinstance(model, keras.Model) and type(model).__name__ == "Functional":
        return "Functional"
    raise UnsupportedLayersError(
        "a subclassed Keras model has no layer graph a TF.js layers model can hold",
        layers=[(model.name, type(model).__name__, "subclassed model: its call() is Python code")], stage=_STAGE,
        hint="convert it to a graph model instead (--output-format tfjs_graph_model)")


def _copy_weights(source: Any, target: Any) -> None:
    """Copy weights layer by layer (by name, recursing into nested models); shapes must agree."""
    for layer in source.layers:
        twin = target.get_layer(layer.name)
        if hasattr(layer, "layers") and hasattr(twin, "layers"):
            _copy_weights(layer, twin)
            continue
        values = layer.get_weights()
        if not values:
            continue
        try:
            twin.set_weights(values)
        except ValueError as exc:
            raise ConversionError(f"layer {layer.name!r} ({type(layer).__name__}): its Keras 3 weights do not fit "
                                  f"the Keras 2 layer: {exc}", stage=_STAGE) from exc
