"""Capture a PyTorch module for the layers route: a torch.fx graph whose leaves are the modules that have a TF.js
layer counterpart, plus the concrete value of every node on two runs.

Why torch.fx symbolic tracing and not torch.export: a layers model is made of *modules* (one Conv2d is one Conv2D
layer, with its state_dict keys), and fx keeps each leaf module as one ``call_module`` node holding the module
object and its arguments, while the glue between them stays at the level users wrote it (``torch.flatten``,
``x + y``, ``x.view(...)``, ``F.relu``). torch.export decomposes every module into ATen ops (an LSTM into its
gates, BatchNorm into training/no-training variants) that would have to be regrouped by ``nn_module_stack``
before each group could become a layer, and the regrouping breaks whenever a module's ops are fused or reordered.
Modules without a counterpart are traced through, so their ops become glue (and custom layers); fx records the
module path of every node in ``nn_module_stack``.

Shapes come from running the graph (an fx Interpreter keeping every value) twice: on the example inputs and on a
probe with the batch (and any declared dynamic axis) one larger. A size that differs between the runs is dynamic
(None in the Keras shape); everything else is static. Python values computed from sizes (``x.size(0)``) are
known concretely, so reshape targets are read from the produced shapes, never from Python arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from bridge.errors import CaptureError

STAGE = "tfjs-layers-capture"


@dataclass
class Captured:
    """The traced graph module, each node's value on the example and probe runs, and each node's owner module."""

    module: torch.nn.Module
    graph_module: fx.GraphModule
    values: dict[fx.Node, Any]
    probe_values: dict[fx.Node, Any]
    owners: dict[fx.Node, str]

    def nodes(self) -> list[fx.Node]:
        """The graph's nodes in execution order."""
        return list(self.graph_module.graph.nodes)

    def shape(self, node: fx.Node, value: Any = None, probe: Any = None) -> tuple[int | None, ...]:
        """The torch shape of a tensor node (or of `value`/`probe` taken from it), None where the runs differ."""
        a = self.values[node] if value is None else value
        b = self.probe_values[node] if probe is None else probe
        return dynamic_shape(a, b)


def dynamic_shape(a: torch.Tensor, b: torch.Tensor) -> tuple[int | None, ...]:
    """The shape of `a` with None where `b`'s size differs."""
    if a.dim() != b.dim():
        raise CaptureError(f"a tensor changes rank between runs ({tuple(a.shape)} vs {tuple(b.shape)})", stage=STAGE,
                           hint="the model's graph depends on the input sizes: declare fewer dynamic axes")
    return tuple(int(x) if x == y else None for x, y in zip(a.shape, b.shape))


class _Tracer(fx.Tracer):
    """Leaves are exactly the modules an emitter converts whole; everything else (torch.nn modules included) is
    traced through."""

    def __init__(self, is_leaf: Callable[[torch.nn.Module], bool]) -> None:
        super().__init__()
        self._is_leaf = is_leaf

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        return self._is_leaf(m)


class _Recorder(fx.Interpreter):
    """An interpreter that keeps every node's value."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.seen: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        self.seen[n] = value
        return value


def trace(module: torch.nn.Module, is_leaf: Callable[[torch.nn.Module], bool]) -> fx.GraphModule:
    """fx-trace `module` with the given leaf rule; a CaptureError names the failure."""
    tracer = _Tracer(is_leaf)
    try:
        graph = tracer.trace(module)
    except Exception as exc:  # fx raises plain TraceError / TypeError / RuntimeError from user code
        raise CaptureError(f"torch.fx cannot trace {type(module).__name__}: {str(exc).splitlines()[0]}", stage=STAGE,
                           hint="a layers model needs forward() free of data-dependent Python control flow; "
                                "convert to a graph model instead (--web-format graph)") from exc
    return fx.GraphModule(tracer.root, graph, type(module).__name__)


def owners(gm: fx.GraphModule) -> dict[fx.Node, str]:
    """The innermost module path each node was traced in ('' for the root); a call_module node's own path."""
    found: dict[fx.Node, str] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            found[node] = str(node.target)
            continue
        stack = node.meta.get("nn_module_stack") or {}
        paths = [str(v[0]) if isinstance(v, tuple) else str(k) for k, v in stack.items()]
        found[node] = paths[-1] if paths else ""
    return found


def probe_inputs(inputs: Sequence[torch.Tensor], dynamic_axes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """The example inputs grown by one along the batch axis and each declared dynamic axis (the first slice
    repeated, so integer inputs stay valid)."""
    grown = []
    for tensor, axes in zip(inputs, dynamic_axes):
        for axis in sorted({0, *axes}):
            tensor = torch.cat([tensor, tensor.narrow(axis, 0, 1)], dim=axis)
        grown.append(tensor)
    return grown


def run_all(gm: fx.GraphModule, inputs: Sequence[torch.Tensor]) -> dict[fx.Node, Any]:
    """Every node's value on `inputs` (no autograd)."""
    recorder = _Recorder(gm)
    try:
        with torch.no_grad():
            recorder.run(*inputs)
    except Exception as exc:
        raise CaptureError(f"running the traced {gm.__class__.__name__} failed: {exc}", stage=STAGE) from exc
    return recorder.seen


def capture(module: torch.nn.Module, inputs: Sequence[torch.Tensor], is_leaf: Callable[[torch.nn.Module], bool],
            dynamic_axes: Mapping[int, Sequence[int]] | None = None) -> Captured:
    """Trace `module` and run it on `inputs` and on a probe (batch + 1, and each input's dynamic axes + 1)."""
    was_training = module.training
    module.eval()
    try:
        gm = trace(module, is_leaf)
        axes = [list((dynamic_axes or {}).get(i, ())) for i in range(len(inputs))]
        values = run_all(gm, inputs)
        probe = run_all(gm, probe_inputs(inputs, axes))
    finally:
        module.train(was_training)
    return Captured(module=module, graph_module=gm, values=values, probe_values=probe, owners=owners(gm))
