"""Weight folding: a node whose tensor inputs are all weights (`self.w.t()`, `self.pos[:, :16]`,
`self.scale * 2`) is evaluated once with PyTorch at rebuild time; its outputs become constants stored with the
weights, named after the weight they came from. Small constant sources (`torch.arange(197)`, `torch.ones(4)` with
literal sizes) fold too, so what is computed from them alone (the all-allowed attention masks transformers builds
from an arange) becomes a constant later passes can read. Runs before the unsupported-op scan, so an op used only
on weights needs no converter."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bridge.native.capture import resolve_op
from bridge.native.ir import SYMINT, Graph, Node, Value

# Ops without tensor inputs whose result depends on their literal arguments only (not random, not uninitialised).
CONSTANT_SOURCES = frozenset({
    "aten.arange.default", "aten.arange.start", "aten.arange.start_step", "aten.full.default", "aten.zeros.default",
    "aten.ones.default", "aten.scalar_tensor.default", "aten.eye.default", "aten.linspace.default"})
_PLACEMENT = ("layout", "device", "pin_memory")  # captured as text; folding runs on the CPU in the default layout
MAX_SOURCE_ELEMENTS = 4096  # a larger constant source stays an op: storing it would grow the weights


def fold_weight_ops(graph: Graph) -> int:
    """Fold every foldable node in place (its outputs turn into constants); returns how many were folded."""
    kept: list[Node] = []
    for node in graph.nodes:
        if not (_foldable(graph, node) and _fold(graph, node)):
            kept.append(node)
    folded = len(graph.nodes) - len(kept)
    graph.nodes = kept
    return folded


def _foldable(graph: Graph, node: Node) -> bool:
    tensors = [v for _, v in node.tensor_args()]
    source = not tensors and node.target in CONSTANT_SOURCES
    if not (source or tensors) or not all(v.is_weight for v in tensors) or resolve_op(node.target) is None:
        return False
    if any(out is None or out.dtype == SYMINT or out.is_dynamic for out in node.outputs):
        return False  # symbolic ints stay in the graph
    inputs = sum(graph.arrays[v.name].size for v in tensors)
    outputs = sum(int(np.prod([d or 0 for d in out.shape])) for out in node.outputs if out is not None)
    if source:
        return outputs <= MAX_SOURCE_ELEMENTS
    return outputs <= max(inputs, 1)  # expand/repeat of a weight would bloat the stored weights


def _fold(graph: Graph, node: Node) -> bool:
    """Evaluate `node` with PyTorch and turn its outputs into constants (False, untouched, if it cannot run)."""
    op = resolve_op(node.target)
    assert op is not None
    try:
        with torch.no_grad():
            result = op(**{k: _torch_arg(graph, v) for k, v in node.args.items() if k not in _PLACEMENT})
    except Exception:  # noqa: BLE001 - e.g. an argument capture stored as text; the node is converted instead
        return False
    results = list(result) if isinstance(result, (tuple, list)) else [result]
    if len(results) != len(node.outputs) or not all(isinstance(r, torch.Tensor) for r in results):
        return False
    origin = next(node.tensor_args(), (None, None))[1]
    short = node.target.split(".")[1]
    for out, tensor in zip(node.outputs, results):
        assert out is not None
        out.kind = "const"
        single = origin is not None and len(list(node.tensor_args())) == 1
        out.key = origin.key if single else f"{node.module_path or 'folded'}.{node.name}"
        out.variant = f"{origin.variant}+{short}" if origin is not None and origin.variant else short
        out.producer = None
        graph.add_weight(out, tensor.detach().cpu().numpy().copy())
    return True


def _torch_arg(graph: Graph, arg: Any) -> Any:
    if isinstance(arg, str) and arg.startswith("torch.") and isinstance(getattr(torch, arg[6:], None), torch.dtype):
        return getattr(torch, arg[6:])  # a dtype argument, captured as its name
    if isinstance(arg, Value):
        return torch.from_numpy(graph.arrays[arg.name])
    if isinstance(arg, list):
        return [_torch_arg(graph, a) for a in arg]
    return arg
