"""A frozen GraphDef file (``.pb``, or text ``.pbtxt``) as a `TfSource`.

Inputs are the graph's Placeholders unless named; outputs must be named (``output_node_names``), as the official
converter requires; a missing or unknown name raises `MissingNodesError` listing candidates (the graph's sink
nodes and names close to the one asked). The graph goes straight into bridge.tfjs.optimize; the reference runs
the same GraphDef imported into TensorFlow, pruned to those inputs and outputs.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import MissingNodesError, SourceFormatError
from bridge.tfjs.sources.base import STAGE, PortSpec, TfSource, dtype_name, shape_tuple

_VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp", "ReadVariableOp", "AssignVariableOp"})
_NOT_OUTPUTS = frozenset({"NoOp", "Const", "Assert", "Placeholder", "SaveV2", "RestoreV2"})


def load_frozen_graph(path: Path, *, output_node_names: Sequence[str] | None,
                      input_node_names: Sequence[str] | None = None) -> TfSource:
    """The frozen GraphDef at `path` as a source (see module doc)."""
    import tensorflow as tf

    path = Path(path)
    graph_def = read_graph_def(path)
    _refuse_variables(graph_def, path)
    inputs = _input_nodes(graph_def, input_node_names, path)
    outputs = _output_refs(graph_def, output_node_names, path)
    function = _imported(graph_def, inputs, outputs, path)
    input_specs = tuple(PortSpec(name=_node(ref), dtype=dtype_name(t.dtype), shape=shape_tuple(t.shape))
                        for ref, t in zip(inputs, function.inputs))
    output_specs = tuple(PortSpec(name=_key(ref), dtype=dtype_name(t.dtype), shape=shape_tuple(t.shape))
                         for ref, t in zip(outputs, function.outputs))
    version = graph_def.versions.producer

    def build(source: TfSource, control_flow_v2: bool, strip_debug_ops: bool) -> Any:
        return optimized_frozen_graph(graph_def, input_specs, output_specs, inputs, outputs, strip_debug_ops,
                                      f"{tf.__version__} (GraphDef producer {version})")

    return TfSource(path=path, input_format="tf_frozen_model", inputs=input_specs, outputs=output_specs,
                    reference=_reference(function, input_specs, output_specs), generated_by=tf.__version__,
                    graph_factory=build)


def read_graph_def(path: Path) -> Any:
    """Parse a binary (or, for text files, text-format) GraphDef; `SourceFormatError` if it is neither or holds
    no nodes with ops."""
    from google.protobuf import message, text_format
    from tensorflow.core.framework import graph_pb2

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceFormatError(f"cannot read {path}: {exc.strerror}", stage=STAGE) from exc
    graph_def = graph_pb2.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except message.DecodeError:
        graph_def.Clear()
        try:
            text_format.Parse(data.decode("utf-8"), graph_def)
        except (UnicodeDecodeError, text_format.ParseError):
            graph_def.Clear()
    if not graph_def.node or any(not node.op or not node.name for node in graph_def.node):
        raise SourceFormatError(f"{path} is not a TensorFlow GraphDef (frozen model)", stage=STAGE,
                                hint="pass a frozen graph (.pb written by graph_util / freeze_graph), or a "
                                     "SavedModel folder")
    return graph_def


def _refuse_variables(graph_def: Any, path: Path) -> None:
    """A graph that still reads variables is not frozen: its weights are not in the file."""
    found = sorted({n.op for n in graph_def.node if n.op in _VARIABLE_OPS})
    if found:
        raise SourceFormatError(f"{path} is not frozen: it holds variable ops ({', '.join(found)})", stage=STAGE,
                                hint="freeze it first (variables to constants), or convert the SavedModel")


def _sinks(graph_def: Any) -> list[str]:
    """Nodes nothing reads (output candidates), skipping ops that are never model outputs."""
    read = {ref.lstrip("^").split(":")[0] for node in graph_def.node for ref in node.input}
    return [n.name for n in graph_def.node if n.name not in read and n.op not in _NOT_OUTPUTS]


def _output_refs(graph_def: Any, names: Sequence[str] | None, path: Path) -> list[str]:
    """Output tensor names (``node:index``); every node must exist."""
    sinks = _sinks(graph_def)
    if not names:
        raise MissingNodesError(f"{path}: a frozen graph needs its output node names", stage=STAGE,
                                missing=["(none given)"], candidates=sinks[:20],
                                hint="pass --output_node_names, e.g. one of the candidates listed")
    known = {n.name for n in graph_def.node}
    refs = [name if ":" in name else f"{name}:0" for name in names]
    missing = [ref.split(":")[0] for ref in refs if ref.split(":")[0] not in known]
    if missing:
        close = [c for name in missing for c in difflib.get_close_matches(name, sorted(known), n=5)]
        candidates = list(dict.fromkeys(close + sinks))[:20]
        raise MissingNodesError(f"{path} has no node(s) {', '.join(missing)}", stage=STAGE, missing=missing,
                                candidates=candidates, hint="pass --output_node_names with nodes of the graph")
    return refs


def _input_nodes(graph_def: Any, names: Sequence[str] | None, path: Path) -> list[str]:
    """Input tensor names: the given nodes, else every Placeholder."""
    placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
    if not names:
        return [f"{name}:0" for name in placeholders]
    known = {n.name for n in graph_def.node}
    missing = [name.split(":")[0] for name in names if name.split(":")[0] not in known]
    if missing:
        raise MissingNodesError(f"{path} has no input node(s) {', '.join(missing)}", stage=STAGE,
                                missing=missing, candidates=placeholders,
                                hint="pass input node names of the graph (its Placeholders are listed)")
    return [name if ":" in name else f"{name}:0" for name in names]


def _node(ref: str) -> str:
    return ref.split(":")[0]


def _key(ref: str) -> str:
    """An output's key: its node name, with ``:index`` kept for outputs other than the first."""
    node, _, index = ref.partition(":")
    return node if index in ("", "0") else ref


def _imported(graph_def: Any, inputs: Sequence[str], outputs: Sequence[str], path: Path) -> Any:
    """The GraphDef imported into TensorFlow, pruned to `inputs` -> `outputs` (a callable concrete function)."""
    import tensorflow as tf

    def import_graph() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    try:
        wrapped = tf.compat.v1.wrap_function(import_graph, [])
        graph = wrapped.graph
        return wrapped.prune(feeds=[graph.get_tensor_by_name(n) for n in inputs],
                             fetches=[graph.get_tensor_by_name(n) for n in outputs])
    except (ValueError, KeyError, TypeError, tf.errors.OpError) as exc:
        raise SourceFormatError(f"{path} does not import into TensorFlow: {str(exc)[:400]}", stage=STAGE,
                                hint="check the graph was written by this TensorFlow major version") from exc


def _reference(function: Any, inputs: Sequence[PortSpec], outputs: Sequence[PortSpec]) -> Any:
    """The reference runner: the imported graph run on named arrays."""
    import tensorflow as tf

    def run(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = function(*[tf.constant(np.asarray(values[s.name]), dtype=s.dtype) for s in inputs])
        result = result if isinstance(result, (list, tuple)) else [result]
        return {spec.name: np.asarray(value) for spec, value in zip(outputs, result)}

    return run


def optimized_frozen_graph(graph_def: Any, inputs: Sequence[PortSpec], outputs: Sequence[PortSpec],
                           input_refs: Sequence[str], output_refs: Sequence[str], strip_debug_ops: bool,
                           tf_version: str) -> Any:
    """Optimize a frozen GraphDef for TF.js (bridge.tfjs.optimize) with signature infos for its inputs/outputs."""
    from tensorflow.core.framework import types_pb2

    from bridge.tfjs.freeze import TensorInfo
    from bridge.tfjs.op_list import needs_async
    from bridge.tfjs.optimize import OptimizedGraph, op_histogram, optimize_graph_def

    def info(spec: PortSpec, ref: str) -> TensorInfo:
        import tensorflow as tf

        enum = tf.as_dtype(spec.dtype).as_datatype_enum
        shape = None if spec.shape is None else [-1 if d is None else int(d) for d in spec.shape]
        return TensorInfo(key=spec.name, name=ref, dtype=types_pb2.DataType.Name(enum), shape=shape)

    in_infos = [info(s, r) for s, r in zip(inputs, input_refs)]
    out_infos = [info(s, r) for s, r in zip(outputs, output_refs)]
    optimized = optimize_graph_def(graph_def, in_infos, out_infos, strip_debug_ops=strip_debug_ops)
    return OptimizedGraph(graph_def=optimized, inputs=in_infos, outputs=out_infos,
                          needs_async=needs_async(optimized), tf_version=tf_version,
                          op_histogram=op_histogram(optimized))
