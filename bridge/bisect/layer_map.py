"""Layer maps: which graph tensor holds which module's output (metadata a route wrote, the ONNX exporter's scopes,
or a numeric order-preserving alignment)."""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.bisect.graph import GraphTensors
from bridge.bisect.torch_layers import LayerPoint

MATCH_SCORE = 0.5  # a node is a module's counterpart only if |node - module| <= (1 - this) * max of their norms

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
