"""Per-layer bisection: where along the network, and in which stage, the numbers first drift from PyTorch.

The PyTorch side is captured with forward hooks on every module (its output on each sample input, the module path,
its class and the line of user code that called it). Each later stage exposes intermediate tensors by name: the
ONNX graph (onnxruntime with extra outputs), the TF model (the SavedModel's frozen graph, stage ``savedmodel``), the
TF.js graph replayed in TensorFlow, and the real TF.js runtime in Node and Chromium (`model.execute(inputs, names)`).

A route supplies the link between the two as a **layer map**, ``module path -> (graph node, permutation from
PyTorch's layout)`` (`LayerLink`):

- a route whose graph names carry module paths (the native route) writes the map into model.json, as
  ``userDefinedMetadata.bridge.layers = [{"module": "features.4", "node": "features.4/Relu", "permFromTorch":
  [0, 2, 3, 1]}, ...]`` (node names as in model.json; a node may end in ``:i``); `metadata_layer_map` reads it;
- the ONNX route's TF names say nothing about PyTorch (onnx2tf names Keras op layers ``tf.nn.convolution_3``, and
  the writer fuses and reorders nodes), so its map is found by *alignment*: every candidate node's output on the
  first sample input is compared with every module's output under the layout permutations its shape allows, and
  an order-preserving assignment maximising the summed `match_score` is chosen (`align_layers`). A module whose
  computation was fused away (a Conv2d folded with its BatchNorm) has no counterpart and is simply not linked;
- the ONNX graph itself is linked through the exporter's node metadata (``pkg.torch.onnx.name_scopes``) or the
  legacy exporter's ``/features/features.4/Conv`` node names (`onnx_layer_map`).

For each stage, every linked module is compared with the stage's tolerance; the first one out of tolerance is that
stage's divergence. Because unlinked modules cannot be observed, a divergence is reported as a *span*: the modules
after the last agreeing linked one up to the first diverging linked one, with the first module of the span named as
the first diverging layer. The run's first divergence is that of the earliest stage in pipeline order.
"""

from __future__ import annotations

import ast
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import BridgeError, ConversionError
from bridge.parity import Tolerance, compare_output
from bridge.stages import StageResult, Status

STAGE = "bisect"
MAX_LAYER_SAMPLES = 3  # sample inputs compared per layer (alignment uses the first)
MATCH_SCORE = 0.5  # a node is a module's counterpart only if |node - module| <= (1 - this) * max of their norms
MAX_SUSPECT_NODES = 12
# Ops whose output is never a module's output worth linking (no data, or a plain alias of their input).
SKIP_OPS = frozenset({"Const", "Placeholder", "PlaceholderWithDefault", "NoOp", "Identity", "IdentityN", "Shape",
                      "ShapeN", "Size", "Rank", "Enter", "Exit", "Switch", "Merge", "NextIteration", "LoopCond",
                      "StopGradient", "Assert"})


@dataclass
class LayerPoint:
    """One observable point of the PyTorch model: a module call (or a model output) and where it is in the code."""

    path: str  # module path ("features.4"); "#k" marks the k-th call of a reused module; "output:<name>" outputs
    kind: str  # module class name, or "output"
    source: str | None  # "file.py:19" of the user code that called the module
    shape: tuple[int, ...]
    params: int = 0
    aliases: list[str] = field(default_factory=list)  # modules whose output is this very tensor (a Sequential)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        return {"path": self.path, "kind": self.kind, "source": self.source, "shape": list(self.shape),
                "params": self.params, "aliases": list(self.aliases)}


@dataclass
class TorchLayers:
    """Every point's output per sample input (PyTorch layout), points in the order their outputs were produced."""

    points: list[LayerPoint]
    values: list[list[np.ndarray]]  # values[i][s]: point i, sample s


@dataclass(frozen=True)
class LayerLink:
    """A module path linked to the graph tensor holding its output, and the permutation from PyTorch's layout."""

    path: str
    node: str
    perm: tuple[int, ...] | None = None
    score: float | None = None  # the match score that chose the link (alignment only)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json and model.json metadata."""
        return {"module": self.path, "node": self.node,
                "permFromTorch": list(self.perm) if self.perm is not None else None}


@dataclass
class GraphTensors:
    """Candidate nodes of a graph in topological order, their ops and inputs, and their outputs on one sample."""

    order: list[str]
    ops: dict[str, str]
    inputs: dict[str, list[str]]
    values: dict[str, np.ndarray]


@dataclass
class LayerError:
    """One linked module compared in one stage."""

    path: str
    node: str
    status: Status
    max_abs: float | None
    max_rel: float | None
    mean_abs: float | None
    cosine: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        return {"path": self.path, "node": self.node, "status": self.status.value, "max_abs": self.max_abs,
                "max_rel": self.max_rel, "mean_abs": self.mean_abs, "cosine": self.cosine}


@dataclass
class StageLayers:
    """The error curve of one stage along the network, and where it first left the tolerance."""

    stage: str
    mapping: str  # "aligned", "metadata", "onnx-metadata"
    layers: list[LayerError] = field(default_factory=list)
    first_divergence: dict[str, Any] | None = None
    error: str | None = None
    unconfirmed: list[str] = field(default_factory=list)  # modules whose linked node only resembled them

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        return {"stage": self.stage, "mapping": self.mapping, "layers": [x.to_dict() for x in self.layers],
                "first_divergence": self.first_divergence, "error": self.error, "unconfirmed": self.unconfirmed}


@dataclass
class Bisection:
    """The per-layer comparison of every stage looked at, and the run's first divergence."""

    points: list[LayerPoint]
    stages: list[StageLayers]
    samples: int
    note: str | None = None
    torch: TorchLayers | None = field(default=None, repr=False, compare=False)  # kept for `save_parity_data`

    @property
    def first_divergence(self) -> dict[str, Any] | None:
        """The divergence of the earliest stage (pipeline order) that has one."""
        for stage in self.stages:
            if stage.first_divergence is not None:
                return stage.first_divergence
        return None

    def summary(self) -> str:
        """One line for terminals and assertion messages."""
        first = self.first_divergence
        if first is None:
            return self.note or "no layer left the tolerance in any stage looked at"
        return describe_divergence(first)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json (the ``layers`` key)."""
        return {"samples": self.samples, "note": self.note, "summary": self.summary(),
                "points": [p.to_dict() for p in self.points], "stages": [s.to_dict() for s in self.stages],
                "first_divergence": self.first_divergence}


def describe_divergence(first: Mapping[str, Any]) -> str:
    """A divergence as one sentence: layer, class, source line, stage, where it was seen and how far off."""
    where = f" ({first['kind']}" + (f", {first['source']}" if first.get("source") else "") + ")"
    seen = "" if first["observed_at"] == first["layer"] else f", seen at {first['observed_at']}"
    error = f"max|Δ| {first['max_abs']:.3g}" if first.get("max_abs") is not None else "no comparable output"
    return (f"first diverging layer {first['layer']}{where} in stage {first['stage']}{seen}: {error}, "
            f"TF node {first['node']}")


# ------------------------------------------------------------------------------------------------ PyTorch side


def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    if isinstance(value, dict):
        return next((v for v in value.values() if isinstance(v, torch.Tensor)), None)
    return None


def _call_site() -> str | None:
    """The innermost frame of user code on the stack (not torch, not bridge): where the module was called."""
    import torch

    skip = (str(Path(torch.__file__).parent), str(Path(__file__).parent))
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not frame.filename.startswith(skip) and not frame.filename.startswith("<"):
            return f"{frame.filename}:{frame.lineno}"
    return None


class _Recorder:
    """Forward hooks that record each module call's output (first tensor) per sample."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.order: list[str] = []
        self.values: dict[str, np.ndarray] = {}
        self.meta: dict[str, tuple[str, str | None, int]] = {}
        self.first_sample = True

    def pre_hook(self, path: str, module: Any) -> Callable[..., None]:
        """A forward pre-hook noting the module's class, call site and parameter count (first sample only)."""

        def hook(_module: Any, _args: Any) -> None:
            if self.first_sample:
                count = self.calls.get(path, 0)
                key = path if count == 0 else f"{path}#{count + 1}"
                if key not in self.meta:
                    params = sum(int(p.numel()) for p in module.parameters(recurse=False))
                    self.meta[key] = (type(module).__name__, _call_site(), params)
        return hook

    def post_hook(self, path: str) -> Callable[..., None]:
        """A forward hook keeping the module call's first float output tensor."""

        def hook(_module: Any, _args: Any, output: Any) -> None:
            count = self.calls.get(path, 0)
            self.calls[path] = count + 1
            key = path if count == 0 else f"{path}#{count + 1}"
            tensor = _first_tensor(output)
            if tensor is None or not tensor.is_floating_point():
                return
            self.values[key] = tensor.detach().cpu().float().numpy().copy()
            if self.first_sample:
                self.order.append(key)
        return hook

    def next_sample(self) -> None:
        """Start counting calls afresh for the next sample input."""
        self.calls = {}
        self.first_sample = False


def capture_torch_layers(module: Any, samples: Sequence[Mapping[str, np.ndarray]], specs: Sequence[Any],
                         reference: Sequence[Mapping[str, np.ndarray]] = (),
                         max_samples: int = MAX_LAYER_SAMPLES) -> TorchLayers:
    """Run `module` on up to `max_samples` samples with hooks on every submodule; the model outputs (from
    `reference`, torch layout) are appended as points ``output:<name>``. Modules whose output is exactly the
    previous point's tensor (a Sequential and its last child) become aliases of that point."""
    import torch

    from bridge.reference import to_torch_inputs

    recorder = _Recorder()
    handles = []
    # TorchScript modules take no hooks: only the model outputs are points then.
    hookable = not isinstance(module, torch.jit.ScriptModule)
    for path, sub in module.named_modules() if hookable else ():
        if path:
            handles.append(sub.register_forward_pre_hook(recorder.pre_hook(path, sub)))
            handles.append(sub.register_forward_hook(recorder.post_hook(path)))
    per_sample: list[dict[str, np.ndarray]] = []
    try:
        for sample in list(samples)[:max_samples]:
            recorder.values = {}
            with torch.no_grad():
                module(*to_torch_inputs(sample, specs))
            per_sample.append(recorder.values)
            recorder.next_sample()
    except Exception as exc:  # the user's forward, with hooks on: report, do not crash the conversion
        raise ConversionError(f"running the model with layer hooks failed: {exc}", stage=STAGE) from exc
    finally:
        for handle in handles:
            handle.remove()
    return _layers_from(recorder, per_sample, list(reference)[:len(per_sample)])


def _layers_from(recorder: _Recorder, per_sample: list[dict[str, np.ndarray]],
                 reference: list[Mapping[str, np.ndarray]]) -> TorchLayers:
    points: list[LayerPoint] = []
    values: list[list[np.ndarray]] = []
    for key in recorder.order:
        if not all(key in s for s in per_sample):
            continue
        series = [s[key] for s in per_sample]
        kind, source, params = recorder.meta.get(key, ("Module", None, 0))
        if points and values[-1][0].shape == series[0].shape and np.array_equal(values[-1][0], series[0]):
            points[-1].aliases.append(key)
            continue
        points.append(LayerPoint(key, kind, source, tuple(series[0].shape), params))
        values.append(series)
    for name in reference[0] if reference else []:
        array = np.asarray(reference[0][name])
        if np.issubdtype(array.dtype, np.floating):
            points.append(LayerPoint(f"output:{name}", "output", None, tuple(array.shape)))
            values.append([np.asarray(r[name], dtype=np.float32) for r in reference])
    return TorchLayers(points, values)


# ------------------------------------------------------------------------------------------------ layer maps


def candidate_perms(rank: int) -> list[tuple[int, ...] | None]:
    """Layouts a module output may take in a TF graph: PyTorch's own, or channels moved last."""
    perms: list[tuple[int, ...] | None] = [None]
    if rank >= 3:
        perms.append((0, *range(2, rank), 1))
    return perms


def permute(array: np.ndarray, perm: tuple[int, ...] | None) -> np.ndarray:
    """`array` moved by `perm` (None = unchanged)."""
    return array if perm is None else np.transpose(array, perm)


def _norm(a: np.ndarray) -> float:
    values = np.asarray(a, dtype=np.float64).ravel()
    return float(np.linalg.norm(values[np.isfinite(values)]))


def match_score(a: np.ndarray, b: np.ndarray) -> float:
    """1 - |a - b| / max(|a|, |b|) (L2 norms over finite elements): 1 for equal tensors, 0.5 for one twice the
    other, <= 0 for unrelated ones. Unlike cosine similarity it tells a tensor from a scaled copy (x and x/2 in a
    decomposed GELU)."""
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    finite = np.isfinite(a64) & np.isfinite(b64)
    a64, b64 = a64[finite], b64[finite]
    scale = max(float(np.linalg.norm(a64)), float(np.linalg.norm(b64)))
    if scale == 0.0:
        return 1.0
    return 1.0 - float(np.linalg.norm(a64 - b64)) / scale


def _pair_scores(points: Sequence[LayerPoint], first: Sequence[np.ndarray], graph: GraphTensors
                 ) -> list[tuple[int, int, float, tuple[int, ...] | None]]:
    """Every (point, node) pair whose shapes fit under some permutation, with its best score and permutation."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    norms = [_norm(graph.values[name]) for name in graph.order]
    for j, name in enumerate(graph.order):
        by_shape.setdefault(tuple(graph.values[name].shape), []).append(j)
    pairs = []
    for i, point in enumerate(points):
        if point.path.startswith("output:") or not np.any(first[i]):
            continue
        norm = _norm(first[i])
        for perm in candidate_perms(len(point.shape)):
            shape = tuple(point.shape[k] for k in perm) if perm is not None else point.shape
            moved = permute(first[i], perm)
            for j in by_shape.get(shape, []):
                if min(norm, norms[j]) < MATCH_SCORE * max(norm, norms[j]):
                    continue  # the score is at most the ratio of the norms: no need to compute it
                score = match_score(moved, graph.values[graph.order[j]])
                if score >= MATCH_SCORE:
                    pairs.append((i, j, score, perm))
    best: dict[tuple[int, int], tuple[int, int, float, tuple[int, ...] | None]] = {}
    for pair in pairs:
        if (pair[0], pair[1]) not in best or pair[2] > best[(pair[0], pair[1])][2]:
            best[(pair[0], pair[1])] = pair
    return sorted(best.values())


def align_layers(points: Sequence[LayerPoint], first: Sequence[np.ndarray], graph: GraphTensors) -> list[LayerLink]:
    """The order-preserving assignment of points to graph nodes with the largest summed `match_score`.

    `first` holds each point's output on the first sample. Points and nodes are both in execution order, so a later
    point never links to an earlier node; each node serves at most one point. Ties go to the earlier node.
    """
    pairs = _pair_scores(points, first, graph)
    n = len(graph.order)
    tree = _MaxTree(n)
    best_total: list[float] = [0.0] * len(pairs)
    back: list[int] = [-1] * len(pairs)
    index = 0
    while index < len(pairs):  # all pairs of one point are scored before any of them enters the tree
        end = index
        while end < len(pairs) and pairs[end][0] == pairs[index][0]:
            end += 1
        for k in range(index, end):
            total, prev = tree.query(pairs[k][1])
            best_total[k], back[k] = total + pairs[k][2], prev
        for k in range(index, end):
            tree.update(pairs[k][1], best_total[k], k)
        index = end
    links: list[LayerLink] = []
    k = max(range(len(pairs)), key=lambda p: (best_total[p], -pairs[p][1]), default=-1)
    while k >= 0:
        i, j, score, perm = pairs[k]
        links.append(LayerLink(points[i].path, graph.order[j], perm, score))
        k = back[k]
    return links[::-1]


class _MaxTree:
    """A Fenwick tree of (best total, pair index) over node positions: the best chain ending before a node."""

    def __init__(self, size: int) -> None:
        self.total = [0.0] * (size + 1)
        self.arg = [-1] * (size + 1)

    def query(self, position: int) -> tuple[float, int]:
        """The best chain ending at a node strictly before `position` (0-based)."""
        best, arg, i = 0.0, -1, position
        while i > 0:
            if self.total[i] > best:
                best, arg = self.total[i], self.arg[i]
            i -= i & -i
        return best, arg

    def update(self, position: int, total: float, arg: int) -> None:
        """Record a chain ending at node `position` (0-based)."""
        i = position + 1
        while i < len(self.total):
            if total > self.total[i]:
                self.total[i], self.arg[i] = total, arg
            i += i & -i


def output_links(points: Sequence[LayerPoint], output_tensors: Mapping[str, str],
                 output_perms: Mapping[str, tuple[int, ...] | None]) -> list[LayerLink]:
    """The model outputs linked to the signature's output tensors (their names and layouts are known)."""
    links = []
    for point in points:
        name = point.path.removeprefix("output:")
        if point.path.startswith("output:") and name in output_tensors:
            links.append(LayerLink(point.path, output_tensors[name], output_perms.get(name)))
    return links


def metadata_layer_map(model_json: Mapping[str, Any]) -> list[LayerLink] | None:
    """The layer map a route wrote into model.json (``userDefinedMetadata.bridge.layers``), or None."""
    meta = (model_json.get("userDefinedMetadata") or {}).get("bridge") or {}
    entries = meta.get("layers")
    if not isinstance(entries, list) or not entries:
        return None
    links = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("module"), str) and isinstance(entry.get("node"), str):
            perm = entry.get("permFromTorch")
            links.append(LayerLink(entry["module"], entry["node"], tuple(perm) if perm else None))
    return links or None


def _onnx_scopes(node: Any) -> list[str]:
    """The module paths an ONNX node belongs to, outermost first (empty when unknown)."""
    props = {p.key: p.value for p in node.metadata_props}
    text = props.get("pkg.torch.onnx.name_scopes")
    if text:
        try:
            scopes = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            scopes = []
        return [s for s in scopes[1:-1] if isinstance(s, str) and s]
    if node.name.startswith("/"):  # the TorchScript exporter: /features/features.4/Conv
        return [s for s in node.name.split("/")[1:-1] if s]
    return []


def onnx_layer_map(model: Any, points: Sequence[LayerPoint]) -> list[LayerLink]:
    """Each module linked to the output of the last ONNX node (graph order) inside it, by the exporter's scopes.
    Modules called more than once are left out: the scopes do not say which call a node belongs to."""
    last: dict[str, str] = {}
    for node in model.graph.node:
        for scope in _onnx_scopes(node):
            if node.output:
                last[scope] = node.output[0]
    graph_outputs = {o.name for o in model.graph.output}
    reused = {p.path.split("#")[0] for p in points if "#" in p.path}  # scopes do not tell one call from another
    links = []
    for point in points:
        if point.path in reused:
            continue
        if point.path.startswith("output:"):
            name = point.path.removeprefix("output:")
            if name in graph_outputs:
                links.append(LayerLink(point.path, name))
        elif point.path in last:
            links.append(LayerLink(point.path, last[point.path]))
    return _dedupe_nodes(links)


def _dedupe_nodes(links: list[LayerLink]) -> list[LayerLink]:
    """Keep the last module that claims a node (the outer module, whose output the node really is)."""
    owner = {link.node: k for k, link in enumerate(links)}
    return [link for k, link in enumerate(links) if owner[link.node] == k]


# ------------------------------------------------------------------------------------------------ graph side


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
    from bridge.tfjs.replay import replay_graph
    from bridge.web_stages import signature_infos

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


# ------------------------------------------------------------------------------------------------ comparison


def compare_layers(stage: str, mapping: str, links: Sequence[LayerLink], torch_layers: TorchLayers,
                   actual: Sequence[Mapping[str, np.ndarray]], tol: Tolerance,
                   graph: GraphTensors | None = None) -> StageLayers:
    """Compare each linked point of `stage` (values per sample, keyed by node name) with PyTorch."""
    index = {p.path: i for i, p in enumerate(torch_layers.points)}
    result = StageLayers(stage, mapping)
    count = min(len(actual), len(torch_layers.values[0]) if torch_layers.values else 0)
    for link in links:
        if link.path not in index or any(link.node not in a for a in actual[:count]):
            continue
        expected = [permute(v, link.perm) for v in torch_layers.values[index[link.path]][:count]]
        parity = compare_output(link.path, [np.asarray(a[link.node]) for a in actual[:count]], expected, tol)
        result.layers.append(LayerError(link.path, link.node, parity.status, parity.max_abs, parity.max_rel,
                                        parity.mean_abs, parity.cosine))
    result.layers, result.unconfirmed = _confirmed(result.layers)
    result.first_divergence = _first_divergence(stage, result.layers, torch_layers.points, graph)
    return result


def _confirmed(layers: list[LayerError]) -> tuple[list[LayerError], list[str]]:
    """Links that fail while a later link passes are dropped: an error does not vanish downstream, so such a node
    merely resembles the module (a convolution whose batch norm was folded into it) and says nothing about it."""
    last_pass = max((k for k, layer in enumerate(layers) if layer.status is Status.PASS), default=-1)
    kept = [x for k, x in enumerate(layers) if k >= last_pass or x.status is Status.PASS]
    return kept, [x.path for x in layers if x not in kept]


def _first_divergence(stage: str, layers: Sequence[LayerError], points: Sequence[LayerPoint],
                      graph: GraphTensors | None) -> dict[str, Any] | None:
    """The first link out of tolerance (after `_confirmed`, every later one is out too), as a span of modules."""
    bad = next((k for k, layer in enumerate(layers) if layer.status is not Status.PASS), None)
    if bad is None:
        return None
    order = [p.path for p in points]
    last_good = layers[bad - 1] if bad > 0 else None
    start = order.index(last_good.path) + 1 if last_good else 0
    span = points[start:order.index(layers[bad].path) + 1]
    culprit = span[0]
    seen = layers[bad]
    return {"stage": stage, "layer": culprit.path, "kind": culprit.kind, "source": culprit.source,
            "observed_at": seen.path, "node": seen.node, "op": graph.ops.get(seen.node.split(":")[0]) if graph else None,
            "status": seen.status.value, "max_abs": seen.max_abs, "max_rel": seen.max_rel, "cosine": seen.cosine,
            "last_agreeing": last_good.path if last_good else None,
            "span": [{"path": p.path, "kind": p.kind, "source": p.source} for p in span],
            "suspect_nodes": _suspects(graph, last_good.node if last_good else None, seen.node)}


def _ancestors(graph: GraphTensors, name: str) -> set[str]:
    seen: set[str] = set()
    stack = [name.split(":")[0]]
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(graph.inputs.get(node, []))
    return seen


def _suspects(graph: GraphTensors | None, good: str | None, bad: str) -> list[dict[str, str]]:
    """The graph nodes computed between the last agreeing node and the diverging one (ops that are not Const)."""
    if graph is None:
        return []
    between = _ancestors(graph, bad) - (_ancestors(graph, good) if good else set())
    names = [n for n in graph.order if n in between] + ([bad.split(":")[0]] if bad.split(":")[0] not in graph.order
                                                         and bad.split(":")[0] in between else [])
    return [{"node": n, "op": graph.ops.get(n, "?")} for n in names[-MAX_SUSPECT_NODES:]]


# ------------------------------------------------------------------------------------------------ orchestration


@dataclass
class BisectInputs:
    """Everything bisection needs from a conversion (or from `bridge parity` / `assert_parity`)."""

    module: Any
    specs: Sequence[Any]
    samples: Sequence[Mapping[str, np.ndarray]]  # PyTorch layout
    reference: Sequence[Mapping[str, np.ndarray]]  # PyTorch layout
    input_ports: Sequence[Any]
    output_ports: Sequence[Any]
    tolerance: Callable[[str], Tolerance]
    onnx_path: Path | None = None
    saved_model: Path | None = None
    web_model: Path | None = None
    node_backends: Sequence[str] = ()
    browser_backends: Sequence[str] = ()

    def web_samples(self, count: int) -> list[dict[str, np.ndarray]]:
        """The first `count` samples in the web model's layout and dtypes."""
        from bridge.interface import to_web_samples

        return to_web_samples(list(self.samples)[:count], self.input_ports)


def needs_bisection(stages: Sequence[StageResult]) -> bool:
    """True when some stage was inaccurate or failed after producing outputs (or without any)."""
    return any(s.status in (Status.INACCURATE, Status.FAIL) for s in stages)


def stages_to_bisect(stages: Sequence[StageResult], force: bool) -> list[str]:
    """The stages to look at: every one that ran (browser stages only when one of them did not pass, unless
    `force`), in pipeline order. The TF model is looked into through the SavedModel written from it (`savedmodel`:
    the route's in-memory model behind `tf` is gone by then, and a `tf` divergence shows there too); the IndexedDB
    copy runs the graph browser-<backend> runs."""
    browser_bad = any(s.name.startswith("browser-") and s.status in (Status.INACCURATE, Status.FAIL) for s in stages)
    names = []
    for stage in stages:
        if stage.status is Status.SKIPPED or stage.name in ("tf", "browser-indexeddb"):
            continue
        if stage.name.startswith("browser-") and not (browser_bad or force):
            continue
        names.append(stage.name)
    return names


def bisect_conversion(ctx: Any, stages: Sequence[StageResult], *, force: bool = False) -> Bisection | None:
    """Bisect a conversion when a stage was inaccurate or failed (or always with `force`, i.e. ``--layers``).

    Called by the pipeline after the web stages, with the conversion context; returns None when there is nothing
    to look for. Never raises for a stage that cannot be bisected: its `StageLayers.error` says why.
    """
    if not force and not needs_bisection(stages):
        return None
    staging = Path(ctx.staging)
    backends = [s.name.removeprefix("browser-") for s in stages
                if s.name.startswith("browser-") and s.name != "browser-indexeddb"]
    inputs = BisectInputs(module=ctx.module, specs=ctx.specs, samples=ctx.samples, reference=ctx.reference,
                          input_ports=ctx.input_ports, output_ports=ctx.output_ports, tolerance=ctx.tolerance,
                          onnx_path=_existing(staging / "model.onnx"), saved_model=_existing(staging / "saved_model"),
                          web_model=_existing(staging / "web_model"),
                          node_backends=[s.name.removeprefix("tfjs-node-") for s in stages
                                         if s.name.startswith("tfjs-node-")],
                          browser_backends=backends)
    with ctx.progress.running("layers"):
        return bisect(inputs, stages_to_bisect(stages, force))


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def bisect(inputs: BisectInputs, stage_names: Sequence[str], torch_layers: TorchLayers | None = None) -> Bisection:
    """Capture PyTorch's layers (or use `torch_layers`, stored earlier), link them in each graph, and compare them
    stage by stage, in the given order."""
    if torch_layers is None:
        if inputs.module is None:
            return Bisection([], [], 0, note="per-layer bisection needs the PyTorch model's layer outputs (none "
                                             "were stored, or the reference is onnxruntime on a given .onnx file)")
        torch_layers = capture_torch_layers(inputs.module, inputs.samples, inputs.specs, inputs.reference)
    count = min(len(torch_layers.values[0]) if torch_layers.values else 0, len(inputs.samples))
    if not torch_layers.points or count == 0:
        return Bisection([], [], count, note="no module outputs could be captured (hooks need an nn.Module with "
                                             "submodules; TorchScript and torch.export programs have none)")
    from bridge.quiet import captured_output

    runner = _StageRunner(inputs, torch_layers, count)
    with captured_output():  # TensorFlow's native logs (grappler while freezing) would reach the terminal
        results = [runner.run(name) for name in stage_names]
    return Bisection(torch_layers.points, [r for r in results if r is not None], count, torch=torch_layers)


class _StageRunner:
    """Runs the per-layer comparison of one stage at a time, sharing the web graph's layer map between stages."""

    def __init__(self, inputs: BisectInputs, torch_layers: TorchLayers, count: int) -> None:
        self.inputs = inputs
        self.torch = torch_layers
        self.count = count
        self._web: tuple[list[LayerLink], str, GraphTensors | None] | None = None

    def run(self, stage: str) -> StageLayers | None:
        """One stage's curve; None for stages that expose no intermediate tensors."""
        try:
            if stage == "onnx":
                return self._onnx()
            if stage == "savedmodel":
                return self._saved_model()
            if stage == "tfjs-graph":
                return self._tfjs_graph()
            if stage.startswith("tfjs-node-"):
                return self._node(stage)
            if stage.startswith("browser-"):
                return self._browser(stage)
        except BridgeError as exc:
            return StageLayers(stage, "aligned", error=str(exc).splitlines()[0])
        return None

    def _tol(self, stage: str) -> Tolerance:
        return self.inputs.tolerance(stage)

    def _onnx(self) -> StageLayers | None:
        import onnx

        if self.inputs.onnx_path is None:
            return None
        model = onnx.load(str(self.inputs.onnx_path))
        links = onnx_layer_map(model, self.torch.points)
        values = onnx_fetch(model, list(self.inputs.samples)[:self.count], [link.node for link in links])
        return compare_layers("onnx", "onnx-metadata", links, self.torch, values, self._tol("onnx"))

    def _output_links(self, outputs: Mapping[str, str]) -> list[LayerLink]:
        perms = {p.name: p.perm for p in self.inputs.output_ports}
        return output_links(self.torch.points, outputs, perms)

    def _saved_model(self) -> StageLayers | None:
        stage = "savedmodel"
        if self.inputs.saved_model is None:
            return None
        frozen = FrozenModel.load(self.inputs.saved_model)
        samples = self.inputs.web_samples(self.count)
        graph = frozen.tensors(samples[0])
        links = self._merge(align_layers(self.torch.points, [v[0] for v in self.torch.values], graph),
                            self._output_links(frozen.outputs))
        names = [link.node for link in links]
        actual = [frozen.fetch(s, names) for s in samples]
        return compare_layers(stage, "aligned", links, self.torch, actual, self._tol(stage), graph)

    def web_map(self) -> tuple[list[LayerLink], str, GraphTensors | None]:
        """The TF.js graph's layer map: the route's own from model.json, else aligned on the replayed graph."""
        if self._web is None:
            from bridge.tfjs.reader import read_web_model

            if self.inputs.web_model is None:
                raise ConversionError("there is no web model to look into", stage=STAGE)
            model = read_web_model(self.inputs.web_model)
            outputs = {key: value["name"] for key, value in model.signature.get("outputs", {}).items()}
            graph = web_graph_tensors(model, self.inputs.web_samples(1)[0])
            given = metadata_layer_map(model.model_json)
            if given is not None:
                self._web = (self._merge(given, self._output_links(outputs)), "metadata", graph)
            else:
                aligned = align_layers(self.torch.points, [v[0] for v in self.torch.values], graph)
                self._web = (self._merge(aligned, self._output_links(outputs)), "aligned", graph)
        return self._web

    @staticmethod
    def _merge(links: list[LayerLink], outputs: list[LayerLink]) -> list[LayerLink]:
        taken = {link.path for link in links}
        return links + [o for o in outputs if o.path not in taken]

    def _tfjs_graph(self) -> StageLayers:
        from bridge.tfjs.reader import read_web_model
        from bridge.tfjs.replay import replay_graph
        from bridge.web_stages import signature_infos

        links, mapping, graph = self.web_map()
        assert self.inputs.web_model is not None
        model = read_web_model(self.inputs.web_model)
        infos_in, infos_out = signature_infos(model.signature)
        names = [link.node for link in links]
        actual = [replay_graph(model.graph_def, model.weights, s, infos_in, infos_out, fetch=names)
                  for s in self.inputs.web_samples(self.count)]
        return compare_layers("tfjs-graph", mapping, links, self.torch, actual, self._tol("tfjs-graph"), graph)

    def _node(self, stage: str) -> StageLayers:
        from bridge.runtime.node import run_graph_model

        links, mapping, graph = self.web_map()
        backend = stage.removeprefix("tfjs-node-")
        assert self.inputs.web_model is not None
        run = run_graph_model(self.inputs.web_model, self.inputs.web_samples(self.count), backends=[backend],
                              fetch=[link.node for link in links], warmup=0, repeats=0)[backend]
        if run.error:
            return StageLayers(stage, mapping, error=run.error)
        return compare_layers(stage, mapping, links, self.torch, run.fetched, self._tol(stage), graph)

    def _browser(self, stage: str) -> StageLayers:
        from bridge.runtime.browser import run_in_browser

        links, mapping, graph = self.web_map()
        backend = stage.removeprefix("browser-")
        assert self.inputs.web_model is not None
        run = run_in_browser(self.inputs.web_model, self.inputs.web_samples(self.count), backends=[backend],
                             fetch=[link.node for link in links], warmup=0, repeats=0, indexeddb_roundtrip=False)
        result = run.backends.get(backend)
        if result is None or result.error:
            return StageLayers(stage, mapping, error=result.error if result else "the backend did not run")
        return compare_layers(stage, mapping, links, self.torch, result.fetched, self._tol(stage), graph)
