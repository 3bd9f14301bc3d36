"""The graph side of the bisection: candidate nodes of a TF graph in topological order, and their values on a sample
(the SavedModel frozen, the web graph replayed in TensorFlow, the ONNX graph with extra outputs)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import ConversionError

STAGE = "bisect"
# Ops whose output is never a module's output worth linking (no data, or a plain alias of their input).
SKIP_OPS = frozenset({"Const", "Placeholder", "PlaceholderWithDefault", "NoOp", "Identity", "IdentityN", "Shape",
                      "ShapeN", "Size", "Rank", "Enter", "Exit", "Switch", "Merge", "NextIteration", "LoopCond",
                      "StopGradient", "Assert"})

@dataclass
class GraphTensors:
    """Candidate nodes of a graph in topological order, their ops and inputs, and their outputs on one sample."""

    order: list[str]
    ops: dict[str, str]
    inputs: dict[str, list[str]]
    values: dict[str, np.ndarray]




def _topological(graph_def: Any) -> tuple[list[str], dict[str, str], dict[str, list[str]]]:
    nodes = {n.name: n for n in graph_def.node}
    inputs = {n.name: [r.lstrip("^").split(":")[0] for r in n.input] for n in graph_def.node}
    ops = {n.name: n.op for n in graph_def.node}
    order: list[str] = []
    state: dict[str, int] = {}
    for root in nodes:
        stack = [(root, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(name)
                continue
            if state.get(name) or name not in nodes:
                continue
            state[name] = 1
            stack.append((name, True))
            stack.extend((i, False) for i in reversed(inputs[name]) if not state.get(i))
    return order, ops, inputs


def _loop_nodes(ops: Mapping[str, str], inputs: Mapping[str, list[str]]) -> set[str]:
    """Nodes inside v1 while-loop frames (between Enter and Exit): their values cannot be fetched."""
    consumers: dict[str, list[str]] = {}
    for name, refs in inputs.items():
        for ref in refs:
            consumers.setdefault(ref, []).append(name)
    inside: set[str] = set()
    stack = [n for n, op in ops.items() if op == "Enter"]
    while stack:
        name = stack.pop()
        if name in inside:
            continue
        inside.add(name)
        if ops.get(name) != "Exit":
            stack.extend(consumers.get(name, []))
    return inside


def candidate_nodes(graph_def: Any) -> tuple[list[str], dict[str, str], dict[str, list[str]]]:
    """Nodes whose output may be a module's output, in topological order; with every node's op and inputs."""
    order, ops, inputs = _topological(graph_def)
    loops = _loop_nodes(ops, inputs)
    const_only = _constant_nodes(order, ops, inputs)
    keep = [n for n in order if ops[n] not in SKIP_OPS and n not in loops and n not in const_only]
    return keep, ops, inputs


def _constant_nodes(order: list[str], ops: Mapping[str, str], inputs: Mapping[str, list[str]]) -> set[str]:
    constant: set[str] = set()
    for name in order:
        if ops[name] == "Const" or (inputs[name] and all(i in constant for i in inputs[name])):
            constant.add(name)
    return constant


def _float_values(names: Sequence[str], values: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    return {n: np.asarray(v) for n, v in zip(names, values)
            if np.issubdtype(np.asarray(v).dtype, np.floating) and np.asarray(v).ndim > 0}


def web_graph_tensors(web_model: Any, sample: Mapping[str, np.ndarray]) -> GraphTensors:
    """Every candidate node of the written TF.js graph on one (web-layout) sample, replayed in TensorFlow."""
    from bridge.tfjs.reader import signature_infos
    from bridge.tfjs.replay import replay_graph

    names, ops, inputs = candidate_nodes(web_model.graph_def)
    infos_in, infos_out = signature_infos(web_model.signature)
    result = replay_graph(web_model.graph_def, web_model.weights, sample, infos_in, infos_out, fetch=names)
    values = _float_values(names, [result[n] for n in names])
    return GraphTensors([n for n in names if n in values], ops, inputs, values)


def run_graph(graph_def: Any, feeds: Mapping[str, np.ndarray], fetch: Sequence[str]) -> list[np.ndarray]:
    """Run a frozen GraphDef in a TF1 session: `feeds` by tensor name, `fetch` node or tensor names."""
    import tensorflow as tf

    from bridge.tfjs.freeze import quiet_tf

    tensors = [f if ":" in f else f"{f}:0" for f in fetch]
    graph = tf.Graph()
    try:
        with quiet_tf(), graph.as_default():
            tf.import_graph_def(graph_def, name="")
            with tf.compat.v1.Session(graph=graph) as session:
                return [np.asarray(v) for v in session.run(tensors, feed_dict=dict(feeds))]
    except Exception as exc:  # import and run errors come in many TF types
        raise ConversionError(f"running the TF graph for layer outputs failed: {exc}", stage=STAGE) from exc


@dataclass
class FrozenModel:
    """The SavedModel's serving signature frozen into one graph (what the `tf`/`savedmodel` stages run)."""

    graph_def: Any
    feeds: dict[str, str]  # signature input key -> tensor name
    outputs: dict[str, str]  # signature output key -> tensor name

    @classmethod
    def load(cls, saved_model: Path) -> "FrozenModel":
        """Freeze `saved_model`'s serving signature."""
        from bridge.tfjs.freeze import freeze_signature

        frozen = freeze_signature(saved_model)
        return cls(frozen.graph_def, {i.key: i.name for i in frozen.inputs}, {o.key: o.name for o in frozen.outputs})

    def tensors(self, sample: Mapping[str, np.ndarray]) -> GraphTensors:
        """Every candidate node's output on one web-layout sample."""
        names, ops, inputs = candidate_nodes(self.graph_def)
        values = _float_values(names, run_graph(self.graph_def, self._feeds(sample), names))
        return GraphTensors([n for n in names if n in values], ops, inputs, values)

    def fetch(self, sample: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        """The named nodes' outputs on one web-layout sample."""
        return dict(zip(names, run_graph(self.graph_def, self._feeds(sample), names)))

    def _feeds(self, sample: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {tensor: np.asarray(sample[key]) for key, tensor in self.feeds.items()}


def onnx_fetch(model: Any, samples: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]
               ) -> list[dict[str, np.ndarray]]:
    """The named ONNX values on each sample, through onnxruntime with those values added as graph outputs."""
    import onnx

    from bridge.onnx_route.onnxrt import run_onnx

    work = onnx.ModelProto()
    work.CopyFrom(model)
    present = {o.name for o in work.graph.output}
    for name in names:
        if name not in present:
            work.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    with tempfile.TemporaryDirectory(prefix="bridge-bisect-") as tmp:
        path = Path(tmp) / "layers.onnx"
        onnx.save(work, str(path))
        return [run_onnx(path, sample) for sample in samples]
