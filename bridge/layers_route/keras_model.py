"""A `LayersPlan` as a tf_keras functional model with PyTorch's weights in it (the model the layers writer saves
and the Python-side check runs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bridge.errors import ConversionError
from bridge.layers_route.custom_layers import custom_config, keras_classes
from bridge.layers_route.ir import STAGE, LayerSpec, LayersPlan
from bridge.layers_route.weight_links import short_name, to_tfjs


def build_keras_model(plan: LayersPlan, state: Mapping[str, np.ndarray], name: str = "model") -> Any:
    """The tf_keras model of `plan`, its weights set from the PyTorch `state` (state_dict as numpy) through
    the plan's links."""
    import tf_keras

    classes = keras_classes(plan)
    tensors: dict[int, Any] = {}
    made: dict[str, Any] = {}
    for spec in plan.layers:
        if spec.class_name == "InputLayer":
            shape = plan.tensors[spec.outputs[0]].shape
            tensors[spec.outputs[0]] = tf_keras.Input(shape=shape[1:], dtype=spec.config["dtype"], name=spec.name)
            continue
        layer = made[spec.shared_with] if spec.shared_with else _make_layer(spec, plan, classes)
        made[spec.name] = layer
        ins = [tensors[tid] for tid in spec.inputs]
        result = layer(ins[0] if len(ins) == 1 else ins)
        outs = list(result) if isinstance(result, (list, tuple)) else [result]
        if len(outs) != len(spec.outputs):
            raise ConversionError(f"layer {spec.name} ({spec.class_name}) gave {len(outs)} outputs, the plan "
                                  f"expects {len(spec.outputs)}", stage=STAGE)
        for tid, tensor in zip(spec.outputs, outs):
            _check_shape(spec, plan.tensors[tid].shape, tuple(tensor.shape))
            tensors[tid] = tensor
    model = tf_keras.Model(inputs=[tensors[tid] for _, tid in plan.inputs],
                           outputs=[tensors[tid] for _, tid in plan.outputs], name=name)
    assign_weights(model, plan, state)
    return model


def _make_layer(spec: LayerSpec, plan: LayersPlan, classes: Mapping[str, type]) -> Any:
    import tf_keras

    if spec.program is not None:
        return classes[spec.class_name](**custom_config(spec, plan), name=spec.name, trainable=spec.trainable)
    if spec.template is not None:
        return classes[spec.class_name](**spec.config, name=spec.name, trainable=spec.trainable)
    return getattr(tf_keras.layers, spec.class_name)(**spec.config, name=spec.name, trainable=spec.trainable)


def _check_shape(spec: LayerSpec, planned: tuple[int | None, ...], built: tuple[int | None, ...]) -> None:
    """The Keras layer's output shape must be the planned one (a converter bug otherwise, caught before any
    weight is written)."""
    if len(planned) != len(built) or any(p is not None and b is not None and p != b
                                         for p, b in zip(planned, built)):
        raise ConversionError(f"layer {spec.name} ({spec.class_name}, from {spec.path}) builds shape "
                              f"{list(built)}, the plan expects {list(planned)}", stage=STAGE,
                              hint="this is a bridge bug: please report it with the module")


def keras_variables(model: Any) -> dict[str, Any]:
    """Every weight variable of the tf_keras `model`, by the TF.js short name (``layer/leaf``)."""
    from bridge.tfjs.layers.topology import leaf_layers, weight_name

    found = {}
    for layer in leaf_layers(model):
        for variable in layer.weights:
            found[short_name(weight_name(layer.name, variable.name))] = variable
    return found


def assign_weights(model: Any, plan: LayersPlan, state: Mapping[str, np.ndarray]) -> None:
    """Set every Keras weight from PyTorch through the links; refuse a weight no link fills."""
    variables = keras_variables(model)
    filled: set[str] = set()
    for link in plan.links:
        values = to_tfjs(link, [state[key] for key in link.torch_keys])
        for name, value in zip(link.tfjs, values):
            variable = variables.get(short_name(name))
            if variable is None:
                raise ConversionError(f"link {link.torch_keys} -> {name}: no such Keras weight", stage=STAGE,
                                      hint="this is a bridge bug: please report it with the module")
            if tuple(variable.shape) != value.shape:
                raise ConversionError(f"{link.torch_keys} -> {name}: shape {list(value.shape)} for a weight of "
                                      f"shape {list(variable.shape)}", stage=STAGE)
            variable.assign(value)
            filled.add(short_name(name))
    unfilled = sorted(set(variables) - filled)
    if unfilled:
        raise ConversionError(f"Keras weights no PyTorch entry fills: {unfilled}", stage=STAGE,
                              hint="this is a bridge bug: please report it with the module")
