"""The layout pass, written once for every op: decides the TF layout of each value and inserts the few
conversions semantics need.

Channels-last flows through convs, pools, norms and elementwise ops; axis-dependent ops keep their input layout
and map axes (softmax, reductions, cat, permute — which becomes free); flattening an NHWC map yields a value whose
last axis is stored permuted, which a following Linear absorbs by permuting its weight; anything else gets the
value restored to PyTorch order. Conversions of weights are folded into the stored arrays; conversions of
activations become `bridge.relayout` nodes (a reshape when only size-1 axes move, else a transpose).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from bridge.errors import BridgeError, ConversionError
from bridge.native.ir import (SYMINT, FlatBlock, Graph, Layout, Node, Size, Value, py_identifier, same_size,
                              size_ratio, static_size)
from bridge.native.registry import ConverterRegistry, LayoutPolicy, LayoutRule

RELAYOUT = "bridge.relayout"

LAYOUT_NAMES = {"nchw": 4, "ncw": 3, "ncdhw": 5, "nhwc": 4, "nwc": 3, "ndhwc": 5}


def node_failure(node: Node, step: str, exc: Exception) -> ConversionError:
    """A typed error for an unexpected failure while `step` one node (a converter or layout rule bug, an
    argument combination nobody foresaw)."""
    summary = (str(exc).strip().splitlines() or [""])[0][:300]
    return ConversionError(f"{step} {node.target} failed: {type(exc).__name__}: {summary}", stage="tf",
                           details=[node.where()],
                           hint="convert with the ONNX route (route='onnx'), or register your own converter for "
                                "the op with bridge.native.register_converter")


def layout_from_name(name: str, rank: int) -> Layout:
    """`nhwc`/`nwc`/`ndhwc`/`channels_last` -> channels-last; `nchw`/`ncw`/`ncdhw`/`source` -> PyTorch order."""
    key = name.lower()
    if key in ("source", "nchw", "ncw", "ncdhw"):
        return Layout.source(rank)
    if key in ("nhwc", "nwc", "ndhwc", "channels_last"):
        if rank < 3:
            raise ConversionError(f"layout {name} needs a tensor of rank 3 or more, got rank {rank}",
                                  stage="rebuild-tf")
        return Layout.channels_last(rank)
    raise ConversionError(f"unknown layout {name!r}", stage="rebuild-tf",
                          hint="use one of: source, nchw, nhwc, ncw, nwc, ncdhw, ndhwc")


# ---------------------------------------------------------------- conversion steps (shared by weights and TF code)

@dataclass(frozen=True)
class Step:
    """One physical operation of a layout conversion: a reshape to `shape` or a transpose by `perm`."""

    kind: str  # "reshape" | "transpose"
    arg: tuple[Size, ...]


def conversion_steps(src: Layout, dst: Layout, shape: tuple[Size, ...]) -> list[Step]:
    """Physical steps turning a tensor of source shape `shape` stored as `src` into storage `dst`.
    `dst` may have a higher rank (the value is broadcast-aligned: size-1 axes are prepended)."""
    steps: list[Step] = []
    if src.flat is not None:
        steps += _unflatten_steps(src.flat, shape)
        src = Layout.source(len(shape))
    extra = dst.rank - len(shape)
    if extra < 0:
        raise ConversionError(f"cannot lay out a rank-{len(shape)} value as rank {dst.rank}", stage="rebuild-tf")
    if extra:
        shape = (1,) * extra + tuple(shape)
        src = Layout(tuple(range(extra)) + tuple(p + extra for p in src.perm))
        steps.append(Step("reshape", src.physical_shape(shape)))
    target = Layout(dst.perm)
    steps += _transpose_steps(src, target, shape)
    if dst.flat is not None:
        steps += _flatten_steps(dst.flat, shape)
    return _merge_reshapes(steps)


def _transpose_steps(src: Layout, dst: Layout, shape: tuple[Size, ...]) -> list[Step]:
    order = tuple(src.perm.index(p) for p in dst.perm)
    if order == tuple(range(len(order))):
        return []
    physical = src.physical_shape(shape)
    moved = [axis for axis in order if physical[axis] != 1]
    if moved == sorted(moved):  # only size-1 axes move: a reshape is enough
        return [Step("reshape", dst.physical_shape(shape))]
    return [Step("transpose", order)]


def _unflatten_steps(flat: FlatBlock, shape: tuple[Size, ...]) -> list[Step]:
    """Flat-permuted last axis -> PyTorch order (reshape, transpose, reshape)."""
    lead = tuple(shape[:-1])
    k = len(lead)
    inverse = tuple(int(i) for i in np.argsort(flat.perm))
    return [Step("reshape", lead + flat.physical_shape()),
            Step("transpose", tuple(range(k)) + tuple(k + i for i in inverse)),
            Step("reshape", tuple(shape))]


def _flatten_steps(flat: FlatBlock, shape: tuple[Size, ...]) -> list[Step]:
    """PyTorch order -> flat-permuted last axis."""
    lead = tuple(shape[:-1])
    k = len(lead)
    return [Step("reshape", lead + flat.shape), Step("transpose", tuple(range(k)) + tuple(k + p for p in flat.perm)),
            Step("reshape", tuple(shape))]


def _merge_reshapes(steps: list[Step]) -> list[Step]:
    merged: list[Step] = []
    for step in steps:
        if merged and step.kind == "reshape" and merged[-1].kind == "reshape":
            merged[-1] = step
        else:
            merged.append(step)
    return merged


def apply_steps(array: np.ndarray, steps: Sequence[Step]) -> np.ndarray:
    """Run conversion steps on a numpy array (weights are converted once, at rebuild time)."""
    for step in steps:
        if step.kind == "reshape":
            array = array.reshape([-1 if d is None else d for d in step.arg])
        else:
            array = array.transpose(step.arg)
    return array


# ---------------------------------------------------------------- layout rules for AXES ops

def same_layout(node: Node, layout: Layout) -> Layout | None:
    """Output laid out like the input (softmax, cat, clamp...)."""
    return layout


def reduce_rule(node: Node, layout: Layout) -> Layout | None:
    """Reductions over `dim`: keepdim keeps the layout, otherwise the reduced axes drop out."""
    dims = node.args.get("dim")
    rank = layout.rank
    if dims is None or dims == []:
        dims = list(range(rank))
    dims = [dims] if isinstance(dims, int) else dims
    if node.args.get("keepdim", False):
        return layout
    return drop_axes(layout, {d % rank for d in dims})


def drop_axes(layout: Layout, dropped: set[int]) -> Layout:
    """The layout left when source axes `dropped` are removed (renumbered, physical order kept)."""
    kept = sorted(set(range(layout.rank)) - dropped)
    renumber = {axis: i for i, axis in enumerate(kept)}
    return Layout(tuple(renumber[p] for p in layout.perm if p in renumber))


def permute_rule(node: Node, layout: Layout) -> Layout | None:
    """permute/transpose/t move no data: only the layout changes."""
    rank = layout.rank
    dims = permutation(node, rank)
    inverse = [0] * rank
    for out_axis, in_axis in enumerate(dims):
        inverse[in_axis] = out_axis
    return Layout(tuple(inverse[p] for p in layout.perm))


def permutation(node: Node, rank: int) -> list[int]:
    """The axis order a permute, transpose or t node gives its output: output axis i is input axis [i]."""
    if "dims" in node.args:
        return [d % rank for d in node.args["dims"]]
    dims = list(range(rank))
    if "dim0" in node.args:
        a, b = node.args["dim0"] % rank, node.args["dim1"] % rank
        dims[a], dims[b] = dims[b], dims[a]
    else:  # aten.t
        dims.reverse()
    return dims


def scalar_rule(node: Node, layout: Layout) -> Layout | None:
    """The output is a scalar (sym_size)."""
    return Layout(())


def select_rule(node: Node, layout: Layout) -> Layout | None:
    """select/index with an int: the indexed axis drops out."""
    return drop_axes(layout, {int(node.args["dim"]) % layout.rank})


def broadcast_rule(node: Node, layout: Layout) -> Layout | None:
    """expand/repeat: same rank keeps the layout; new leading axes need PyTorch order."""
    out = node.outputs[0]
    assert out is not None
    if out.rank == layout.rank:
        return layout
    return Layout.source(out.rank) if layout.is_source else None


def unsqueeze_rule(node: Node, layout: Layout) -> Layout | None:
    """The new axis is placed physically right after the axis before it in source order."""
    rank = layout.rank + 1
    dim = node.args["dim"] % rank
    shifted = [p + 1 if p >= dim else p for p in layout.perm]
    at = 0 if dim == 0 else shifted.index(dim - 1) + 1
    return Layout(tuple(shifted[:at] + [dim] + shifted[at:]))


def reshape_rule(node: Node, layout: Layout) -> Layout | None:
    """view/reshape/flatten. Merging or splitting axes that sit together (and in order) in storage keeps the
    data in place (`x.flatten(2)` of an NHWC map is free); flattening trailing axes stored in another order gives
    a flat-permuted last axis (absorbed by a following Linear); anything else needs PyTorch order. Dynamic sizes
    are compared as torch.export's symbols (`s0*s1` splits into `s0`, `s1`)."""
    src, out = next(node.tensor_args())[1].sizes, node.outputs[0].sizes
    if layout.is_source:
        return Layout.source(len(out))
    if len(src) == len(out) and all(map(same_size, src, out)):
        return layout
    grouped = _regroup(layout, _axis_groups(tuple(src), tuple(out)))
    return grouped if grouped is not None else _flat_rule(layout, tuple(src), tuple(out))


def _axis_groups(src: tuple[Size, ...], out: tuple[Size, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of source axes with runs of output axes of equal size (None when the shapes do not line up)."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src) and j < len(out):
        gi, go, ps, po = [i], [j], src[i], out[j]
        i, j = i + 1, j + 1
        while not same_size(ps, po):
            grow = _grow_side(ps, po)
            if grow == "src" and i < len(src):
                gi.append(i)
                ps = ps * src[i]
                i += 1
            elif grow == "out" and j < len(out):
                go.append(j)
                po = po * out[j]
                j += 1
            else:
                return None
        groups.append((gi, go))
    if any(not same_size(d, 1) for d in src[i:]) or any(not same_size(d, 1) for d in out[j:]) or not groups:
        return None
    groups[-1][0].extend(range(i, len(src)))
    groups[-1][1].extend(range(j, len(out)))
    return groups


def _grow_side(ps: Size, po: Size) -> str | None:
    """Which run to extend to make two partial products meet: the smaller one (static), the one the other is a
    whole multiple of (symbolic); None when neither can."""
    if ps is None or po is None:
        return None
    a, b = static_size(ps), static_size(po)
    if a is not None and b is not None:
        return "src" if a < b else "out"
    if size_ratio(po, ps) is not None:
        return "src"
    return "out" if size_ratio(ps, po) is not None else None


def _regroup(layout: Layout, groups: list[tuple[list[int], list[int]]] | None) -> Layout | None:
    """The output layout when every run of source axes is stored contiguously and in order."""
    if groups is None or layout.flat is not None:
        return None
    placed = []
    for gi, go in groups:
        positions = [layout.perm.index(a) for a in gi]
        if positions != list(range(positions[0], positions[0] + len(positions))):
            return None
        placed.append((positions[0], go))
    return Layout(tuple(axis for _, go in sorted(placed) for axis in go))


def _flat_rule(layout: Layout, src: tuple[Size, ...], out: tuple[Size, ...]) -> Layout | None:
    """Flattening the trailing axes of a permuted value: a flat-permuted last axis."""
    k = len(out) - 1
    if k < 0 or len(src) <= k or not all(map(same_size, src[:k], out[:k])) or layout.perm[:k] != tuple(range(k)):
        return None
    block = [static_size(d) for d in src[k:]]
    if any(d is None for d in block) or static_size(out[k]) != int(np.prod(block)):
        return None
    flat = FlatBlock(tuple(int(d) for d in block), tuple(p - k for p in layout.perm[k:]))
    if np.array_equal(flat.feature_order(), np.arange(len(flat.feature_order()))):
        return Layout.source(len(out))
    return Layout(tuple(range(len(out))), flat)


# ---------------------------------------------------------------- the pass

def assign_layouts(graph: Graph, registry: ConverterRegistry, input_layouts: Sequence[Layout],
                   output_layouts: Sequence[Layout]) -> None:
    """Give every value a layout, insert relayout nodes where needed, fold weight conversions into arrays."""
    _LayoutPass(graph, registry).run(input_layouts, output_layouts)


class _LayoutPass:
    def __init__(self, graph: Graph, registry: ConverterRegistry, taken: set[str] | None = None) -> None:
        self.graph = graph
        self.registry = registry
        self.nodes: list[Node] = []
        self.cache: dict[tuple[int, Layout], Value] = {}
        self.taken = taken if taken is not None else \
            {v.name for v in graph.inputs} | {o.name for n in graph.all_nodes() for o in n.outputs if o is not None}

    def run(self, input_layouts: Sequence[Layout], output_layouts: Sequence[Layout]) -> None:
        for value, layout in zip(self.graph.inputs, input_layouts):
            value.layout = layout
        for node in self.graph.nodes:
            spec = self.registry.lookup(node.target)
            if spec is None:
                raise ConversionError(f"no converter for {node.target}", stage="rebuild-tf")
            for sub in self.graph.subgraphs(node):  # branches read outer values as stored, return PyTorch order
                _LayoutPass(sub, self.registry, self.taken).run([], [Layout.source(v.rank) for v in sub.outputs])
            try:
                self._place(node, spec.layout, spec.rule)
            except BridgeError:
                raise
            except Exception as exc:  # noqa: BLE001 - a layout rule bug must still name its node
                raise node_failure(node, "choosing the TensorFlow layout of", exc) from exc
            self.nodes.append(node)
        for value in self.graph.outputs:
            if value.layout is None:  # a weight returned as it is
                value.layout = Layout.source(value.rank)
        self.graph.outputs = [self.ensure(v, lay, None) for v, lay in zip(self.graph.outputs, output_layouts)]
        self.graph.nodes = self.nodes

    # -- policies

    def _place(self, node: Node, policy: LayoutPolicy, rule: LayoutRule | None) -> None:
        tensors = [v for _, v in node.tensor_args() if v.dtype != SYMINT]  # sizes are ints, not laid out
        for value in tensors:
            if value.layout is None:  # weights start in PyTorch order
                value.layout = Layout.source(value.rank)
        acts = [v for v in tensors if not v.is_weight]
        if policy is LayoutPolicy.SOURCE or not tensors:
            self._require(node, lambda v: Layout.source(v.rank))
            self._set_outputs(node, None)
        elif policy is LayoutPolicy.CHANNELS_LAST:
            first = tensors[0]
            self._require(node, lambda v: Layout.channels_last(v.rank) if v is first else Layout.source(v.rank))
            self._set_outputs(node, Layout.channels_last(node.outputs[0].rank))
        elif policy is LayoutPolicy.ANY:
            self._place_elementwise(node, acts or tensors)
        elif policy is LayoutPolicy.FEATURES:
            self._place_features(node, tensors[0])
        else:
            self._place_axes(node, acts or tensors, rule or same_layout)

    def _place_elementwise(self, node: Node, acts: list[Value]) -> None:
        lead = max(acts, key=lambda v: v.rank)  # first of the highest rank
        out_rank = node.outputs[0].rank
        if out_rank != lead.rank:  # a weight of higher rank broadcasts the activation up: PyTorch order
            self._require(node, lambda v: Layout.source(v.rank))
            self._set_outputs(node, None)
            return
        self._require(node, lambda v: fit_layout(lead.layout, v))
        self._set_outputs(node, lead.layout)

    def _place_features(self, node: Node, first: Value) -> None:
        layout = first.layout
        keeps = layout.flat is not None or (layout.rank > 0 and layout.perm[-1] == layout.rank - 1)
        wanted = layout if keeps else Layout.source(first.rank)
        self._require(node, lambda v: wanted if v is first else Layout.source(v.rank))
        out = Layout.source(node.outputs[0].rank) if wanted.flat is not None else Layout(wanted.perm)
        self._set_outputs(node, out)

    def _place_axes(self, node: Node, acts: list[Value], rule: LayoutRule) -> None:
        first = acts[0]
        base = first.layout if first.layout.flat is None else Layout.source(first.rank)
        out = rule(node, base)
        if out is None:
            self._require(node, lambda v: Layout.source(v.rank))
            self._set_outputs(node, None)
            return
        self._require(node, lambda v: base if v.rank == base.rank else Layout.source(v.rank))
        self._set_outputs(node, out)

    # -- helpers

    def _require(self, node: Node, wanted: Callable[[Value], Layout]) -> None:
        """Replace each tensor argument by a version in the wanted layout (fold or relayout node)."""
        def fit(arg: Any) -> Any:
            return self.ensure(arg, wanted(arg), node) if isinstance(arg, Value) and arg.dtype != SYMINT else arg

        for key, arg in list(node.args.items()):
            if isinstance(arg, Value):
                node.args[key] = fit(arg)
            elif isinstance(arg, list) and any(isinstance(a, Value) for a in arg):
                node.args[key] = [fit(a) for a in arg]

    def _set_outputs(self, node: Node, first: Layout | None) -> None:
        """Output 0 (and outputs of the same rank: split's pieces) get `first`; others PyTorch order."""
        rank = node.outputs[0].rank if node.outputs and node.outputs[0] is not None else -1
        for out in node.outputs:
            if out is not None:
                out.layout = first if (first is not None and out.rank == rank) else Layout.source(out.rank)

    def ensure(self, value: Value, layout: Layout, consumer: Node | None) -> Value:
        """`value` stored as `layout`: itself, a folded weight, or the output of a (cached) relayout node."""
        assert value.layout is not None
        if value.layout == layout:
            return value
        key = (id(value), layout)
        if key in self.cache:
            return self.cache[key]
        steps = conversion_steps(value.layout, layout, value.sizes)
        if value.is_weight:
            result = self.graph.derive_weight(value, layout.name(), lambda a: apply_steps(a, steps), layout)
        else:
            result = self._relayout_node(value, layout, consumer)
        self.cache[key] = result
        return result

    def _relayout_node(self, value: Value, layout: Layout, consumer: Node | None) -> Value:
        shape = (1,) * (layout.rank - value.rank) + tuple(value.shape)
        sizes = (1,) * (layout.rank - value.rank) + tuple(value.sizes)
        path = consumer.module_path if consumer is not None else value.module_path
        name = py_identifier(f"{value.name}_{relayout_label(layout)}", self.taken)
        node = Node(name=name, target=RELAYOUT, args={"input": value, "layout": layout},
                    outputs=[], module_path=path, source=consumer.source if consumer is not None else "")
        out = Value(name, shape, value.dtype, module_path=path, layout=layout, producer=node, sizes=sizes)
        node.outputs = [out]
        self.nodes.append(node)
        return out


def relayout_label(layout: Layout) -> str:
    """How a conversion target is named in generated code: `nhwc`, `torch order`, `perm0213`..."""
    return "torch order" if layout.is_source else layout.name()


def fit_layout(lead: Layout, value: Value) -> Layout:
    """The layout `value` needs to combine elementwise (with broadcasting) with a value laid out as `lead`."""
    if lead.is_source or value.rank == 0:
        return Layout.source(value.rank)
    if lead.flat is not None:
        if value.shape[-1] == 1:
            return Layout.source(value.rank)
        return Layout(tuple(range(value.rank)), lead.flat)
    if value.rank == lead.rank or all(d == 1 for d in value.shape):
        return lead if value.rank == lead.rank else Layout.source(value.rank)
    return lead  # lower rank: broadcast-aligned to `lead`'s rank, then laid out
