"""Fusions for the TF.js runtime: batch-norm folding, Add->BiasAdd, PReLU, depthwise fusion, and the fused-op guard.

Every pass edits a GraphDef in place and returns how many rewrites it made. Nodes named in `protected` (signature
inputs and fetch nodes) are never removed or renamed. The guard `unfuse_unsupported` is the last word: every fused
node the TF.js 4.22.0 runtime cannot execute (on both the wasm and cpu backends) is split back into plain ops.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2

from bridge.errors import ConversionError
from bridge.tfjs.graph_names import (ChainBuilder, NodeRef, const_value, consumers, data_inputs, format_ref,
                                     make_const, make_node, node_map, parse_ref, remove_nodes, unique_name)

STAGE = "tfjs-write"
CONTRACTIONS = ("Conv2D", "DepthwiseConv2dNative", "MatMul")
BATCH_NORMS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
# Fused op -> the plain op it starts with.
FUSED_BASE_OP: dict[str, str] = {
    "_FusedConv2D": "Conv2D", "_FusedMatMul": "MatMul", "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative",
    "_FusedDepthwiseConv2dNative": "DepthwiseConv2dNative", "_MklFusedBatchMatMulV2": "BatchMatMulV2",
    "_FusedConv3D": "Conv3D",
}
# Fused op -> the op name the JS runtime knows it by (absent: JS cannot run it at all).
JS_FUSED_OP: dict[str, str] = {
    "_FusedConv2D": "_FusedConv2D", "_FusedMatMul": "_FusedMatMul",
    "FusedDepthwiseConv2dNative": "FusedDepthwiseConv2dNative",
    "_FusedDepthwiseConv2dNative": "FusedDepthwiseConv2dNative",
}
# Activations fused into conv/matmul/depthwise that both the wasm and the cpu backend execute (checked in
# tests/test_tfjs_table.py on both backends). wasm lacks tanh/gelu/hardswish/swish fused kernels.
JS_FUSED_ACTIVATIONS: tuple[str, ...] = ("Relu", "Relu6", "Elu", "LeakyRelu", "Sigmoid", "Prelu")
# The JS op mapper of FusedDepthwiseConv2dNative does not read `leakyrelu_alpha` (wasm then uses 0, cpu 0.2).
JS_DEPTHWISE_ACTIVATIONS: tuple[str, ...] = tuple(a for a in JS_FUSED_ACTIVATIONS if a != "LeakyRelu")


def js_activations(op: str) -> tuple[str, ...]:
    """The activations the JS runtime executes fused into fused contraction `op`."""
    return JS_DEPTHWISE_ACTIVATIONS if JS_FUSED_OP.get(op) == "FusedDepthwiseConv2dNative" else JS_FUSED_ACTIVATIONS


_CONV_ATTRS = ("T", "strides", "padding", "explicit_paddings", "data_format", "dilations")
_FUSION_ATTRS = ("fused_ops", "num_args", "epsilon", "leakyrelu_alpha", "TArgs", "num_host_args")
_PLAIN_UNARY = ("Relu", "Relu6", "Elu", "Sigmoid", "Tanh", "Selu", "Softplus")


def _is_float32(node: node_def_pb2.NodeDef, attr: str = "T") -> bool:
    return attr in node.attr and node.attr[attr].type == types_pb2.DT_FLOAT


def _is_const(node: node_def_pb2.NodeDef | None) -> bool:
    return node is not None and node.op == "Const"


def _data_consumers(cons: dict[str, list[tuple[str, NodeRef]]], name: str) -> list[tuple[str, NodeRef]]:
    return [(c, r) for c, r in cons.get(name, []) if not r.control]


def _sole_consumer(cons: dict[str, list[tuple[str, NodeRef]]], name: str) -> str | None:
    """The only node reading `name` (through output 0, data edges only, no control edges at all), else None."""
    edges = cons.get(name, [])
    if not edges or any(r.control or r.index != 0 for _, r in edges):
        return None
    names = {c for c, _ in edges}
    return next(iter(names)) if len(names) == 1 else None


def _fused_ops(node: node_def_pb2.NodeDef) -> list[str]:
    return [s.decode() for s in node.attr["fused_ops"].list.s] if "fused_ops" in node.attr else []


def _nhwc(node: node_def_pb2.NodeDef) -> bool:
    return "data_format" not in node.attr or node.attr["data_format"].s in (b"", b"NHWC")


# ---------------------------------------------------------------------------------------------------------------
# Contractions with a Const weight: how many output channels and how to scale them.

@dataclass(frozen=True)
class _Contraction:
    node: node_def_pb2.NodeDef
    weight: node_def_pb2.NodeDef
    channels: int
    rank: int  # rank of the contraction's output

    def scaled_weight(self, scale: np.ndarray) -> np.ndarray:
        """The weight with output channel c multiplied by scale[c]."""
        w = const_value(self.weight)
        if self.node.op == "Conv2D":
            return w * scale
        if self.node.op == "DepthwiseConv2dNative":
            return w * scale.reshape(w.shape[2], w.shape[3])
        if self.node.attr["transpose_b"].b:
            return w * scale[:, None]
        return w * scale


def _contraction(node: node_def_pb2.NodeDef | None, nodes: dict[str, node_def_pb2.NodeDef]) -> _Contraction | None:
    """Describe `node` if it is an NHWC float32 Conv2D/DepthwiseConv2dNative or MatMul with a Const weight."""
    if node is None or node.op not in CONTRACTIONS or not _is_float32(node) or not _nhwc(node):
        return None
    refs = data_inputs(node)
    if len(refs) != 2 or refs[1].index != 0:
        return None
    weight = nodes.get(refs[1].node)
    if not _is_const(weight) or weight.attr["dtype"].type != types_pb2.DT_FLOAT:
        return None
    shape = [d.size for d in weight.attr["value"].tensor.tensor_shape.dim]
    if node.op == "Conv2D" and len(shape) == 4:
        return _Contraction(node, weight, shape[3], 4)
    if node.op == "DepthwiseConv2dNative" and len(shape) == 4:
        return _Contraction(node, weight, shape[2] * shape[3], 4)
    if node.op == "MatMul" and len(shape) == 2:
        return _Contraction(node, weight, shape[0] if node.attr["transpose_b"].b else shape[1], 2)
    return None


def _per_channel(node: node_def_pb2.NodeDef | None, channels: int, rank: int) -> np.ndarray | None:
    """A float32 Const that broadcasts along the last axis only (shape [], [C], [1, .., C]) as a [C] vector."""
    if not _is_const(node) or node.attr["dtype"].type != types_pb2.DT_FLOAT:
        return None
    value = const_value(node)
    if value.ndim > rank or any(d != 1 for d in value.shape[:-1]):
        return None
    if value.ndim and value.shape[-1] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1) if value.ndim else value, (channels,)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Batch-norm folding.

@dataclass
class _Fold:
    """A contraction followed by a chain of per-channel affine nodes, folded into new weight and bias."""

    contraction: _Contraction
    chain: list[node_def_pb2.NodeDef]
    scale: np.ndarray
    bias: np.ndarray


def _affine_step(node: node_def_pb2.NodeDef, prev: str, nodes: dict[str, node_def_pb2.NodeDef],
                 fold: _Fold) -> bool:
    """Apply `node` (reading `prev`) to the fold's scale/bias if it is a per-channel affine op; False otherwise."""
    refs = data_inputs(node)
    if node.op not in ("BiasAdd", "Add", "AddV2", "Sub", "Mul", "RealDiv") or len(refs) != 2:
        return False
    if not _is_float32(node) or (node.op == "BiasAdd" and not _nhwc(node)):
        return False
    mine = [i for i, r in enumerate(refs) if r.node == prev and r.index == 0]
    if len(mine) != 1 or (node.op in ("BiasAdd", "Sub", "RealDiv") and mine[0] != 0):
        return False
    other = nodes.get(refs[1 - mine[0]].node)
    c = fold.contraction
    value = _per_channel(other, c.channels, c.rank)
    if value is None:
        return False
    if node.op in ("BiasAdd", "Add", "AddV2"):
        fold.bias = fold.bias + value
    elif node.op == "Sub":
        fold.bias = fold.bias - value
    elif node.op == "Mul":
        fold.scale, fold.bias = fold.scale * value, fold.bias * value
    elif np.all(value != 0):  # RealDiv by a non-zero constant
        fold.scale, fold.bias = fold.scale / value, fold.bias / value
    else:
        return False
    return True


def _batch_norm_step(node: node_def_pb2.NodeDef, prev: str, nodes: dict[str, node_def_pb2.NodeDef],
                     cons: dict[str, list[tuple[str, NodeRef]]], fold: _Fold) -> bool:
    """Apply an inference batch norm (all operands Const, only output 0 read) to the fold; False otherwise."""
    refs = data_inputs(node)
    if node.op not in BATCH_NORMS or not refs or refs[0] != NodeRef(prev):
        return False
    if any(r.index != 0 for _, r in _data_consumers(cons, node.name)):
        return False
    if node.attr["is_training"].b or not _nhwc(node):
        return False
    if len(refs) != 5 or not all(_is_const(nodes.get(r.node)) for r in refs[1:]):
        return False
    # inputs: x, scale (gamma), offset (beta), mean, variance
    gamma, beta, mean, var = (const_value(nodes[r.node]).astype(np.float64) for r in refs[1:])
    if not all(v.shape == (fold.contraction.channels,) for v in (mean, var, beta, gamma)):
        return False
    scale = gamma / np.sqrt(var + node.attr["epsilon"].f)
    fold.scale = (fold.scale * scale).astype(np.float32)
    fold.bias = ((fold.bias - mean) * scale + beta).astype(np.float32)
    return True


def _find_fold(c: _Contraction, nodes: dict[str, node_def_pb2.NodeDef],
               cons: dict[str, list[tuple[str, NodeRef]]], protected: Collection[str]) -> _Fold | None:
    fold = _Fold(c, [], np.ones(c.channels, np.float32), np.zeros(c.channels, np.float32))
    prev = c.node.name
    while prev not in protected:
        nxt = _sole_consumer(cons, prev)
        node = nodes.get(nxt) if nxt else None
        if node is None or not (_affine_step(node, prev, nodes, fold)
                                or _batch_norm_step(node, prev, nodes, cons, fold)):
            break
        fold.chain.append(node)
        prev = node.name
    if not fold.chain:
        return None
    only = fold.chain[0]
    if len(fold.chain) == 1 and only.op == "BiasAdd":
        bias_ref = data_inputs(only)[1]
        if len(nodes[bias_ref.node].attr["value"].tensor.tensor_shape.dim) == 1:
            return None  # already the canonical conv + rank-1 BiasAdd
    return fold


def fold_batch_norms(graph_def: graph_pb2.GraphDef, protected: Collection[str]) -> int:
    """Fold batch norms and per-channel Mul/Add/Sub/RealDiv chains after a Conv2D, DepthwiseConv2dNative or MatMul
    with a Const weight into that weight and one BiasAdd (inference FusedBatchNorm/V2/V3 and the Mul/Add form
    Keras 3 writes). Returns how many contractions were rewritten."""
    nodes, cons = node_map(graph_def), consumers(graph_def)
    taken = set(nodes)
    folds: list[_Fold] = []
    for node in graph_def.node:
        c = _contraction(node, nodes)
        if c is None or node.name in protected:
            continue
        fold = _find_fold(c, nodes, cons, protected)
        if fold is not None:
            folds.append(fold)
    doomed: list[str] = []
    made: dict[bytes, str] = {}  # identical folded values share one Const (one per step of an unrolled RNN)
    for fold in folds:
        doomed += _apply_fold(graph_def, fold, taken, made)
    remove_nodes(graph_def, doomed)
    return len(folds)


def _apply_fold(graph_def: graph_pb2.GraphDef, fold: _Fold, taken: set[str], made: dict[bytes, str]) -> list[str]:
    """Write the folded weight/bias Consts (reusing one in `made`, keyed by content, when an earlier fold wrote the
    same values), rewire, and return the names of the nodes now dead."""
    c, last = fold.contraction, fold.chain[-1]
    bias_value = fold.bias.astype(np.float32)
    bias = _shared_const(graph_def, f"{last.name}/folded_bias", lambda: bias_value, taken, made,
                         b"bias:" + bias_value.tobytes())
    if not np.all(fold.scale == 1):  # additive-only chains keep the weight: it may be shared (unrolled RNN steps)
        key = b"weight:" + c.weight.name.encode() + b":" + fold.scale.astype(np.float32).tobytes()
        weight = _shared_const(graph_def, f"{c.node.name}/folded_weight",
                               lambda: c.scaled_weight(fold.scale).astype(np.float32), taken, made, key)
        refs = list(c.node.input)
        refs[[i for i, s in enumerate(refs) if not s.startswith("^")][1]] = weight
        del c.node.input[:]
        c.node.input.extend(refs)
    controls = [s for n in fold.chain for s in n.input if s.startswith("^")]
    new_last = make_node(last.name, "BiasAdd", [c.node.name, bias, *dict.fromkeys(controls)],
                         {"T": ("type", types_pb2.DT_FLOAT), "data_format": "NHWC"})
    last.CopyFrom(new_last)
    return [n.name for n in fold.chain[:-1]]


def _shared_const(graph_def: graph_pb2.GraphDef, name: str, value: Callable[[], np.ndarray], taken: set[str],
                  made: dict[bytes, str], key: bytes) -> str:
    """The name of the Const made earlier under `key`, or of a new Const `name` holding `value()`."""
    if key not in made:
        const = make_const(unique_name(taken, name), value())
        graph_def.node.append(const)
        made[key] = const.name
    return made[key]


# ---------------------------------------------------------------------------------------------------------------
# Add -> BiasAdd, device pinning, unused control-flow placeholders.

def adds_to_bias_add(graph_def: graph_pb2.GraphDef) -> int:
    """Turn Add/AddV2(contraction, rank-1 Const of the channel count) into BiasAdd (NHWC) when the contraction has
    no other consumer, so grappler's remapper can fuse it. Returns the number of nodes rewritten."""
    nodes, cons = node_map(graph_def), consumers(graph_def)
    changed = 0
    for node in graph_def.node:
        refs = data_inputs(node)
        if node.op not in ("Add", "AddV2") or len(refs) != 2 or not _is_float32(node):
            continue
        for i in (0, 1):
            c = _contraction(nodes.get(refs[i].node), nodes)
            other = nodes.get(refs[1 - i].node)
            if c is None or refs[i].index != 0 or _sole_consumer(cons, c.node.name) != node.name:
                continue
            if not _is_const(other) or [d.size for d in other.attr["value"].tensor.tensor_shape.dim] != [c.channels]:
                continue
            controls = [s for s in node.input if s.startswith("^")]
            node.CopyFrom(make_node(node.name, "BiasAdd", [format_ref(refs[i]), format_ref(refs[1 - i]), *controls],
                                    {"T": ("type", types_pb2.DT_FLOAT), "data_format": "NHWC"}))
            changed += 1
            break
    return changed


def _regroup_one(add: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef],
                 cons: dict[str, list[tuple[str, NodeRef]]], protected: Collection[str],
                 taken: set[str]) -> tuple[node_def_pb2.NodeDef, str] | None:
    """For ``Add(Sum(.., conv, ..), bias)`` return (BiasAdd(conv, bias), name of the Sum node), else None."""
    refs = data_inputs(add)
    if add.op not in ("Add", "AddV2") or len(refs) != 2 or not _is_float32(add):
        return None
    for total_ref, bias_ref in ((refs[0], refs[1]), (refs[1], refs[0])):
        total, bias = nodes.get(total_ref.node), nodes.get(bias_ref.node)
        if total is None or total.op not in ("AddN", "Add", "AddV2") or total_ref.index or not _is_const(bias):
            continue
        if total.name in protected or _sole_consumer(cons, total.name) != add.name:
            continue
        shape = [d.size for d in bias.attr["value"].tensor.tensor_shape.dim]
        for ref in data_inputs(total):
            c = _contraction(nodes.get(ref.node), nodes)
            if c is None or ref.index or [c.channels] != shape or _sole_consumer(cons, c.node.name) != total.name:
                continue
            if c.node.name in protected:
                continue
            bias_add = make_node(unique_name(taken, f"{c.node.name}/bias_add"), "BiasAdd",
                                 [c.node.name, format_ref(bias_ref)],
                                 {"T": ("type", types_pb2.DT_FLOAT), "data_format": "NHWC"})
            return bias_add, total.name
    return None


def regroup_bias_adds(graph_def: graph_pb2.GraphDef, protected: Collection[str]) -> int:
    """Undo grappler's add regrouping around residual sums: ``Add(AddN(a, conv), bias)`` becomes
    ``AddN(a, BiasAdd(conv, bias))`` (named like the outer Add), so the remapper can fuse conv + bias. Grappler's
    arithmetic optimizer merges a conv's bias add into the residual add chain (ResNet/MobileNet blocks); sums are
    associative, so only float rounding changes. Returns the number regrouped."""
    done = 0
    while True:
        nodes, cons = node_map(graph_def), consumers(graph_def)
        taken = set(nodes)
        match = next(((add, found) for add in graph_def.node
                      if (found := _regroup_one(add, nodes, cons, protected, taken)) is not None), None)
        if match is None:
            return done
        add, (bias_add, total_name) = match
        total = nodes[total_name]
        merged = node_def_pb2.NodeDef()
        merged.CopyFrom(total)
        merged.name = add.name
        conv_name = data_inputs(bias_add)[0].node
        merged.input[:] = [bias_add.name if s == conv_name else s for s in total.input]
        merged.input.extend(s for s in add.input if s.startswith("^"))
        add.CopyFrom(merged)
        graph_def.node.append(bias_add)
        remove_nodes(graph_def, [total_name])
        done += 1


def pin_contractions_to_cpu(graph_def: graph_pb2.GraphDef) -> None:
    """Put Conv2D and MatMul on ``/device:CPU:0``: grappler's remapper fuses only CPU contractions."""
    for node in graph_def.node:
        if node.op in ("Conv2D", "MatMul"):
            node.device = "/device:CPU:0"


def clear_devices(graph_def: graph_pb2.GraphDef) -> None:
    """Drop every device placement and debug info (TF.js ignores both; devices make the topology machine-specific
    and debug info holds process-dependent function names, which would break byte-for-byte determinism)."""
    for node in graph_def.node:
        node.device = ""
        node.ClearField("experimental_debug_info")
    for func in graph_def.library.function:
        for node in func.node_def:
            node.device = ""
            node.ClearField("experimental_debug_info")


def drop_unused_control_flow_inputs(graph_def: graph_pb2.GraphDef) -> int:
    """Remove Placeholders named ``unused_control_flow_input*`` (left by lowering) and control edges to them."""
    doomed = {n.name for n in graph_def.node
              if n.op == "Placeholder" and n.name.startswith("unused_control_flow_input")}
    if not doomed:
        return 0
    for node in graph_def.node:
        refs = [parse_ref(s) for s in node.input]
        if any(r.node in doomed and not r.control for r in refs):
            raise ConversionError(f"node {node.name} reads the unused placeholder it depends on", stage=STAGE)
        if any(r.node in doomed for r in refs):
            kept = [s for s, r in zip(node.input, refs) if r.node not in doomed]
            del node.input[:]
            node.input.extend(kept)
    remove_nodes(graph_def, doomed)
    return len(doomed)


# ---------------------------------------------------------------------------------------------------------------
# PReLU.

def _prelu_alpha(mul: node_def_pb2.NodeDef, neg_relu: str, nodes: dict[str, node_def_pb2.NodeDef]) -> np.ndarray | None:
    """-k for Mul(k, neg_relu) / Mul(neg_relu, k) with k a float32 Const broadcasting along the last axis only."""
    refs = data_inputs(mul)
    if mul.op != "Mul" or len(refs) != 2 or NodeRef(neg_relu) not in refs:
        return None
    k = nodes.get(refs[1].node if refs[0] == NodeRef(neg_relu) else refs[0].node)
    if not _is_const(k) or k.attr["dtype"].type != types_pb2.DT_FLOAT:
        return None
    value = const_value(k)
    if any(d != 1 for d in value.shape[:-1]):
        return None  # wasm's Prelu kernel only broadcasts a per-channel (or scalar) alpha
    return -value.reshape(-1) if value.ndim else -value


def fuse_prelu(graph_def: graph_pb2.GraphDef, protected: Collection[str]) -> int:
    """Rewrite ``Add(Relu(x), Mul(-alpha, Relu(Neg(x))))`` (either operand order) into ``Prelu(x, alpha)`` when
    alpha is a per-channel or scalar Const. Returns the number of Prelu nodes made."""
    nodes, cons = node_map(graph_def), consumers(graph_def)
    taken = set(nodes)
    doomed: list[str] = []
    made = 0
    for node in list(graph_def.node):
        refs = data_inputs(node)
        if node.op not in ("Add", "AddV2") or len(refs) != 2 or not _is_float32(node):
            continue
        for pos_ref, mul_ref in ((refs[0], refs[1]), (refs[1], refs[0])):
            match = _match_prelu(pos_ref, mul_ref, nodes, cons, node.name, protected)
            if match is None:
                continue
            x_ref, alpha, parts = match
            alpha_node = make_const(unique_name(taken, f"{node.name}/alpha"), alpha.astype(np.float32))
            graph_def.node.append(alpha_node)
            node.CopyFrom(make_node(node.name, "Prelu", [format_ref(x_ref), alpha_node.name],
                                    {"T": ("type", types_pb2.DT_FLOAT)}))
            doomed += parts
            made += 1
            break
    remove_nodes(graph_def, doomed)
    return made


def _match_prelu(pos_ref: NodeRef, mul_ref: NodeRef, nodes: dict[str, node_def_pb2.NodeDef],
                 cons: dict[str, list[tuple[str, NodeRef]]], add: str,
                 protected: Collection[str]) -> tuple[NodeRef, np.ndarray, list[str]] | None:
    pos, mul = nodes.get(pos_ref.node), nodes.get(mul_ref.node)
    if pos is None or mul is None or pos.op != "Relu" or mul.op != "Mul" or pos_ref.index or mul_ref.index:
        return None
    mul_refs = data_inputs(mul)
    neg_relu = next((nodes.get(r.node) for r in mul_refs if nodes.get(r.node) is not None
                     and nodes[r.node].op == "Relu"), None)
    if neg_relu is None:
        return None
    neg = nodes.get(data_inputs(neg_relu)[0].node)
    if neg is None or neg.op != "Neg" or data_inputs(neg)[0] != data_inputs(pos)[0]:
        return None
    alpha = _prelu_alpha(mul, neg_relu.name, nodes)
    parts = [pos.name, mul.name, neg_relu.name, neg.name]
    if alpha is None or any(p in protected or _sole_consumer(cons, p) is None for p in parts):
        return None
    if _sole_consumer(cons, pos.name) != add or _sole_consumer(cons, mul.name) != add:
        return None
    if _sole_consumer(cons, neg_relu.name) != mul.name or _sole_consumer(cons, neg.name) != neg_relu.name:
        return None
    return data_inputs(pos)[0], alpha, parts


def _alpha_arg(act: node_def_pb2.NodeDef, fused: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef],
               taken: set[str], graph_def: graph_pb2.GraphDef) -> str | None:
    """The name of a rank-1 per-channel Const holding a Prelu's alpha (made if needed), or None if unsuitable."""
    alpha = nodes.get(data_inputs(act)[1].node)
    bias = nodes.get(data_inputs(fused)[2].node)
    channels = [d.size for d in bias.attr["value"].tensor.tensor_shape.dim] if _is_const(bias) else []
    if not _is_const(alpha) or len(channels) != 1:
        return None
    value = const_value(alpha)
    if value.size not in (1, channels[0]) or any(d != 1 for d in value.shape[:-1]):
        return None
    if value.shape == (channels[0],):
        return alpha.name
    name = unique_name(taken, f"{act.name}/alpha_per_channel")
    graph_def.node.append(make_const(name, np.broadcast_to(value.reshape(-1), (channels[0],)).astype(np.float32)))
    return name


def fuse_activations_into_contractions(graph_def: graph_pb2.GraphDef, protected: Collection[str]) -> int:
    """Fold an activation JS can fuse (`js_activations`: Relu, Relu6, Elu, LeakyRelu, Sigmoid, Prelu) into the
    preceding _FusedConv2D/_FusedMatMul/depthwise node whose only fused op is BiasAdd, when grappler's remapper did not
    (it never fuses Prelu, and which others it fuses depends on the TF build). The fused node takes the
    activation's name; Prelu adds its alpha as a second arg."""
    nodes, cons = node_map(graph_def), consumers(graph_def)
    taken = set(nodes)
    doomed: list[str] = []
    made = 0
    for act in list(graph_def.node):
        refs = data_inputs(act)
        if act.op not in JS_FUSED_ACTIVATIONS or not refs or refs[0].index or not _is_float32(act):
            continue
        fused = nodes.get(refs[0].node)
        if fused is None or fused.op not in JS_FUSED_OP or _fused_ops(fused) != ["BiasAdd"]:
            continue
        if act.op not in js_activations(fused.op):
            continue
        if fused.name in protected or _sole_consumer(cons, fused.name) != act.name or len(data_inputs(fused)) != 3:
            continue
        extra: list[str] = []
        if act.op == "Prelu":
            alpha = _alpha_arg(act, fused, nodes, taken, graph_def)
            if alpha is None:
                continue
            extra.append(alpha)
        merged = _js_fused(fused, act.name, ["BiasAdd", act.op])
        merged.op = fused.op  # the guard gives it its JS name
        merged.input.extend(extra)
        if act.op == "LeakyRelu":
            merged.attr["leakyrelu_alpha"].f = act.attr["alpha"].f
        merged.input.extend(s for s in act.input if s.startswith("^"))
        act.CopyFrom(merged)
        doomed.append(fused.name)
        made += 1
    remove_nodes(graph_def, doomed)
    return made


# ---------------------------------------------------------------------------------------------------------------
# Depthwise fusion.

def fuse_depthwise(graph_def: graph_pb2.GraphDef, protected: Collection[str],
                   activations: Collection[str] = JS_DEPTHWISE_ACTIVATIONS) -> int:
    """``DepthwiseConv2dNative [+ BiasAdd(rank-1 Const)] [+ activation]`` -> ``FusedDepthwiseConv2dNative`` with
    fused_ops ``[BiasAdd, act]``, ``[BiasAdd]`` or ``[NoOp, act]``, named after the last node it replaces."""
    nodes, cons = node_map(graph_def), consumers(graph_def)
    doomed: list[str] = []
    made = 0
    for conv in list(graph_def.node):
        if conv.op != "DepthwiseConv2dNative" or not _is_float32(conv) or not _nhwc(conv) or conv.name in protected:
            continue
        chain, args, ops = [conv], [], []
        nxt = nodes.get(_sole_consumer(cons, conv.name) or "")
        if nxt is not None and nxt.op == "BiasAdd" and _nhwc(nxt) and data_inputs(nxt)[0] == NodeRef(conv.name):
            bias = nodes.get(data_inputs(nxt)[1].node)
            if _is_const(bias) and len(bias.attr["value"].tensor.tensor_shape.dim) == 1:
                chain.append(nxt)
                args.append(data_inputs(nxt)[1])
                ops.append("BiasAdd")
        tail = chain[-1]
        act = nodes.get(_sole_consumer(cons, tail.name) or "") if tail.name not in protected else None
        if act is not None and act.op in activations and data_inputs(act)[0] == NodeRef(tail.name):
            if act.op == "Prelu":
                alpha = nodes.get(data_inputs(act)[1].node)
                if not _is_const(alpha) or any(d.size != 1 for d in
                                               alpha.attr["value"].tensor.tensor_shape.dim[:-1]):
                    act = None
                else:
                    args.append(data_inputs(act)[1])
            if act is not None:
                chain.append(act)
                ops = [*(ops or ["NoOp"]), act.op]
        if len(chain) == 1:
            continue
        last = chain[-1]
        fused = make_node(last.name, "FusedDepthwiseConv2dNative",
                          [*conv.input[:2], *(format_ref(a) for a in args)],
                          {"fused_ops": _string_list(ops), "num_args": len(args)}, like=conv, copy_attrs=_CONV_ATTRS)
        fused.attr["epsilon"].f = 0.0
        fused.attr["leakyrelu_alpha"].f = last.attr["alpha"].f if last.op == "LeakyRelu" else 0.2
        doomed += [n.name for n in chain[:-1]]
        last.CopyFrom(fused)
        made += 1
    remove_nodes(graph_def, doomed)
    return made


def _string_list(values: list[str]) -> object:
    from tensorflow.core.framework import attr_value_pb2

    attr = attr_value_pb2.AttrValue()
    attr.list.s.extend(v.encode() for v in values)
    return attr


# ---------------------------------------------------------------------------------------------------------------
# The guard: keep fused forms JS runs, split the rest.

def _rank1_consts(refs: list[NodeRef], nodes: dict[str, node_def_pb2.NodeDef]) -> bool:
    return all(_is_const(nodes.get(r.node)) and len(nodes[r.node].attr["value"].tensor.tensor_shape.dim) == 1
               for r in refs)


def _fusable_contraction(node: node_def_pb2.NodeDef) -> bool:
    # TF.js 4.22's wasm _FusedMatMul gives wrong numbers with transpose_b and a bias (cpu is right): keep any
    # transposed MatMul unfused.
    transposed = node.op == "_FusedMatMul" and (node.attr["transpose_a"].b or node.attr["transpose_b"].b)
    return (node.op in JS_FUSED_OP and _is_float32(node) and _nhwc(node) and not node.attr["num_host_args"].i
            and node.attr["num_args"].i == len(data_inputs(node)) - 2 and not transposed)


def js_can_run_fused(node: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef]) -> bool:
    """Whether TF.js 4.22.0 (wasm and cpu) executes this fused node as it stands: fused_ops ``[BiasAdd]``,
    ``[BiasAdd, act]`` or (depthwise) ``[NoOp, act]``, NHWC float32, every extra arg a rank-1 Const."""
    if not _fusable_contraction(node):
        return False
    ops, args = _fused_ops(node), data_inputs(node)[2:]
    depthwise = JS_FUSED_OP[node.op] == "FusedDepthwiseConv2dNative"
    head_ok = ops[:1] == ["BiasAdd"] or (depthwise and ops[:1] == ["NoOp"])
    form_ok = ops == ["BiasAdd"] or (len(ops) == 2 and head_ok and ops[1] in js_activations(node.op))
    return form_ok and len(args) == ops.count("BiasAdd") + ops.count("Prelu") and _rank1_consts(args, nodes)


def _bias_head_ok(node: node_def_pb2.NodeDef, nodes: dict[str, node_def_pb2.NodeDef]) -> bool:
    """Whether the contraction + BiasAdd part of an unsupported fused node can stay fused (``[BiasAdd]``)."""
    ops, args = _fused_ops(node), data_inputs(node)[2:]
    return _fusable_contraction(node) and len(ops) > 1 and ops[0] == "BiasAdd" and _rank1_consts(args[:1], nodes)


def unfuse_unsupported(graph_def: graph_pb2.GraphDef) -> list[str]:
    """Give every fused contraction the op name JS knows, strip its control inputs (JS would read them as extra
    args), and split each one JS cannot run into plain ops (keeping a ``[BiasAdd]`` head fused when possible).
    Returns the names of the nodes split."""
    nodes = node_map(graph_def)
    taken = set(nodes)
    split: list[str] = []
    rebuilt: list[node_def_pb2.NodeDef] = []
    for node in graph_def.node:
        if node.op not in FUSED_BASE_OP:
            rebuilt.append(node)
        elif js_can_run_fused(node, nodes):
            rebuilt.append(_js_fused(node, node.name))
        else:
            rebuilt += unfuse_node(node, taken, prelu_as_op=True, keep_bias_head=_bias_head_ok(node, nodes))
            split.append(node.name)
    del graph_def.node[:]
    graph_def.node.extend(rebuilt)
    return split


def _js_fused(node: node_def_pb2.NodeDef, name: str, fused_ops: list[str] | None = None) -> node_def_pb2.NodeDef:
    """A copy of a fused contraction under its JS op name, without control inputs, optionally with fewer fused ops
    (then only the args those ops use are kept)."""
    kept = node_def_pb2.NodeDef()
    kept.CopyFrom(node)
    kept.name, kept.op = name, JS_FUSED_OP[node.op]
    data = [s for s in node.input if not s.startswith("^")]
    if fused_ops is not None:
        kept.attr["fused_ops"].CopyFrom(_string_list(fused_ops))
        kept.attr["num_args"].i = fused_ops.count("BiasAdd") + fused_ops.count("Prelu")
        data = data[:2 + kept.attr["num_args"].i]
    del kept.input[:]
    kept.input.extend(data)
    return kept


# ---------------------------------------------------------------------------------------------------------------
# Splitting a fused node into plain ops (shared with replay).

def _activation(chain: ChainBuilder, op: str, x: str, args: list[str], prelu_as_op: bool) -> str:
    """Append activation `op` applied to `x`; Prelu consumes its alpha from `args`."""
    if op in _PLAIN_UNARY:
        return chain.add(op, [x])
    if op == "LeakyRelu":
        return chain.add("LeakyRelu", [x], {"alpha": chain.target.attr["leakyrelu_alpha"].f})
    if op == "Prelu":
        alpha = args.pop(0)
        if prelu_as_op:
            return chain.add("Prelu", [x, alpha])
        return prelu_as_tf_ops(chain, x, alpha)
    if op in ("GeluExact", "GeluApproximate"):
        return _gelu(chain, x, exact=op == "GeluExact")
    if op in ("_MklSwish", "Swish"):
        return chain.add("Mul", [x, chain.add("Sigmoid", [x])])
    if op in ("_FusedHardSwish", "HardSwish"):
        relu6 = chain.add("Relu6", [chain.add("AddV2", [x, chain.const(3.0)])])
        return chain.add("Mul", [chain.add("Mul", [x, relu6]), chain.const(1.0 / 6.0)])
    if op in ("Mish", "_MklFusedMish"):
        return chain.add("Mul", [x, chain.add("Tanh", [chain.add("Softplus", [x])])])
    raise ConversionError(f"fused node {chain.target.name} ({chain.target.op}) uses fused op {op!r}, which bridge "
                          "cannot split into TF.js ops", stage=STAGE,
                          hint="report this model; meanwhile export without oneDNN (TF_ENABLE_ONEDNN_OPTS=0)")


def prelu_as_tf_ops(chain: ChainBuilder, x: str, alpha: str) -> str:
    """prelu(x) = relu(x) - alpha * relu(-x), in ops TensorFlow has."""
    neg_part = chain.add("Relu", [chain.add("Neg", [x])])
    return chain.add("Sub", [chain.add("Relu", [x]), chain.add("Mul", [alpha, neg_part])])


def _gelu(chain: ChainBuilder, x: str, *, exact: bool) -> str:
    if exact:
        inner = chain.add("Erf", [chain.add("Mul", [x, chain.const(1.0 / np.sqrt(2.0))])])
    else:
        cube = chain.add("Mul", [chain.add("Mul", [x, x]), x])
        poly = chain.add("AddV2", [x, chain.add("Mul", [cube, chain.const(0.044715)])])
        inner = chain.add("Tanh", [chain.add("Mul", [poly, chain.const(np.sqrt(2.0 / np.pi))])])
    half_x = chain.add("Mul", [x, chain.const(0.5)])
    return chain.add("Mul", [half_x, chain.add("AddV2", [inner, chain.const(1.0)])])


def _base_attrs(base: str) -> tuple[str, ...]:
    from tensorflow.python.framework import op_def_registry

    op_def = op_def_registry.get(base)
    return tuple(a.name for a in op_def.attr) if op_def is not None else ()


def unfuse_node(fused: node_def_pb2.NodeDef, taken: set[str], *, prelu_as_op: bool,
                keep_bias_head: bool = False) -> list[node_def_pb2.NodeDef]:
    """Plain nodes equivalent to one fused contraction, the last named like it. Prelu becomes the TF.js ``Prelu``
    op when `prelu_as_op`, else ``relu(x) - alpha * relu(-x)`` (for running in TensorFlow). With `keep_bias_head`
    the contraction and its leading BiasAdd stay one fused node (JS op name) and only the rest is split."""
    refs = [s for s in fused.input if not s.startswith("^")]
    controls = [s for s in fused.input if s.startswith("^")]
    args = refs[2:2 + fused.attr["num_args"].i] if "num_args" in fused.attr else refs[2:]
    chain = ChainBuilder(fused, taken, fused.attr["T"].type)
    base = FUSED_BASE_OP[fused.op]
    attrs = tuple(a for a in _base_attrs(base) if a not in _FUSION_ATTRS)
    if base == "MatMul" and "T" not in fused.attr:
        raise ConversionError(f"fused node {fused.name} has no dtype", stage=STAGE)
    ops = _fused_ops(fused)
    if keep_bias_head:
        head = _js_fused(fused, unique_name(taken, f"{fused.name}/unfused/{JS_FUSED_OP[fused.op]}"), ["BiasAdd"])
        chain.nodes.append(head)
        x, ops, args = head.name, ops[1:], args[1:]
    else:
        x = chain.add(base, [refs[0], refs[1], *controls], typed=False, like=fused, copy_attrs=attrs)
    data_format = fused.attr["data_format"].s.decode() if "data_format" in fused.attr else "NHWC"
    for op in ops:
        if op == "NoOp":
            continue
        if op == "BiasAdd":
            x = chain.add("BiasAdd", [x, args.pop(0)], {"data_format": data_format or "NHWC"})
        elif op in ("Add", "AddV2"):
            x = chain.add("AddV2", [x, args.pop(0)])
        elif op == "Mul":
            x = chain.add("Mul", [x, args.pop(0)])
        elif op == "FusedBatchNorm":
            bn_args, args = args[:4], args[4:]
            x = chain.add("FusedBatchNormV3", [x, *bn_args],
                          {"U": ("type", chain.dtype), "epsilon": fused.attr["epsilon"].f,
                           "data_format": data_format or "NHWC", "is_training": False})
        else:
            x = _activation(chain, op, x, args, prelu_as_op)
    return chain.finish()

