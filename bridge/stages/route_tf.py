"""The "tf" route (`bridge tfjs`): a model that is TensorFlow already (a SavedModel, a frozen graph, a Hub module, a
Keras file, a TF.js layers model; `bridge.tfjs.sources`) written as a graph model or a layers model by bridge's
writers. The reference is the source model run in TensorFlow / Keras."""

from __future__ import annotations

from typing import Any

from bridge.source.ports import Interface, Port
from bridge.stages.artifacts import Produced, WebModel
from bridge.stages.context import StageEnv
from bridge.stages.tensorflow import bridge_metadata, user_metadata
from bridge.stages.result import StageResult

ROUTE = "tf"


def source_interface(source: Any) -> Interface:
    """A source's inputs and outputs as ports: the web model keeps the source's own layouts and names."""
    def port(spec: Any) -> Port:
        return Port(spec.name, tuple(spec.shape or ()), spec.dtype, "source")

    return Interface(tuple(port(s) for s in source.inputs), tuple(port(s) for s in source.outputs))


def write_graph(env: StageEnv) -> Produced:
    """The source as a graph model in the run's web model folder."""
    from bridge.tfjs.convert import TfjsOptions
    from bridge.tfjs.sources import GRAPH_MODEL, write_source

    run, source = env.run, env.artifacts.tf_source
    options = TfjsOptions(quantize=run.options.quantize, shard_size=run.options.shard_size,
                          metadata=user_metadata(env), bridge_metadata=bridge_metadata(env, ROUTE),
                          source=str(source.path or source.input_format), force=True,
                          control_flow_v2=run.options.control_flow_v2,
                          output_order=tuple(p.name for p in env.interface.outputs))
    summary = write_source(source, run.web_model_path, output_format=GRAPH_MODEL, graph_options=options,
                           strip_debug_ops=run.options.strip_debug_ops)
    return Produced(env.artifacts.with_(web_model=WebModel.read(run.web_model_path)), notes=tuple(summary.notes))


def write_layers(env: StageEnv) -> Produced:
    """The source's Keras model as a layers model in the run's layers model folder."""
    from bridge.tfjs.layers import LayersModelOptions
    from bridge.tfjs.sources import LAYERS_MODEL, write_source

    run, source = env.run, env.artifacts.tf_source
    options = LayersModelOptions(quantize=run.options.quantize, shard_size=run.options.shard_size, force=True,
                                 metadata=user_metadata(env), bridge_metadata=bridge_metadata(env, ROUTE),
                                 source=str(source.path or source.input_format))
    summary = write_source(source, run.layers_model_path, output_format=LAYERS_MODEL, layers_options=options)
    return Produced(env.artifacts.with_(layers_model=WebModel.read(run.layers_model_path)),
                    notes=tuple(summary.notes))


def check_layers_in_keras(env: StageEnv) -> StageResult:
    """The layers model as written (topology and weights from its files), rebuilt in Keras and run there."""
    from bridge.tfjs.sources.layers_folder import load_layers_folder

    layers = env.artifacts.layers_model
    assert layers is not None
    with _custom_layers(layers.path), load_layers_folder(layers.path) as rebuilt:
        actual = [rebuilt.reference(sample) for sample in env.web_inputs()]
    files = sorted(layers.path.glob("group*-shard*"))
    size = sum(f.stat().st_size for f in files)
    return env.judge(actual, detail=f"keras, {len(files)} shard(s), {size / 1e6:.2f} MB", shards=len(files),
                     weightBytes=size)


def _custom_layers(folder: Any) -> Any:
    """A Keras custom-object scope holding the custom layers bridge generated for a PyTorch layers model (their
    Python side, rebuilt from model.json's metadata); an empty context for other layers models."""
    import contextlib
    import json

    meta = (json.loads((folder / "model.json").read_text()).get("userDefinedMetadata") or {}).get("bridge") or {}
    route = meta.get("layersRoute") or {}
    if not route.get("customLayers"):
        return contextlib.nullcontext()
    import tf_keras

    from bridge.layers_route.custom_layers import custom_objects_from_metadata

    return tf_keras.utils.custom_object_scope(custom_objects_from_metadata(route))
