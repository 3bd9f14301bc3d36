"""One entry point for every input format (`load_source`) and for writing a source in either output format
(`write_source`, `convert_source`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.errors import UsageError
from bridge.tfjs.sources.base import GRAPH_MODEL, INPUT_FORMATS, LAYERS_MODEL, OUTPUT_FORMATS, STAGE, TfSource


def load_source(path: str | Path, input_format: str | None = None, *, signature: str | None = None,
                saved_model_tags: Sequence[str] | None = None, output_node_names: Sequence[str] | None = None,
                input_node_names: Sequence[str] | None = None, trust_code: bool = False) -> TfSource:
    """Read the model at `path` in `input_format` (detected when None; see `INPUT_FORMATS`).

    `signature` picks a SavedModel / Hub signature (default ``serving_default``, ``default`` for TF1 Hub
    modules), `saved_model_tags` the graph's tags (default ``serve``; the empty set for TF1 Hub modules);
    `output_node_names` (required) and `input_node_names` (default: the Placeholders) are for frozen graphs;
    `trust_code` lets Keras files with Lambda layers load (their Python code runs). Options that do not apply
    to the format are refused. Bad inputs raise typed errors (`SourceFormatError`, `MissingNodesError`,
    `MissingSignatureError`, `UnsupportedLayersError`, `ModelLoadError`)."""
    from bridge.tfjs.sources.detect import detect_input_format

    path = Path(path)
    fmt = input_format or detect_input_format(path)
    if fmt not in INPUT_FORMATS:
        raise UsageError(f"unknown input format {fmt!r}", stage=STAGE, hint=f"use one of {', '.join(INPUT_FORMATS)}")
    _check_options(fmt, signature=signature, saved_model_tags=saved_model_tags,
                   output_node_names=output_node_names, input_node_names=input_node_names)
    if fmt == "tfjs_layers_model" and path.is_file():
        path = path.parent
    return _READERS[fmt](path, signature=signature, tags=saved_model_tags, outputs=output_node_names,
                         inputs=input_node_names, trust_code=trust_code)


def _check_options(fmt: str, **given: Any) -> None:
    """Refuse options the format does not read (a silently ignored option hides a mistake)."""
    applies = {"signature": {"tf_saved_model", "tf_hub"}, "saved_model_tags": {"tf_saved_model", "tf_hub"},
               "output_node_names": {"tf_frozen_model"}, "input_node_names": {"tf_frozen_model"}}
    wrong = [name for name, value in given.items() if value and fmt not in applies[name]]
    if wrong:
        raise UsageError(f"{', '.join(wrong)} do(es) not apply to input format {fmt}", stage=STAGE)


def _saved_model(path: Path, **opts: Any) -> TfSource:
    from bridge.tfjs.sources.saved_model import load_saved_model

    return load_saved_model(path, signature=opts["signature"], tags=opts["tags"])


def _hub(path: Path, **opts: Any) -> TfSource:
    from bridge.tfjs.sources.saved_model import load_hub_v1, load_saved_model

    if (path / "tfhub_module.pb").is_file():
        return load_hub_v1(path, signature=opts["signature"], tags=opts["tags"])
    return load_saved_model(path, input_format="tf_hub", signature=opts["signature"], tags=opts["tags"])


def _frozen(path: Path, **opts: Any) -> TfSource:
    from bridge.tfjs.sources.frozen import load_frozen_graph

    return load_frozen_graph(path, output_node_names=opts["outputs"], input_node_names=opts["inputs"])


def _h5(path: Path, **opts: Any) -> TfSource:
    from bridge.tfjs.sources.keras_files import load_h5

    return load_h5(path, trust_code=opts["trust_code"])


def _keras_v3(path: Path, **opts: Any) -> TfSource:
    from bridge.tfjs.sources.keras_files import load_keras_v3

    return load_keras_v3(path, trust_code=opts["trust_code"])


def _keras_saved_model(path: Path, **opts: Any) -> TfSource:
    from bridge.tfjs.sources.keras_files import load_keras_saved_model

    return load_keras_saved_model(path)


def _layers_folder(path: Path, **opts: Any) -> TfSource:
    from bridge.tfjs.sources.layers_folder import load_layers_folder

    return load_layers_folder(path)


_READERS = {"tf_saved_model": _saved_model, "tf_hub": _hub, "tf_frozen_model": _frozen, "keras": _h5,
            "keras_keras": _keras_v3, "keras_saved_model": _keras_saved_model, "tfjs_layers_model": _layers_folder}


def write_source(source: TfSource, out_dir: str | Path, *, output_format: str | None = None,
                 graph_options: Any = None, layers_options: Any = None, strip_debug_ops: bool = True) -> Any:
    """Write `source` as a web model (`output_format` defaults to `source.default_output_format`) and return the
    `WebModelSummary`. `graph_options` is a `bridge.tfjs.convert.TfjsOptions` (its signature is unused: the
    source has picked it), `layers_options` a `bridge.tfjs.layers.LayersModelOptions`. Nothing is written when
    anything fails; the output folder is checked before any conversion work."""
    fmt = output_format or source.default_output_format
    if fmt not in OUTPUT_FORMATS:
        raise UsageError(f"unknown output format {fmt!r}", stage=STAGE, hint=f"use one of {', '.join(OUTPUT_FORMATS)}")
    if fmt == LAYERS_MODEL:
        return _write_layers(source, Path(out_dir), layers_options)
    from bridge.tfjs.convert import TfjsOptions, check_output_dir, convert_graph

    options = graph_options or TfjsOptions(source=str(source.path or source.input_format))
    check_output_dir(Path(out_dir).absolute(), options.force)
    graph = source.optimized_graph(control_flow_v2=options.control_flow_v2, strip_debug_ops=strip_debug_ops)
    return convert_graph(graph, out_dir, options)


def _write_layers(source: TfSource, out_dir: Path, options: Any) -> Any:
    """The layers route: only Keras sources (and TF.js layers models) have a layer graph to write."""
    from bridge.tfjs.layers.writer import LayersModelOptions, write_layers_model

    if source.keras_model is None:
        raise UsageError(f"a {source.input_format} input has no Keras layers to write as a layers model",
                         stage=STAGE, hint=f"write it as a graph model (--output_format {GRAPH_MODEL})")
    return write_layers_model(source.keras_model, out_dir,
                              options or LayersModelOptions(source=str(source.path or source.input_format)))


def convert_source(path: str | Path, out_dir: str | Path, *, input_format: str | None = None,
                   output_format: str | None = None, signature: str | None = None,
                   saved_model_tags: Sequence[str] | None = None, output_node_names: Sequence[str] | None = None,
                   input_node_names: Sequence[str] | None = None, trust_code: bool = False,
                   quantize: Sequence[str] = (), shard_size: int | None = None, force: bool = False,
                   control_flow_v2: bool = False, strip_debug_ops: bool = True,
                   metadata: Mapping[str, Any] | None = None) -> Any:
    """Read `path` and write it to `out_dir` in one call (the official converter's job); returns the
    `WebModelSummary`. See `load_source` and `write_source`."""
    from bridge.tfjs.convert import TfjsOptions
    from bridge.tfjs.layers.writer import LayersModelOptions
    from bridge.tfjs.weights import DEFAULT_SHARD_SIZE

    size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
    with load_source(path, input_format, signature=signature, saved_model_tags=saved_model_tags,
                     output_node_names=output_node_names, input_node_names=input_node_names,
                     trust_code=trust_code) as source:
        described = str(path)
        graph = TfjsOptions(quantize=tuple(quantize), shard_size=size, control_flow_v2=control_flow_v2,
                            metadata=dict(metadata or {}), force=force, source=described)
        layers = LayersModelOptions(quantize=tuple(quantize), shard_size=size, force=force,
                                    metadata=dict(metadata or {}), source=described)
        return write_source(source, out_dir, output_format=output_format, graph_options=graph,
                            layers_options=layers, strip_debug_ops=strip_debug_ops)
