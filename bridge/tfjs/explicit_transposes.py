"""Matmuls with a transposed activation operand get their Transpose back as a node of its own.

Grappler's arithmetic optimizer folds `MatMul(a, Transpose(b))` into `MatMul(a, b, transpose_b=True)`. TF.js 4.22's
wasm backend sends every matmul with a transpose flag to its naive loop instead of XNNPACK (measured: 5-25x slower
on attention-sized operands), while a Transpose of the same operand costs a few microseconds. So after grappler's
last run, each rank-2 `MatMul` or `_FusedMatMul` with `transpose_a` or `transpose_b` set on an operand that is
computed (not a Const) reads an explicit `Transpose` of that operand, and the flag is cleared. Exact: the same
products and sums. Const operands keep their flag (a weight would then be transposed on every call).
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import graph_pb2, types_pb2

from bridge.tfjs.graph_names import (const_behind_identities, make_const, make_node, node_map, parse_ref,
                                     unique_name)

MATMUL_OPS = ("MatMul", "_FusedMatMul")
FLAGS = (("transpose_a", 0), ("transpose_b", 1))  # the flag and the input it applies to
SWAP = (1, 0)  # a rank-2 transpose


def flagged_operands(graph_def: graph_pb2.GraphDef) -> list[tuple[str, str]]:
    """(matmul node, flag) for every transpose flag on a computed operand of a main-graph rank-2 matmul."""
    nodes = node_map(graph_def)
    found = []
    for node in graph_def.node:
        if node.op not in MATMUL_OPS:
            continue
        for flag, index in FLAGS:
            operand = parse_ref(node.input[index]).node
            if flag in node.attr and node.attr[flag].b and const_behind_identities(nodes, operand) is None:
                found.append((node.name, flag))
    return found


def explicit_transposes(graph_def: graph_pb2.GraphDef) -> int:
    """Give every flagged computed operand (`flagged_operands`) its own Transpose node and clear the flag, in
    place. Returns how many Transposes were added."""
    flagged = flagged_operands(graph_def)
    if not flagged:
        return 0
    nodes = node_map(graph_def)
    taken = set(nodes)
    perm = make_const(unique_name(taken, "explicit_transposes/swap"), np.array(SWAP, np.int32), types_pb2.DT_INT32)
    graph_def.node.append(perm)
    for name, flag in flagged:
        matmul = nodes[name]
        index = dict(FLAGS)[flag]
        transpose = make_node(unique_name(taken, f"{name}/{flag}"), "Transpose", [matmul.input[index], perm.name],
                              {"Tperm": ("type", types_pb2.DT_INT32)}, like=matmul, copy_attrs=("T",))
        graph_def.node.append(transpose)
        matmul.input[index] = transpose.name
        matmul.attr[flag].b = False
    return len(flagged)
