"""Rewrite ops TF.js 4.22.0 lacks into ops it has, and strip oneDNN-only ops grappler may leave behind.

A small table: op name -> function building the replacement nodes (the last one keeps the original node's name, so
consumers need no rewiring). Renames that touch no inputs are also applied inside library functions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2

from bridge.errors import ConversionError
from bridge.tfjs.graph_names import (ChainBuilder, const_value, consumers, dedupe_control_inputs, make_node,
                                     node_map, parse_ref, unique_name)

STAGE = "tfjs-write"
# A rewrite builds the replacement with the builder; returning False leaves the node as it is.
Rewrite = Callable[[node_def_pb2.NodeDef, ChainBuilder, list[str]], "bool | None"]


def _erfc(node: node_def_pb2.NodeDef, b: ChainBuilder, x: list[str]) -> None:
    b.add("Sub", [b.const(1.0), b.add("Erf", [x[0]])])


def _softsign(node: node_def_pb2.NodeDef, b: ChainBuilder, x: list[str]) -> None:
    b.add("RealDiv", [x[0], b.add("AddV2", [b.add("Abs", [x[0]]), b.const(1.0)])])


def _swish(node: node_def_pb2.NodeDef, b: ChainBuilder, x: list[str]) -> None:
    b.add("Mul", [x[0], b.add("Sigmoid", [x[0]])])


def _mish(node: node_def_pb2.NodeDef, b: ChainBuilder, x: list[str]) -> None:
    b.add("Mul", [x[0], b.add("Tanh", [b.add("Softplus", [x[0]])])])


def _layer_norm(node: node_def_pb2.NodeDef, b: ChainBuilder, x: list[str]) -> None:
    """oneDNN's _MklLayerNorm(x, scale, offset): normalise over the last axis."""
    axis = b.const(np.asarray([-1], np.int32), types_pb2.DT_INT32)
    mean = b.add("Mean", [x[0], axis], {"keep_dims": True, "Tidx": ("type", types_pb2.DT_INT32)})
    centered = b.add("Sub", [x[0], mean])
    var = b.add("Mean", [b.add("Square", [centered]), axis],
                {"keep_dims": True, "Tidx": ("type", types_pb2.DT_INT32)})
    inv = b.add("Rsqrt", [b.add("AddV2", [var, b.const(node.attr["epsilon"].f)])])
    b.add("AddV2", [b.add("Mul", [b.add("Mul", [centered, inv]), x[1]]), x[2]])


_BN_ACTIVATIONS = {"Relu": "Relu", "Relu6": "Relu6", "Elu": "Elu", "LeakyRelu": "LeakyRelu"}


def _batch_norm_ex(node: node_def_pb2.NodeDef, b: ChainBuilder, x: list[str]) -> None:
    """_FusedBatchNormEx (inference): FusedBatchNormV3 [+ side input] [+ activation]."""
    if node.attr["is_training"].b:
        raise ConversionError(f"{node.name}: training-mode _FusedBatchNormEx cannot run in TF.js", stage=STAGE)
    y = b.add("FusedBatchNormV3", x[:5], {
        "U": ("type", node.attr["U"].type), "epsilon": node.attr["epsilon"].f,
        "data_format": node.attr["data_format"].s.decode() or "NHWC", "is_training": False})
    if node.attr["num_side_inputs"].i:
        y = b.add("AddV2", [y, x[5]])
    mode = node.attr["activation_mode"].s.decode()
    if mode and mode != "Identity":
        if mode not in _BN_ACTIVATIONS:
            raise ConversionError(f"{node.name}: _FusedBatchNormEx activation {mode!r} is not supported",
                                  stage=STAGE)
        b.add(_BN_ACTIVATIONS[mode], [y])


def _transposed(b: ChainBuilder, x: str, perm: list[int]) -> str:
    if perm == sorted(perm):
        return x
    return b.add("Transpose", [x, b.const(np.asarray(perm, np.int32), types_pb2.DT_INT32)],
                 {"Tperm": ("type", types_pb2.DT_INT32)})


def _einsum(node: node_def_pb2.NodeDef, b: ChainBuilder, x: list[str]) -> bool:
    """Two-operand Einsum that is a batched matmul (one free index per side, one contracted index, the rest shared
    batch indices) as Transpose + BatchMatMulV2 + Transpose: wasm has no Einsum kernel. Other equations stay."""
    equation = node.attr["equation"].s.decode().replace(" ", "")
    inputs, _, out = equation.partition("->")
    terms = inputs.split(",")
    if len(x) != 2 or len(terms) != 2 or "." in equation or any(len(set(t)) != len(t) for t in (*terms, out)):
        return False
    a, c = terms
    batch = [i for i in out if i in a and i in c]
    contract = [i for i in a if i in c and i not in out]
    left, right = [i for i in a if i not in c], [i for i in c if i not in a]
    if len(contract) != 1 or len(left) != 1 or len(right) != 1 or sorted(out) != sorted(batch + left + right):
        return False
    if sorted(a) != sorted(batch + left + contract) or sorted(c) != sorted(batch + contract + right):
        return False
    lhs = _transposed(b, x[0], [a.index(i) for i in batch + left + contract])
    rhs = _transposed(b, x[1], [c.index(i) for i in batch + contract + right])
    product = b.add("BatchMatMulV2", [lhs, rhs], {"adj_x": False, "adj_y": False})
    order = batch + left + right
    result = _transposed(b, product, [order.index(i) for i in out])
    if result == product:
        b.add("Identity", [product])
    return True


# op -> rewrite. Each builds nodes from the node's data inputs; the last node added takes the node's name.
REWRITES: dict[str, Rewrite] = {
    "Einsum": _einsum,
    "Erfc": _erfc,
    "Softsign": _softsign,
    "_MklSwish": _swish,
    "_MklFusedMish": _mish,
    "_MklLayerNorm": _layer_norm,
    "_FusedBatchNormEx": _batch_norm_ex,
}


def _batch_matmul_v3(node: node_def_pb2.NodeDef) -> bool:
    """BatchMatMulV3 with one dtype everywhere is BatchMatMulV2 (the JS runtime maps only V1/V2)."""
    ta, tb, tout = (node.attr[k].type for k in ("Ta", "Tb", "Tout"))
    if not ta == tb == tout:
        return False
    for key in ("Ta", "Tb", "Tout"):
        del node.attr[key]
    node.op = "BatchMatMulV2"
    node.attr["T"].type = tout
    return True


def _rename(new_op: str) -> Callable[[node_def_pb2.NodeDef], bool]:
    def rename(node: node_def_pb2.NodeDef) -> bool:
        node.op = new_op
        return True
    return rename


# In-place renames (inputs untouched): also safe inside library functions.
RENAMES: dict[str, Callable[[node_def_pb2.NodeDef], bool]] = {
    "BatchMatMulV3": _batch_matmul_v3,
    "Rint": _rename("Round"),  # both round half to even
    "Inv": _rename("Reciprocal"),
}


def apply_rewrites(graph_def: graph_pb2.GraphDef) -> dict[str, int]:
    """Rewrite every op in `REWRITES` (main graph) and `RENAMES` (main graph and library functions).
    Returns how many nodes of each op were rewritten."""
    counts: dict[str, int] = {}
    bodies = [graph_def.node] + [f.node_def for f in graph_def.library.function]
    for nodes in bodies:
        for node in nodes:
            if node.op in RENAMES:
                op = node.op
                if RENAMES[op](node):
                    counts[op] = counts.get(op, 0) + 1
    if not any(node.op in REWRITES for node in graph_def.node):
        return counts
    taken = set(node_map(graph_def))
    cons = consumers(graph_def)
    rebuilt: list[node_def_pb2.NodeDef] = []
    for node in graph_def.node:
        if node.op not in REWRITES:
            rebuilt.append(node)
            continue
        if any(ref.index != 0 and not ref.control for _, ref in cons.get(node.name, [])):
            raise ConversionError(f"cannot rewrite {node.op} node {node.name}: its extra outputs are used",
                                  stage=STAGE)
        data = [s for s in node.input if not s.startswith("^")]
        controls = [s for s in node.input if s.startswith("^")]
        dtype = node.attr["T"].type if "T" in node.attr else types_pb2.DT_FLOAT
        builder = ChainBuilder(node, taken, dtype, prefix="rewritten")
        if REWRITES[node.op](node, builder, data) is False:
            rebuilt.append(node)
            continue
        new_nodes = builder.finish()
        for new in new_nodes:  # keep control dependencies on the first op that reads data
            if new.op != "Const":
                new.input.extend(controls)
                break
        rebuilt += new_nodes
        counts[node.op] = counts.get(node.op, 0) + 1
    del graph_def.node[:]
    graph_def.node.extend(rebuilt)
    return counts


def reroute_switch_control_inputs(graph_def: graph_pb2.GraphDef) -> int:
    """Replace each control input ``^S`` on a Switch ``S`` by ``^S/control_pivot``, an Identity of the Switch's data
    input. In TensorFlow ``^S`` means "after S ran"; the JS runtime reads it as S's output 0 (the false/exit branch),
    which is dead while a loop iterates, so nodes waiting on it (function-inlining NoOps, NextIteration) never run.
    Returns the number of control inputs rerouted."""
    nodes = node_map(graph_def)
    taken = set(nodes)
    pivots: dict[str, str] = {}
    new_nodes: list[node_def_pb2.NodeDef] = []
    changed = 0
    for node in graph_def.node:
        for i, text in enumerate(node.input):
            ref = parse_ref(text)
            switch = nodes.get(ref.node)
            if not ref.control or switch is None or switch.op not in ("Switch", "RefSwitch"):
                continue
            if ref.node not in pivots:
                pivot = make_node(unique_name(taken, f"{ref.node}/control_pivot"), "Identity",
                                  [switch.input[0]], {"T": ("type", switch.attr["T"].type)})
                pivots[ref.node] = pivot.name
                new_nodes.append(pivot)
            node.input[i] = f"^{pivots[ref.node]}"
            changed += 1
        if changed:
            dedupe_control_inputs(node)
    graph_def.node.extend(new_nodes)
    return changed


def _split_shrink(node: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef],
                  taken: set[str]) -> list[node_def_pb2.NodeDef] | None:
    """The replacement for one StridedSlice with shrink axes and a non-unit stride, or None if not applicable."""
    shrink, ellipsis = node.attr["shrink_axis_mask"].i, node.attr["ellipsis_mask"].i
    refs = [parse_ref(s) for s in node.input if not s.startswith("^")]
    consts = [nodes.get(r.node) for r in refs[1:4]]
    if not shrink or node.attr["new_axis_mask"].i or len(refs) != 4 or \
            any(c is None or c.op != "Const" or r.index for c, r in zip(consts, refs[1:])):
        return None
    begin, end, strides = (const_value(c).astype(np.int64) for c in consts)  # type: ignore[arg-type]
    if np.all(strides == 1):
        return None
    n = len(begin)
    shrunk = [i for i in range(n) if shrink >> i & 1]
    ellipsis_at = next((i for i in range(n) if ellipsis >> i & 1), None)
    end_mask = node.attr["end_mask"].i
    for i in shrunk:
        strides[i] = 1
        if begin[i] == -1:
            end_mask |= 1 << i
        else:
            end[i] = begin[i] + 1
    axes = [i if ellipsis_at is None or i < ellipsis_at else i - n for i in shrunk]
    index_type = consts[0].attr["dtype"].type  # type: ignore[union-attr]
    b = ChainBuilder(node, taken, node.attr["T"].type, prefix="unshrunk")
    sliced = b.add("StridedSlice", [node.input[0], node.input[1], b.const(end, index_type),
                                     b.const(strides, index_type)],
                   {"Index": ("type", index_type), "begin_mask": node.attr["begin_mask"].i, "end_mask": end_mask,
                    "ellipsis_mask": ellipsis, "new_axis_mask": 0, "shrink_axis_mask": 0})
    squeeze_dims = make_node("", "Squeeze", []).attr["squeeze_dims"]
    squeeze_dims.list.i.extend(axes)
    b.add("Squeeze", [sliced], {"squeeze_dims": squeeze_dims})
    out = b.finish()
    out[1].input.extend(s for s in node.input if s.startswith("^"))
    return out


def split_strided_slice_shrink(graph_def: graph_pb2.GraphDef) -> int:
    """TF.js 4.22.0 computes StridedSlice wrongly when a shrink axis is combined with a non-unit stride (checked on
    wasm and cpu: ``x[:, 1:5:2, :, 1]``, ``x[:, :, ::-1, 1]``). Rewrite those into a StridedSlice without shrink
    followed by Squeeze. Slices with new axes or non-Const bounds are left alone. Returns the count rewritten."""
    nodes = node_map(graph_def)
    taken = set(nodes)
    rebuilt: list[node_def_pb2.NodeDef] = []
    count = 0
    for node in graph_def.node:
        replacement = _split_shrink(node, nodes, taken) if node.op == "StridedSlice" else None
        if replacement is None:
            rebuilt.append(node)
        else:
            rebuilt += replacement
            count += 1
    if count:
        del graph_def.node[:]
        graph_def.node.extend(rebuilt)
    return count


# TF.js ops whose mapper reads a list of inputs running to the end of the node's inputs (AddN, Pack, IdentityN,
# ShapeN, Einsum, Concat, the fused ops' extra args) or to one before it (ConcatV2's values, then its axis).
VARIADIC_OPS = frozenset({"AddN", "Pack", "IdentityN", "ShapeN", "Einsum", "Concat", "ConcatV2", "_FusedConv2D",
                          "_FusedMatMul", "FusedDepthwiseConv2dNative"})


def _first_input_dtype(node: node_def_pb2.NodeDef) -> int:
    value = node.attr["T"]
    return value.list.type[0] if value.HasField("list") and value.list.type else value.type


def route_variadic_control_inputs(graph_def: graph_pb2.GraphDef) -> int:
    """Move control inputs off the ops in VARIADIC_OPS onto an Identity of their first data input (main graph:
    control-flow-v2 function bodies were not seen to carry such inputs).

    The JS runtime strips the ``^`` of a control input and keeps it among the node's inputs, so such an op reads
    it as one more list item: an AddN inside a lowered while loop, whose loop-invariant operands carry
    ``^loop_body_control`` (the frame pivot, int32), fails with "All tensors passed to tf.addN() must have the same
    dtype" (the ONNX route's GRU/LSTM with a dynamic length); a ConcatV2 would take it for its axis. An Identity
    reads input 0 only, so it carries the dependency (and the loop frame) unchanged. Returns the nodes changed."""
    nodes = graph_def.node
    taken = {node.name for node in nodes}
    added: list[node_def_pb2.NodeDef] = []
    for node in nodes:
        controls = [s for s in node.input if s.startswith("^")]
        data = [s for s in node.input if not s.startswith("^")]
        if node.op not in VARIADIC_OPS or not controls or not data:
            continue
        carrier = make_node(unique_name(taken, f"{node.name}/after_control"), "Identity", [data[0], *controls],
                            {"T": ("type", _first_input_dtype(node))})
        added.append(carrier)
        del node.input[:]
        node.input.extend([carrier.name, *data[1:]])
    nodes.extend(added)
    return len(added)
