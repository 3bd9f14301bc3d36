"""Large Tanh nodes written as 2 * sigmoid(2 x) - 1.

TF.js 4.22's wasm Tanh kernel is scalar code, ~20 ns an element: 17 ms for a 1x256x256x12 tensor, where the
wasm Sigmoid (XNNPACK's vectorized one) takes 1.8 ms, so tanh(x) = 2 sigmoid(2 x) - 1 in four kernels takes
~2.5 ms, within 2e-7 of Tanh (`node benchmarks/tanh_forms.mjs`; a pixel-shuffle super-resolution net spent a
quarter of its run in two Tanh nodes). Each extra kernel costs ~10-20 us whatever its size, so small tensors
(an LSTM step's [1, 256]) keep Tanh: the form is written from `MIN_ELEMENTS` elements up (the known sizes' product, so a None batch
counts as 1), for float32 nodes of known rank (found before the fusion passes, rewritten after the un-fuse guard has split
a Tanh out of a fused contraction, as wasm has no fused Tanh). On the cpu backend the four kernels are ~2x
slower than its Tanh (plain JS `Math.tanh`); the web model is written for wasm first, as bridge.tfjs.gather_rows
explains.
"""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2

from bridge.tfjs.graph_names import (data_inputs, format_ref, make_const, make_node, node_map, tensor_shapes,
                                     unique_name)

MIN_ELEMENTS = 4096  # below it the three extra kernels' fixed cost outweighs Tanh's per-element cost


def _large(shape: list[int | None] | None) -> bool:
    """At least `MIN_ELEMENTS` elements whatever the unknown sizes (a batch of None) turn out to be (>= 1)."""
    return shape is not None and math.prod(d for d in shape if d is not None) >= MIN_ELEMENTS


def _ends_in_tanh(node: node_def_pb2.NodeDef) -> bool:
    """A Tanh, or a fused contraction whose last fused op is Tanh (split into a Tanh of that name later)."""
    if "T" not in node.attr or node.attr["T"].type != types_pb2.DT_FLOAT:
        return False
    return node.op == "Tanh" or ("fused_ops" in node.attr and list(node.attr["fused_ops"].list.s[-1:]) == [b"Tanh"])


def large_tanhs(graph_def: graph_pb2.GraphDef) -> set[str]:
    """Names of the main-graph float32 nodes ending in a Tanh of at least `MIN_ELEMENTS` elements, by TF's shape
    inference (unknown sizes count as 1, unknown ranks are left out). Run it while the graph holds TF ops only; the names stay valid through
    the fusion passes, which give a split-off Tanh its fused node's name."""
    ending = [n.name for n in graph_def.node if _ends_in_tanh(n)]
    if not ending:
        return set()
    shapes = tensor_shapes(graph_def, ending)
    return {name for name in ending if _large(shapes[name])}


def tanhs_as_sigmoids(graph_def: graph_pb2.GraphDef, names: set[str]) -> int:
    """Rewrite every main-graph Tanh named in `names` (`large_tanhs`) as ``Sub(Mul(Sigmoid(Mul(x, 2)), 2), 1)``,
    in place; the Sub keeps the Tanh's name, so readers are untouched, and its control inputs move to the first
    Mul. Returns how many were rewritten."""
    large = [n for n in graph_def.node if n.op == "Tanh" and n.name in names]
    if not large:
        return 0
    taken = set(node_map(graph_def))
    two = make_const(unique_name(taken, "tanh_as_sigmoid/two"), np.array(2.0, np.float32))
    one = make_const(unique_name(taken, "tanh_as_sigmoid/one"), np.array(1.0, np.float32))
    added = [two, one]
    for node in large:
        controls = [text for text in node.input if text.startswith("^")]
        doubled = make_node(unique_name(taken, f"{node.name}/doubled"), "Mul",
                            [format_ref(data_inputs(node)[0]), two.name, *controls], like=node, copy_attrs=("T",))
        sigmoid = make_node(unique_name(taken, f"{node.name}/sigmoid"), "Sigmoid", [doubled.name], like=node,
                            copy_attrs=("T",))
        scaled = make_node(unique_name(taken, f"{node.name}/scaled"), "Mul", [sigmoid.name, two.name], like=node,
                           copy_attrs=("T",))
        added += [doubled, sigmoid, scaled]
        node.op = "Sub"
        del node.input[:]
        node.input.extend([scaled.name, one.name])
    graph_def.node.extend(added)
    return len(large)
