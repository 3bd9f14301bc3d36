"""Keras models as `TfSource`s: ``.h5`` files (Keras 2 / tf_keras), ``.keras`` files (Keras 3), Keras
SavedModels (tf_keras), and models already in memory.

Files are checked before they are loaded: an ``.h5`` without a model config (weights only) is refused, and so is a
file whose config names layers that only Python code defines (Lambda, custom classes), since loading would run
or need that code; `trust_code` lets Lambda layers load (Keras unmarshals their bytecode) for files you made.
The graph route exports the model's serving function to a temporary SavedModel that holds only its variables
(fast: the layers' call functions are not traced one by one) and optimizes that.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import ModelLoadError, SourceFormatError, UnsupportedLayersError, UsageError
from bridge.tfjs.sources.base import STAGE, GraphFactory, PortSpec, TfSource, dtype_name, shape_tuple

_CUSTOM_HINT = "load the model in Python with its custom classes registered and call " \
               "bridge.tfjs.save_keras_model (or export a SavedModel with model.export and convert that)"


def load_h5(path: Path, *, trust_code: bool = False) -> TfSource:
    """A Keras 2 (tf_keras) ``.h5`` model file as a source."""
    import tf_keras

    path = Path(path)
    config = _h5_model_config(path)
    _check_file_classes(path, config, trust_code, _tf_keras_class)
    model = load_keras_file(lambda: tf_keras.models.load_model(str(path), compile=True), path)
    return keras_model_source(model, path=path, input_format="keras")


def load_keras_v3(path: Path, *, trust_code: bool = False) -> TfSource:
    """A Keras 3 ``.keras`` file as a source (loaded in safe mode unless `trust_code`)."""
    import keras

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise SourceFormatError(f"{path} is not a Keras 3 .keras file: {exc}", stage=STAGE,
                                hint="save it with model.save('model.keras') in Keras 3") from exc
    _check_file_classes(path, config, trust_code, _keras3_class)
    model = load_keras_file(lambda: keras.saving.load_model(str(path), compile=True, safe_mode=not trust_code), path)
    return keras_model_source(model, path=path, input_format="keras_keras")


def load_keras_saved_model(path: Path) -> TfSource:
    """A SavedModel written by tf_keras (``keras_metadata.pb`` beside ``saved_model.pb``) as a source; its own
    ``serving_default`` signature is the graph route when it has one."""
    import tf_keras

    path = Path(path)
    model = load_keras_file(lambda: tf_keras.models.load_model(str(path), compile=True), path)
    if not hasattr(model, "to_json") or not getattr(model, "_is_graph_network", True):
        raise SourceFormatError(f"{path} loads as a revived object without a Keras config", stage=STAGE,
                                hint="convert it as a SavedModel (--input_format tf_saved_model)")
    return keras_model_source(model, path=path, input_format="keras_saved_model")


def load_keras_file(loader: Any, path: Path) -> Any:
    """Run a Keras loader with its failures as `ModelLoadError`."""
    from bridge.tfjs.freeze import quiet_tf

    try:
        with quiet_tf():
            return loader()
    except Exception as exc:  # Keras raises many unrelated types here; all mean "cannot load"
        raise ModelLoadError(f"cannot load the Keras model {path}: {str(exc)[:400]}", stage=STAGE,
                             hint="check the file is complete and was written by this Keras") from exc


def _h5_model_config(path: Path) -> dict[str, Any]:
    """The ``model_config`` attribute of a Keras HDF5 file; weights-only files are refused."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            weights_only = raw is None and ("layer_names" in handle.attrs or "model_weights" not in handle)
    except OSError as exc:
        raise SourceFormatError(f"{path} is not an HDF5 file: {exc}", stage=STAGE) from exc
    if raw is None:
        what = "weights only (model.save_weights)" if weights_only else "no model config"
        raise SourceFormatError(f"{path} holds {what}: there is no model architecture to convert", stage=STAGE,
                                hint="save the whole model (model.save('model.h5')), or build the model in Python, "
                                     "load these weights and call bridge.tfjs.save_keras_model")
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SourceFormatError(f"{path}: its model_config is not JSON: {exc}", stage=STAGE) from exc


def _tf_keras_class(class_name: str) -> bool:
    import tf_keras

    return isinstance(getattr(tf_keras.layers, class_name, None), type) or class_name in (
        "Functional", "Sequential", "Model")


def _keras3_class(class_name: str) -> bool:
    import keras

    return isinstance(getattr(keras.layers, class_name, None), type) or class_name in (
        "Functional", "Sequential", "Model")


def _check_file_classes(path: Path, config: Mapping[str, Any], trust_code: bool, known: Any) -> None:
    """Refuse a model file whose layers only Python code defines (custom classes), or hold code (Lambda) unless
    `trust_code`: one `UnsupportedLayersError` names them all."""
    problems = []
    for name, class_name, registered in _config_layers(config):
        if class_name == "Lambda" and not trust_code:
            problems.append((name, class_name, "holds Python code, which loading the file would run"))
        elif class_name != "Lambda" and (not known(class_name) or (isinstance(registered, str) and ">" in registered)):
            problems.append((name, class_name, "a layer class defined in Python code, not in Keras"))
    if problems:
        lambdas = any(p[1] == "Lambda" for p in problems)
        raise UnsupportedLayersError(
            f"{path} holds {len(problems)} layer(s) defined by Python code", layers=problems, stage=STAGE,
            hint=("pass trust_code=True only for a file you made (it runs the Lambda's code); " if lambdas else "")
            + _CUSTOM_HINT)


def _config_layers(config: Any) -> list[tuple[str, str, Any]]:
    """(name, class name, registered name) of every layer in a model config, nested models and wrapped layers
    included."""
    found: list[tuple[str, str, Any]] = []
    if not isinstance(config, Mapping):
        return found
    inner = config.get("config")
    layers = inner if isinstance(inner, list) else (inner or {}).get("layers") if isinstance(inner, Mapping) else None
    for layer in layers or []:
        if not isinstance(layer, Mapping):
            continue
        layer_config = layer.get("config") or {}
        name = str(layer.get("name") or (layer_config.get("name") if isinstance(layer_config, Mapping) else "?"))
        found.append((name, str(layer.get("class_name")), layer.get("registered_name")))
        found += _config_layers(layer)
        wrapped = layer_config.get("layer") if isinstance(layer_config, Mapping) else None
        if isinstance(wrapped, Mapping):
            wrapped_config = wrapped.get("config") or {}
            found.append((f"{name}/{wrapped_config.get('name', 'layer')}", str(wrapped.get("class_name")),
                          wrapped.get("registered_name")))
    return found


# ---------------------------------------------------------------------------------------------------- in memory

def keras_model_source(model: Any, *, path: Path | None = None, input_format: str = "keras_model") -> TfSource:
    """A Keras model (tf_keras or Keras 3, Sequential or functional) as a source: its call is the reference, the
    layers writer takes it as is, and the graph route exports its serving function."""
    import keras
    import tf_keras

    from bridge.tfjs.layers.topology import keras_flavour
    from bridge.tfjs.sources.saved_model import saved_model_graph

    flavour = keras_flavour(model)
    inputs, outputs = keras_io(model, flavour)
    version = tf_keras.__version__ if flavour == "tf_keras" else keras.__version__
    if input_format == "keras_saved_model" and path is not None and _has_serving_signature(path):
        factory = saved_model_graph(path, "serving_default")
    else:
        factory = _exported_graph(model, inputs, outputs)
    return TfSource(path=path, input_format=input_format, inputs=inputs, outputs=outputs,
                    reference=keras_reference(model, inputs, outputs), generated_by=f"keras v{version}",
                    graph_factory=factory, keras_model=model)


def _has_serving_signature(path: Path) -> bool:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
    except (OSError, ValueError):
        return False
    return any("serve" in meta.meta_info_def.tags and "serving_default" in meta.signature_def
               for meta in proto.meta_graphs)


def keras_io(model: Any, flavour: str) -> tuple[tuple[PortSpec, ...], tuple[PortSpec, ...]]:
    """Inputs and outputs named as Keras names them (input layer names, output layer names), in call order."""
    if getattr(model, "inputs", None) is None or getattr(model, "outputs", None) is None:
        raise UsageError(f"the Keras model {getattr(model, 'name', '')!r} has no known inputs (a subclassed model "
                         "that was never built functionally)", stage=STAGE,
                         hint="save it with tf.saved_model.save(model, dir) (or model.export(dir)) and convert "
                              "that SavedModel")
    if flavour == "tf_keras":
        in_names, out_names = list(model.input_names), list(model.output_names)
    else:
        in_names, out_names = _keras3_io_names(model)
    inputs = tuple(PortSpec(name=n, dtype=dtype_name(t.dtype), shape=shape_tuple(t.shape))
                   for n, t in zip(in_names, model.inputs))
    outputs = tuple(PortSpec(name=n, dtype=dtype_name(t.dtype), shape=shape_tuple(t.shape))
                    for n, t in zip(out_names, model.outputs))
    return inputs, outputs


def _keras3_io_names(model: Any) -> tuple[list[str], list[str]]:
    """Keras 3 input / output layer names from the model config (its tensors are named ``keras_tensor_N``)."""
    from bridge.tfjs.layers.keras3 import endpoint_list

    try:
        config = model.get_config()
    except Exception:  # noqa: BLE001 - subclassed models may not implement get_config
        config = {}
    if isinstance(config, Mapping) and "input_layers" in config:
        ins = [e[0] for e in endpoint_list(config["input_layers"])]
        outs = [e[0] for e in endpoint_list(config["output_layers"])]
    elif isinstance(config, Mapping) and config.get("layers"):
        layers = config["layers"]
        ins = [layers[0]["config"]["name"]]
        outs = [layers[-1]["config"]["name"]]
    else:
        ins = [f"input_{i}" for i in range(len(model.inputs))]
        outs = [f"output_{i}" for i in range(len(model.outputs))]
    return ins, _unique(outs)


def _unique(names: Sequence[str]) -> list[str]:
    """Names made unique (``name``, ``name_1``, ...) for a layer that is an output more than once."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}_{count}")
    return out


def keras_reference(model: Any, inputs: Sequence[PortSpec], outputs: Sequence[PortSpec]) -> Any:
    """The reference runner: the Keras model called in inference mode."""

    def run(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        xs = [np.asarray(values[s.name]).astype(s.dtype, copy=False) for s in inputs]
        result = model(xs if len(xs) > 1 else xs[0], training=False)
        return {s.name: np.asarray(v) for s, v in zip(outputs, _flat(result))}

    return run


def _flat(result: Any) -> list[Any]:
    """Model outputs as a list in output order (a dict keeps its insertion order)."""
    if isinstance(result, Mapping):
        return list(result.values())
    return list(result) if isinstance(result, (list, tuple)) else [result]


def export_serving_saved_model(model: Any, folder: Path, inputs: Sequence[PortSpec],
                               outputs: Sequence[PortSpec]) -> Path:
    """Save `model`'s inference call as the ``serving_default`` signature of a SavedModel at `folder`, tracking only
    its variables (Keras 3 variables through their TensorFlow variable)."""
    import tensorflow as tf

    from bridge.tfjs.freeze import quiet_tf

    module = tf.Module()
    module.weights = [v if isinstance(v, tf.Variable) else v.value for v in model.variables]  # Keras 3: .value
    specs = [tf.TensorSpec([None if d is None else d for d in (s.shape or ())] if s.shape is not None else None,
                           s.dtype, name=s.name) for s in inputs]

    @tf.function(input_signature=specs)
    def serve(*args: Any) -> dict[str, Any]:
        result = model(list(args) if len(args) > 1 else args[0], training=False)
        return {s.name: value for s, value in zip(outputs, _flat(result))}

    with quiet_tf():
        tf.saved_model.save(module, str(folder), signatures={"serving_default": serve.get_concrete_function()})
    return folder


def _exported_graph(model: Any, inputs: Sequence[PortSpec], outputs: Sequence[PortSpec]) -> GraphFactory:
    """The graph route of a Keras model: export once to a temporary SavedModel, then optimize it."""
    exported: list[Path] = []

    def build(source: TfSource, control_flow_v2: bool, strip_debug_ops: bool) -> Any:
        from bridge.tfjs.optimize import optimize_for_tfjs

        if not exported or not exported[0].exists():  # again after `close` removed it
            exported.clear()
            exported.append(export_serving_saved_model(model, source.temp_dir("keras-export") / "saved_model",
                                                       inputs, outputs))
        return optimize_for_tfjs(exported[0], signature="serving_default", control_flow_v2=control_flow_v2,
                                 strip_debug_ops=strip_debug_ops)

    return build
