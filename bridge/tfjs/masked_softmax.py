"""Softmax over scores masked with the float32 minimum, spelled out so every TF.js backend gives PyTorch's numbers.

Attention masks fill the scores they hide with torch.finfo(float32).min (-3.4e38). When a whole row is hidden (the
padding query rows of a 2-D mask, as in DeBERTa), PyTorch's softmax gives every key the same weight. TF.js gets
such rows wrong (measured in Chromium on DeBERTa-v2: max |Δ| 0.94 in the attention weights, 0.26 at the output):
its WebGL softmax computes exp(x - logSumExp(x)), where at -3.4e38 the log of the row length is lost to rounding
(the row comes out all ones), and its WebGPU softmax gives NaN. Spelling it out as exp(x - max(x)) / sum(...) is not
enough for WebGL either, whose max reduction starts from -1e20 and so reads a row below that as -1e20. So scores are
first clamped to CLAMP (-1e19, far below any real score: exp(CLAMP - max) is 0 in float32 as exp(-3.4e38 - max)
is), then softmax is spelled out: a hidden row becomes 1/n, as in PyTorch. Only Softmax nodes fed by such a mask
are rewritten (five more ops each), so attention without one keeps the single fused kernel.
"""

from __future__ import annotations

import math

from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2

from bridge.tfjs.graph_names import ChainBuilder, const_value, node_map, parse_ref

HUGE_NEGATIVE = -1e30  # a mask fill at or below this is meant as "minus infinity"
CLAMP = -1e19  # above WebGL's max-reduction start (-1e20); exp(CLAMP - any real score) is 0 in float32
# Ops a mask passes through between its fill and the softmax (the search looks this far up the graph).
_MASK_PATH = {"SelectV2", "Select", "AddV2", "Add", "Sub", "Mul", "Reshape", "Identity", "Transpose", "ExpandDims",
              "BroadcastTo", "Squeeze"}
_SEARCH_DEPTH = 4
_FILL_ELEMENTS = 4096


def _holds_huge_negative(node: node_def_pb2.NodeDef) -> bool:
    """True for a small float Const (a fill value, not a weight) whose smallest value is at or below
    HUGE_NEGATIVE."""
    if node.op != "Const" or node.attr["dtype"].type not in (types_pb2.DT_FLOAT, types_pb2.DT_HALF):
        return False
    if math.prod(d.size for d in node.attr["value"].tensor.tensor_shape.dim) > _FILL_ELEMENTS:
        return False
    value = const_value(node)
    return value is not None and value.size > 0 and float(value.min()) <= HUGE_NEGATIVE


def fed_by_huge_mask(name: str, nodes: dict[str, node_def_pb2.NodeDef], depth: int = _SEARCH_DEPTH) -> bool:
    """True when the tensor `name` is (within `depth` mask-path ops) built from a huge-negative Const."""
    node = nodes.get(parse_ref(name).node)
    if node is None:
        return False
    if _holds_huge_negative(node):
        return True
    if depth == 0 or node.op not in _MASK_PATH:
        return False
    return any(fed_by_huge_mask(ref, nodes, depth - 1) for ref in node.input if not ref.startswith("^"))


def _spelled_out(node: node_def_pb2.NodeDef, taken: set[str]) -> list[node_def_pb2.NodeDef]:
    """With x = max(scores, CLAMP): exp(x - max(x)) / sum(exp(x - max(x))) over the last axis; the last node
    takes the Softmax's name."""
    builder = ChainBuilder(node, taken, node.attr["T"].type, prefix="masked_softmax")
    axis = builder.const([-1], types_pb2.DT_INT32)
    reduce_attrs = {"keep_dims": True, "Tidx": ("type", types_pb2.DT_INT32)}
    x = builder.add("Maximum", [node.input[0], builder.const(CLAMP)])
    shifted = builder.add("Exp", [builder.add("Sub", [x, builder.add("Max", [x, axis], reduce_attrs)])])
    builder.add("RealDiv", [shifted, builder.add("Sum", [shifted, axis], reduce_attrs)])
    chain = builder.finish()
    first_op = next(n for n in chain if n.op != "Const")
    first_op.input.extend(ref for ref in node.input if ref.startswith("^"))  # control inputs: on the first op
    return chain


def spell_out_masked_softmax(graph_def: graph_pb2.GraphDef) -> int:
    """Rewrite every main-graph Softmax whose input comes from a huge-negative mask (module doc). Returns how many
    were rewritten."""
    nodes = node_map(graph_def)
    targets = {n.name for n in graph_def.node if n.op == "Softmax" and fed_by_huge_mask(n.input[0], nodes)}
    if not targets:
        return 0
    taken = set(nodes)
    rebuilt: list[node_def_pb2.NodeDef] = []
    for node in graph_def.node:
        rebuilt += _spelled_out(node, taken) if node.name in targets else [node]
    del graph_def.node[:]
    graph_def.node.extend(rebuilt)
    return len(targets)
