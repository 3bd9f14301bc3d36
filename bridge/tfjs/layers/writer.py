"""Keras model -> TF.js layers model folder (model.json + weight shards), written atomically.

The topology and weight names come from bridge.tfjs.layers.topology, the trainingConfig from .training; the
weights go through the graph-model writer's weights half (bridge.tfjs.weights: the same casts, checks,
quantization and shard cutting), so both formats store bytes the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import bridge
from bridge.errors import TrainingConfigError, UsageError
from bridge.tfjs import model_json as mj
from bridge.tfjs.convert import WebModelSummary, check_output_dir
from bridge.tfjs.freeze import TensorInfo
from bridge.tfjs.layers.model_json import FORMAT, build_layers_model_json
from bridge.tfjs.layers.topology import KerasModelParts, model_parts
from bridge.tfjs.layers.training import training_config
from bridge.tfjs.quantize import QuantizePlan, parse_quantize_specs
from bridge.tfjs.weights import DEFAULT_SHARD_SIZE, WrittenWeights, write_weights

_STAGE = "tfjs-layers-write"


@dataclass(frozen=True)
class LayersModelOptions:
    """How to write a layers model. `quantize` holds specs as for graph models (``"float16"``,
    ``"uint8:*dense*"``: patterns match weight names such as ``dense/kernel``). `training_config`: None writes the
    trainingConfig when the model is compiled and TF.js can express it (else it is left out and a note says why),
    True refuses a model whose training config TF.js cannot express, False never writes one. `metadata` adds
    top-level userDefinedMetadata keys; `bridge_metadata` is merged into userDefinedMetadata.bridge."""

    quantize: tuple[str, ...] = ()
    shard_size: int = DEFAULT_SHARD_SIZE
    force: bool = False
    training_config: bool | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    bridge_metadata: Mapping[str, Any] = field(default_factory=dict)
    converted_by: str | None = None
    source: str = ""


def save_keras_model(model: Any, out_dir: str | Path, *, quantize: Sequence[str] = (),
                     shard_size: int = DEFAULT_SHARD_SIZE, force: bool = False,
                     metadata: Mapping[str, Any] | None = None,
                     training_config: bool | None = None) -> WebModelSummary:
    """Write the Keras `model` (tf_keras or Keras 3, Sequential or functional) as a TF.js layers model folder for
    ``tf.loadLayersModel``, like ``tensorflowjs.converters.save_keras_model``. See `LayersModelOptions`."""
    if isinstance(quantize, str):
        quantize = (quantize,)
    options = LayersModelOptions(quantize=tuple(quantize), shard_size=shard_size, force=force,
                                 metadata=dict(metadata or {}), training_config=training_config,
                                 source=f"keras:{type(model).__name__}:{getattr(model, 'name', '')}")
    return write_layers_model(model, out_dir, options)


def write_layers_model(model: Any, out_dir: str | Path, options: LayersModelOptions) -> WebModelSummary:
    """Check, translate and write `model` into `out_dir` atomically (a failure leaves nothing behind; an existing
    non-empty folder is replaced only with `force`, and never one holding sub-folders)."""
    from bridge.util.atomic import atomic_output_dir  # imported late: the module may move

    target = Path(out_dir).absolute()
    check_output_dir(target, options.force)
    _check_options(options)
    parts = model_parts(model)
    plan = parse_quantize_specs(options.quantize)
    training, notes = _training(parts.tf_keras_model if parts.flavour == "tf_keras" else model, options)
    with atomic_output_dir(target, options.force) as staging:
        summary = _write(parts, staging, options, plan, training, notes)
    return _moved(summary, target)


def _check_options(options: LayersModelOptions) -> None:
    """Refuse option values that cannot work."""
    size = options.shard_size
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise UsageError(f"shard size must be a positive number of bytes, got {size!r}", stage=_STAGE)


def _training(model: Any, options: LayersModelOptions) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    """The trainingConfig to write (or None) and notes on why one was left out."""
    if options.training_config is False:
        return None, ()
    translated = training_config(model)
    if not translated.problems:
        return translated.config, ()
    if options.training_config:
        raise TrainingConfigError("the model's compile settings cannot be written as a TF.js trainingConfig",
                                  stage=_STAGE, details=translated.problems,
                                  hint="compile with built-in losses, metrics and a plain optimizer, or write the "
                                       "model without its training config and compile it in TF.js")
    return None, (f"trainingConfig left out: {'; '.join(translated.problems)}",)


def _write(parts: KerasModelParts, folder: Path, options: LayersModelOptions, plan: QuantizePlan,
           training: dict[str, Any] | None, notes: tuple[str, ...]) -> WebModelSummary:
    """Write shards and model.json into the empty staging `folder`."""
    inputs, outputs = model_io(parts.tf_keras_model)
    _user_metadata(parts, options, plan, None, inputs, outputs, training)  # validate before writing shards
    written = write_weights(weights_graph(parts.weights), folder, shard_size=options.shard_size, plan=plan)
    model = build_layers_model_json(
        generated_by=f"keras v{parts.keras_version}",
        converted_by=options.converted_by or f"bridge {bridge.__version__}",
        topology=parts.topology, manifest=written.manifest, training_config=training,
        user_metadata=_user_metadata(parts, options, plan, written, inputs, outputs, training))
    data = mj.dump_model_json(model)
    (folder / "model.json").write_bytes(data)  # the staging folder is new and ours
    classes = Counter(str(layer.get("class_name")) for layer in _layers(parts.topology))
    return WebModelSummary(
        out_dir=folder, model_json=folder / "model.json", shards=tuple(folder / p for p in written.paths),
        weight_count=written.weight_count, weight_bytes=written.total_bytes, model_json_bytes=len(data),
        bytes_by_dtype=dict(written.bytes_by_dtype), quantized=dict(written.quantized), needs_async=False,
        op_histogram=dict(sorted(classes.items())), inputs=tuple(inputs), outputs=tuple(outputs), format=FORMAT,
        notes=notes)


def _layers(topology: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The model's top-level layer entries."""
    from bridge.tfjs.layers.compat import model_layers

    return model_layers(topology.get("config"))


def weights_graph(weights: Sequence[tuple[str, np.ndarray]]) -> Any:
    """A GraphDef holding one Const per weight, in order: the form the graph writer's weights half
    (`bridge.tfjs.weights.write_weights`) reads, so layers models share its casts, quantization and shards."""
    import tensorflow as tf
    from tensorflow.core.framework import graph_pb2

    graph_def = graph_pb2.GraphDef()
    for name, values in weights:
        node = graph_def.node.add(name=name, op="Const")
        tensor = tf.make_tensor_proto(values)
        node.attr["value"].tensor.CopyFrom(tensor)
        node.attr["dtype"].type = tensor.dtype
    return graph_def


def model_io(model: Any) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs of the tf_keras `model` as signature-like infos, keyed by Keras name (the input layer
    names ``predict`` takes, the output names it returns)."""
    return (_infos(model.input_names, model.inputs), _infos(model.output_names, model.outputs))


def _infos(names: Sequence[str], tensors: Sequence[Any]) -> list[TensorInfo]:
    """TensorInfos of Keras tensors (unknown sizes as -1)."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    infos = []
    for name, tensor in zip(names, tensors):
        dtype = types_pb2.DataType.Name(tf.as_dtype(tensor.dtype).as_datatype_enum)
        shape = [-1 if d is None else int(d) for d in tensor.shape]
        infos.append(TensorInfo(key=str(name), name=str(name), dtype=dtype, shape=shape))
    return infos


def _user_metadata(parts: KerasModelParts, options: LayersModelOptions, plan: QuantizePlan,
                   written: WrittenWeights | None, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo],
                   training: Mapping[str, Any] | None) -> dict[str, Any]:
    """userDefinedMetadata: bridge's own block (as for graph models, plus the Keras source) and the user's keys."""
    counts: dict[str, int] = {}
    for step in (written.quantized.values() if written else ()):
        counts[step.dtype] = counts.get(step.dtype, 0) + 1
    extra = {"keras": {"flavour": parts.flavour, "version": parts.keras_version},
             "trainingConfig": training is not None, **dict(options.bridge_metadata)}
    bridge_meta = mj.bridge_metadata(source=options.source, needs_async=False, inputs=inputs, outputs=outputs,
                                     quantization={"specs": plan.specs(), "weights": counts}, extra=extra)
    return mj.user_defined_metadata(bridge_meta, options.metadata)


def _moved(summary: WebModelSummary, target: Path) -> WebModelSummary:
    """The summary with paths pointing into the final folder."""
    from dataclasses import replace

    return replace(summary, out_dir=target, model_json=target / "model.json",
                   shards=tuple(target / p.name for p in summary.shards))
