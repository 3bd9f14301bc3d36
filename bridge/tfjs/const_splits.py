"""Splits of constant weights written as their pieces: one Const per piece instead of a Split run on every call.

The native route projects attention heads one at a time from columns of the stored weight (`tf.split(W, H,
axis=1)`, bridge/native/ops/attention.py), which keeps the weight one variable in the readable TF model. In the web
model the split would run on every call, and TF.js 4.22's wasm Split copies the whole input out of the wasm heap
once per piece. Grappler cannot fold it while large weights are stand-ins (bridge.tfjs.weight_stubs: folding would
compute with the stand-in's values), so this pass runs first, on the real values: a main-graph `Split` or `SplitV`
whose value is a Const (through Identity nodes) and whose axis and sizes are Consts becomes one Const per piece,
named `<split node>/piece_<i>`, and every reader of output i reads that Const. The pieces are exact slices. The
split and what fed it are removed once nothing else reads them, so the whole weight is not kept besides its
pieces (it would also be a stand-in that vanishes in pruning, which the stand-in checks refuse).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2

from bridge.tfjs.graph_names import (NodeRef, const_behind_identities, const_value, data_inputs, format_ref,
                                     make_const, node_map, parse_ref, remove_nodes, unique_name)

SPLIT_OPS = ("Split", "SplitV")


def _operands(nodes: dict[str, node_def_pb2.NodeDef], split: node_def_pb2.NodeDef) -> tuple[Any, ...] | None:
    """(value Const, axis, sizes or None) of a Split/SplitV whose operands are all Consts, else None."""
    refs = data_inputs(split)
    if split.op == "Split" and len(refs) == 2:
        axis_ref, value_ref, sizes_ref = refs[0], refs[1], None
    elif split.op == "SplitV" and len(refs) == 3:
        value_ref, sizes_ref, axis_ref = refs
    else:
        return None
    found = [const_behind_identities(nodes, r.node) if r is not None else None
             for r in (value_ref, axis_ref, sizes_ref)]
    if found[0] is None or found[1] is None or (sizes_ref is not None and found[2] is None):
        return None
    value, axis, sizes = found
    return value, int(const_value(axis)), (None if sizes is None else [int(s) for s in const_value(sizes)])


def split_pieces(value: np.ndarray, axis: int, count: int, sizes: list[int] | None) -> list[np.ndarray]:
    """The pieces a Split (`count` equal pieces) or SplitV (`sizes`, one of them -1 for the rest) gives."""
    if sizes is None:
        return np.split(value, count, axis=axis)
    length = value.shape[axis]
    if sizes.count(-1) == 1:
        sizes = [length - (sum(sizes) + 1) if s == -1 else s for s in sizes]
    return np.split(value, np.cumsum(sizes)[:-1], axis=axis)


def has_const_splits(graph_def: graph_pb2.GraphDef) -> bool:
    """True when `fold_const_splits` would change the graph (checked without copying it)."""
    nodes = node_map(graph_def)
    return any(n.op in SPLIT_OPS and _operands(nodes, n) is not None for n in graph_def.node)


def fold_const_splits(graph_def: graph_pb2.GraphDef, protected: set[str] = frozenset()) -> int:
    """Replace every constant Split/SplitV's outputs by Consts (module doc), in place; nodes in `protected` (fed
    or fetched) are never removed. Returns how many splits were folded."""
    nodes = node_map(graph_def)
    taken = set(nodes)
    pieces: dict[NodeRef, str] = {}
    for split in list(graph_def.node):
        operands = _operands(nodes, split) if split.op in SPLIT_OPS else None
        if operands is None:
            continue
        value, axis, sizes = operands
        array = const_value(value)
        count = int(split.attr["num_split"].i) if split.op == "Split" else len(sizes or [])
        for i, piece in enumerate(split_pieces(array, axis % array.ndim, count, sizes)):
            const = make_const(unique_name(taken, f"{split.name}/piece_{i}"), np.ascontiguousarray(piece),
                               value.attr["dtype"].type)
            graph_def.node.append(const)
            pieces[NodeRef(split.name, i, False)] = const.name
    for node in graph_def.node:
        for k, text in enumerate(node.input):
            ref = parse_ref(text)
            target = pieces.get(NodeRef(ref.node, ref.index, False)) if not ref.control else None
            if target is not None:
                node.input[k] = format_ref(NodeRef(target, 0, False))
    folded = {ref.node for ref in pieces}
    _drop_unread_weights(graph_def, folded, protected)
    return len(folded)


def _drop_unread_weights(graph_def: graph_pb2.GraphDef, folded: set[str], protected: set[str]) -> None:
    """Remove the folded splits and each weight behind them (its Const and the Identity reads of it) that no other
    node reads as data. A removed node that is still a control input somewhere (a variable read the function's
    NoOps wait on) stays as an input-less NoOp: waiting on a constant means nothing."""
    nodes = node_map(graph_def)
    data_readers: dict[str, set[str]] = {}
    control_readers: set[str] = set()
    for node in graph_def.node:
        for ref in (parse_ref(t) for t in node.input):
            if ref.control:
                control_readers.add(ref.node)
            else:
                data_readers.setdefault(ref.node, set()).add(node.name)
    doomed = {name for name in folded if not data_readers.get(name)}
    for split in sorted(doomed):
        weight = const_behind_identities(nodes, data_inputs(nodes[split])[1 if nodes[split].op == "Split" else 0].node)
        group = _identity_tree(weight.name, nodes, data_readers) if weight is not None else set()
        outside = {r for name in group for r in data_readers.get(name, ())} - group - doomed
        if group and not outside and not group & protected:
            doomed |= group
    for name in doomed:
        if name in control_readers:
            anchor = nodes[name]
            anchor.op = "NoOp"
            del anchor.input[:]
            anchor.attr.clear()
    remove_nodes(graph_def, doomed - control_readers)


def _identity_tree(name: str, nodes: dict[str, node_def_pb2.NodeDef], data_readers: dict[str, set[str]]) -> set[str]:
    """`name` and every Identity node reading it through Identity nodes alone."""
    tree, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current in tree:
            continue
        tree.add(current)
        stack.extend(r for r in data_readers.get(current, ()) if nodes[r].op == "Identity")
    return tree
