"""Node references in a GraphDef, parsed properly, and the small graph-editing helpers built on them.

A NodeDef input is one of ``name`` (output 0), ``name:3`` (output 3) or ``^name`` (a control edge). Matching these
by prefix or exact string (as the reference converter does) misses ``name:0`` and ``^name`` forms and confuses
``conv`` with ``conv_1``; every pass here goes through `parse_ref` instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING
from dataclasses import dataclass

from tensorflow.core.framework import attr_value_pb2, function_pb2, graph_pb2, node_def_pb2

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class NodeRef:
    """One parsed NodeDef input: the producing node, its output index, and whether it is a control edge."""

    node: str
    index: int = 0
    control: bool = False

    def __str__(self) -> str:
        return format_ref(self)


def parse_ref(ref: str) -> NodeRef:
    """Parse ``name``, ``name:1`` or ``^name`` into a `NodeRef`; node names themselves never contain ``:``."""
    if ref.startswith("^"):
        return NodeRef(ref[1:], 0, True)
    name, sep, index = ref.rpartition(":")
    if sep and index.isdigit():
        return NodeRef(name, int(index), False)
    return NodeRef(ref, 0, False)


def format_ref(ref: NodeRef) -> str:
    """The canonical NodeDef input string for a ref: ``^name``, ``name`` for output 0, else ``name:i``."""
    if ref.control:
        return f"^{ref.node}"
    return ref.node if ref.index == 0 else f"{ref.node}:{ref.index}"


def node_name(ref: str) -> str:
    """The producing node's name of any input or tensor string (``x``, ``x:0``, ``^x`` all give ``x``)."""
    return parse_ref(ref).node


def tensor_name(ref: str) -> str:
    """The tensor name (``x:0``) of a data input string; control inputs are refused."""
    parsed = parse_ref(ref)
    if parsed.control:
        raise ValueError(f"{ref!r} is a control input, not a tensor")
    return f"{parsed.node}:{parsed.index}"


def data_inputs(node: node_def_pb2.NodeDef) -> list[NodeRef]:
    """The node's data (non-control) inputs, in order."""
    return [r for r in (parse_ref(s) for s in node.input) if not r.control]


def control_inputs(node: node_def_pb2.NodeDef) -> list[NodeRef]:
    """The node's control inputs, in order."""
    return [r for r in (parse_ref(s) for s in node.input) if r.control]


def node_map(graph_def: graph_pb2.GraphDef) -> dict[str, node_def_pb2.NodeDef]:
    """Name -> NodeDef for the main graph (insertion order follows the GraphDef)."""
    return {node.name: node for node in graph_def.node}


def consumers(graph_def: graph_pb2.GraphDef) -> dict[str, list[tuple[str, NodeRef]]]:
    """Producer name -> ``(consumer name, parsed ref)`` for every input edge (data and control), in graph order."""
    result: dict[str, list[tuple[str, NodeRef]]] = {}
    for node in graph_def.node:
        for ref in (parse_ref(s) for s in node.input):
            result.setdefault(ref.node, []).append((node.name, ref))
    return result


def data_consumers(graph_def: graph_pb2.GraphDef, name: str) -> list[str]:
    """Names of nodes that read any output of `name` as data (each consumer once, graph order)."""
    found: list[str] = []
    for node in graph_def.node:
        if any(r.node == name for r in data_inputs(node)) and node.name not in found:
            found.append(node.name)
    return found


def rewire(graph_def: graph_pb2.GraphDef, old: NodeRef, new: NodeRef,
           skip: Iterable[str] = ()) -> int:
    """Point every data input reading tensor `old` at tensor `new` (control edges on `old.node` are moved to
    `new.node`); nodes named in `skip` are left alone. Returns how many inputs changed."""
    skipped = set(skip)
    changed = 0
    for node in graph_def.node:
        if node.name in skipped:
            continue
        for i, text in enumerate(node.input):
            ref = parse_ref(text)
            if ref.node != old.node:
                continue
            if ref.control:
                node.input[i] = format_ref(NodeRef(new.node, 0, True))
                changed += 1
            elif ref.index == old.index:
                node.input[i] = format_ref(new)
                changed += 1
    return changed


def remove_nodes(graph_def: graph_pb2.GraphDef, names: Iterable[str]) -> None:
    """Delete the named nodes from the main graph, keeping the order of the rest."""
    doomed = set(names)
    if not doomed:
        return
    kept = [node for node in graph_def.node if node.name not in doomed]
    del graph_def.node[:]
    graph_def.node.extend(kept)


def dedupe_control_inputs(node: node_def_pb2.NodeDef) -> None:
    """Drop repeated control inputs and control inputs duplicating a data input's node (order kept)."""
    data_nodes = {r.node for r in data_inputs(node)}
    seen: set[str] = set()
    kept: list[str] = []
    for text in node.input:
        ref = parse_ref(text)
        if ref.control:
            if ref.node in data_nodes or ref.node in seen:
                continue
            seen.add(ref.node)
        kept.append(text)
    if len(kept) != len(node.input):
        del node.input[:]
        node.input.extend(kept)


def unique_name(taken: set[str], base: str) -> str:
    """`base` if free, else ``base_1``, ``base_2``, ... (deterministic); the result is added to `taken`."""
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def const_behind_identities(nodes: dict[str, node_def_pb2.NodeDef], name: str) -> node_def_pb2.NodeDef | None:
    """The Const node `name` reads through a chain of Identity nodes (`name` itself when it is a Const), or None
    when the chain ends anywhere else."""
    node = nodes.get(name)
    while node is not None and node.op == "Identity" and data_inputs(node):
        node = nodes.get(data_inputs(node)[0].node)
    return node if node is not None and node.op == "Const" else None


def copy_graph(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    """A deep copy of `graph_def` (passes that must not change their argument work on one)."""
    copy = graph_pb2.GraphDef()
    copy.CopyFrom(graph_def)
    return copy


def tensor_shapes(graph_def: graph_pb2.GraphDef, refs: Iterable[str]) -> dict[str, list[int | None] | None]:
    """The static shape TF's shape inference gives each main-graph tensor in `refs` (``node`` or ``node:i``;
    None: unknown rank), by importing the graph into a scratch tf.Graph. The graph must hold TF ops only."""
    import tensorflow as tf

    from bridge.tfjs.freeze import quiet_tf

    scratch = tf.Graph()
    with quiet_tf(), scratch.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    shapes: dict[str, list[int | None] | None] = {}
    for text in refs:
        ref = parse_ref(text)
        shape = scratch.get_operation_by_name(ref.node).outputs[ref.index].shape
        shapes[text] = None if shape.rank is None else shape.as_list()
    return shapes


def iter_all_nodes(graph_def: graph_pb2.GraphDef) -> Iterator[tuple[str, node_def_pb2.NodeDef]]:
    """Every node of the main graph (scope ``""``) and of each library function (scope = function name)."""
    for node in graph_def.node:
        yield "", node
    for func in graph_def.library.function:
        for node in func.node_def:
            yield func.signature.name, node


def const_value(node: node_def_pb2.NodeDef) -> np.ndarray:
    """The value of a Const node as a numpy array. A weight stand-in (bridge.tfjs.weight_stubs) gives the real
    weight from the active registry; outside one it is refused, never read as its fill."""
    import tensorflow as tf

    from bridge.tfjs.weight_stubs import is_stub, resolve_stub

    tensor = node.attr["value"].tensor
    if is_stub(tensor):
        return resolve_stub(tensor)
    return tf.make_ndarray(tensor)


def make_const(name: str, value: np.ndarray, dtype: int | None = None) -> node_def_pb2.NodeDef:
    """A Const NodeDef named `name` holding `value` (dtype enum `dtype`, default: the array's own dtype)."""
    import numpy as np
    import tensorflow as tf

    array = np.asarray(value)
    tf_dtype = tf.dtypes.as_dtype(dtype) if dtype is not None else tf.dtypes.as_dtype(array.dtype)
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = tf_dtype.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array.astype(tf_dtype.as_numpy_dtype),
                                                            dtype=tf_dtype, shape=array.shape))
    return node


def make_node(name: str, op: str, inputs: Iterable[str], attrs: dict[str, object] | None = None,
              like: node_def_pb2.NodeDef | None = None, copy_attrs: Iterable[str] = ()) -> node_def_pb2.NodeDef:
    """A NodeDef `op` named `name` with `inputs`; attrs listed in `copy_attrs` are copied from `like`, then
    `attrs` (AttrValue protos, or plain ``bool``/``int``/``float``/``str``/dtype-enum-via-``("type", v)``) set."""
    from tensorflow.core.framework import attr_value_pb2

    node = node_def_pb2.NodeDef(name=name, op=op)
    node.input.extend(inputs)
    if like is not None:
        for key in copy_attrs:
            if key in like.attr:
                node.attr[key].CopyFrom(like.attr[key])
    for key, value in (attrs or {}).items():
        if isinstance(value, attr_value_pb2.AttrValue):
            node.attr[key].CopyFrom(value)
        elif isinstance(value, tuple) and value[0] == "type":
            node.attr[key].type = int(value[1])
        elif isinstance(value, bool):
            node.attr[key].b = value
        elif isinstance(value, int):
            node.attr[key].i = value
        elif isinstance(value, float):
            node.attr[key].f = value
        elif isinstance(value, str):
            node.attr[key].s = value.encode()
        else:
            raise TypeError(f"unsupported attr value for {key!r}: {value!r}")
    return node


class ChainBuilder:
    """Builds the run of new nodes that replaces one `target` node; the last node added takes the target's name.

    New nodes are named ``<target>/unfused/<Op>`` (made unique against `taken`), so the result is deterministic."""

    def __init__(self, target: node_def_pb2.NodeDef, taken: set[str], dtype: int, prefix: str = "unfused") -> None:
        self.target, self.taken, self.dtype, self.prefix = target, taken, dtype, prefix
        self.nodes: list[node_def_pb2.NodeDef] = []

    def add(self, op: str, inputs: list[str], attrs: dict[str, object] | None = None, typed: bool = True,
            like: node_def_pb2.NodeDef | None = None, copy_attrs: Iterable[str] = ()) -> str:
        """Append one node; `typed` sets its ``T`` attr to the chain's dtype. Returns the new node's name."""
        name = unique_name(self.taken, f"{self.target.name}/{self.prefix}/{op}")
        full: dict[str, object] = {"T": ("type", self.dtype)} if typed else {}
        full.update(attrs or {})
        self.nodes.append(make_node(name, op, inputs, full, like=like, copy_attrs=copy_attrs))
        return name

    def const(self, value: object, dtype: int | None = None) -> str:
        """Append a Const holding `value` (the chain's dtype unless `dtype` is given). Returns its name."""
        import numpy as np

        name = unique_name(self.taken, f"{self.target.name}/{self.prefix}/const")
        self.nodes.append(make_const(name, np.asarray(value), self.dtype if dtype is None else dtype))
        return name

    def finish(self) -> list[node_def_pb2.NodeDef]:
        """The chain, its last node renamed to the target's name (nothing inside the chain reads it)."""
        self.nodes[-1].name = self.target.name
        return self.nodes


_LOAD_UID = re.compile(r"_\d+$")


def _func_refs(attrs: Mapping[str, attr_value_pb2.AttrValue]) -> Iterator[attr_value_pb2.NameAttrList]:
    """Every function reference in a node's attrs (``func`` and ``list.func``, nested attrs included), in a
    deterministic order."""
    for key in sorted(attrs):
        value = attrs[key]
        kind = value.WhichOneof("value")
        funcs = [value.func] if kind == "func" else list(value.list.func) if kind == "list" else []
        for func in funcs:
            yield func
            yield from _func_refs(func.attr)


def canonicalize_functions(graph_def: graph_pb2.GraphDef) -> dict[str, str]:
    """Give library functions names that do not depend on the loading process, drop unreferenced ones, and order
    the library by name. Loading a SavedModel suffixes each function with a process-wide counter
    (``__inference_while_body_5_245``); the suffix is dropped (``__inference_while_body_5``) and clashes are
    numbered in order of first reference from the main graph. Returns old name -> new name."""
    funcs = {f.signature.name: f for f in graph_def.library.function}
    order: list[str] = []

    def visit(attrs: Mapping[str, attr_value_pb2.AttrValue]) -> None:
        for ref in _func_refs(attrs):
            if ref.name in funcs and ref.name not in order:
                order.append(ref.name)
                for inner in funcs[ref.name].node_def:
                    visit(inner.attr)

    for node in graph_def.node:
        visit(node.attr)
    taken: set[str] = set()
    mapping = {old: unique_name(taken, _LOAD_UID.sub("", old) or old) for old in order}
    kept = []
    for old in order:
        func = function_pb2.FunctionDef()
        func.CopyFrom(funcs[old])
        func.signature.name = mapping[old]
        kept.append(func)
    all_nodes = [*graph_def.node, *(n for f in kept for n in f.node_def)]
    for node in all_nodes:
        for ref in _func_refs(node.attr):
            ref.name = mapping.get(ref.name, ref.name)
    del graph_def.library.function[:]
    graph_def.library.function.extend(sorted(kept, key=lambda f: f.signature.name))
    return mapping
