"""Keep layer norms' epsilon through grappler's oneDNN remapper.

With oneDNN on (TF's default on x86), the remapper fuses a layer-norm subgraph (mean, squared difference, mean,
add epsilon, rsqrt, scale, shift) into `_MklLayerNorm` but leaves that op's `epsilon` attribute at its default
0.001, whatever the graph added: a PyTorch LayerNorm (eps 1e-5) reaches TF.js with eps 1e-3, off by up to 5e-4 on a
small transformer and far more on inputs of small variance. Before the remap pass, `layer_norm_epsilons` reads the
epsilon of every such subgraph (keyed by the node that ends it, whose name the fused op takes over); afterwards
`restore_layer_norm_epsilons` writes them into the fused ops. The table case `layer_norm_eps_1e5` in
tests/test_tfjs_table.py fails without it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from bridge.tfjs.graph_names import const_value, data_inputs, node_map

_PATTERN_DEPTH = 6  # end of the subgraph (AddV2) -> Mul -> Mul -> Rsqrt: the pattern's own Rsqrt is this close


def layer_norm_epsilons(graph_def: Any) -> dict[str, float]:
    """Epsilon of the nearest `Rsqrt(Add(Mean(...), eps))` upstream of each Add/AddV2 node, by that node's name."""
    nodes = node_map(graph_def)
    found: dict[str, float] = {}
    for node in graph_def.node:
        if node.op in ("Add", "AddV2"):
            epsilon = _nearest_epsilon(node.name, nodes)
            if epsilon is not None:
                found[node.name] = epsilon
    return found


def restore_layer_norm_epsilons(graph_def: Any, epsilons: dict[str, float]) -> int:
    """Set the epsilon of every main-graph `_MklLayerNorm` from `epsilons`; returns how many were set."""
    restored = 0
    for node in graph_def.node:
        if node.op == "_MklLayerNorm" and node.name in epsilons:
            node.attr["epsilon"].f = epsilons[node.name]
            restored += 1
    return restored


def _nearest_epsilon(start: str, nodes: dict[str, Any]) -> float | None:
    """Breadth-first up from `start`: the epsilon of the first layer-norm Rsqrt within the pattern's depth."""
    queue, seen = deque([(start, 0)]), {start}
    while queue:
        name, depth = queue.popleft()
        node = nodes.get(name)
        if node is None:
            continue
        if node.op == "Rsqrt":
            return _rsqrt_epsilon(node, nodes)
        if depth < _PATTERN_DEPTH:
            for ref in data_inputs(node):
                if ref.node not in seen:
                    seen.add(ref.node)
                    queue.append((ref.node, depth + 1))
    return None


def _rsqrt_epsilon(rsqrt: Any, nodes: dict[str, Any]) -> float | None:
    """eps of `Rsqrt(Add(Mean(...), Const eps))`, else None."""
    add = nodes.get(data_inputs(rsqrt)[0].node)
    if add is None or add.op not in ("Add", "AddV2"):
        return None
    operands = [nodes.get(ref.node) for ref in data_inputs(add)]
    ops = sorted(o.op for o in operands if o is not None)
    if ops != ["Const", "Mean"]:
        return None
    value = const_value(next(o for o in operands if o is not None and o.op == "Const"))
    return float(value.reshape(-1)[0]) if value.size == 1 else None
