"""Comparing linked layers stage by stage: each stage's error curve along the network, where it first left the
tolerance (as a span of modules), and the nodes computed in between."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.bisect.graph import GraphTensors
from bridge.bisect.layer_map import LayerLink, permute
from bridge.bisect.torch_layers import LayerPoint, TorchLayers
from bridge.parity.metrics import Tolerance, compare_output
from bridge.stages.result import Status

MAX_SUSPECT_NODES = 12

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
