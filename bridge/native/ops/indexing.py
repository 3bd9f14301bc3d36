"""Indexing: advanced indexing (x[:, [0, 2]], x[idx], x[i, j]), index_select, gather, flip and roll.

One index tensor becomes a GatherV2 on the indexed axis wherever that axis is stored, so an NHWC map indexed on
its channels stays NHWC; several index tensors become one GatherNd on a PyTorch-order tensor. PyTorch accepts
negative indices: constant indices are wrapped once at rebuild time, computed ones at run time (FloorMod).
gather is a GatherNd in the stored layout; roll is slices and a concat (TF.js has no Roll).
"""

from __future__ import annotations

import numpy as np

from bridge.native.codegen import OpContext, lit
from bridge.native.ir import Layout, Node, Value
from bridge.native.layout import same_layout
from bridge.native.registry import LayoutPolicy, converter

AXES = LayoutPolicy.AXES
_INT_DTYPES = ("int64", "int32", "int16", "int8")


def _present(node: Node) -> list[tuple[int, Value]]:
    """(source axis, index tensor) for each index given to aten.index (None slots are a full ':')."""
    return [(d, v) for d, v in enumerate(node.args["indices"]) if isinstance(v, Value)]


def _check_index(node: Node) -> str | None:
    present = _present(node)
    if not present:
        return "no index tensor"
    if any(v.dtype in ("bool", "uint8") for _, v in present):
        return "boolean mask index (data-dependent output shape)"
    if any(v.dtype not in _INT_DTYPES for _, v in present):
        return "non-integer index tensor"
    if len(present) > 1 and _broadcast(present) is None:
        return "index tensors that do not broadcast together"
    return None


def _broadcast(present: list[tuple[int, Value]]) -> list[int | None] | None:
    """The broadcast shape of the index tensors (None for a dynamic dim), None when they cannot broadcast."""
    rank = max(v.rank for _, v in present)
    shape: list[int | None] = []
    for i in range(rank):
        dims = {v.shape[i - rank + v.rank] for _, v in present if i - rank + v.rank >= 0} - {1}
        if len(dims) > 1:
            return None
        shape.append(dims.pop() if dims else 1)
    return shape


def _index_rule(node: Node, layout: Layout) -> Layout | None:
    """One index tensor on an activation: a gather on the indexed axis where it is stored; its dims take the
    axis's place. Anything else is done in PyTorch order."""
    out = node.outputs[0]
    assert out is not None
    if layout.is_source:
        return Layout.source(out.rank)
    src, present = node.args["self"], _present(node)
    if len(present) != 1 or src.is_weight or src.layout != layout or present[0][1].rank == src.rank:
        return None
    dim, k = present[0][0], present[0][1].rank

    def moved(axis: int) -> int:
        return axis if axis < dim else axis + k - 1

    at = layout.perm.index(dim)
    perm = [moved(p) for p in layout.perm[:at]] + [dim + i for i in range(k)] + \
        [moved(p) for p in layout.perm[at + 1:]]
    return Layout(tuple(perm))


def _index_expr(ctx: OpContext, value: Value, size: int | None, size_expr: str) -> str:
    """An index tensor with negative entries wrapped into [0, size): folded into constant indices, FloorMod on
    computed ones."""
    if value.is_weight and size is not None:
        return ctx.transformed(value, "wrapped", lambda a: np.mod(a, size))
    expr = ctx.transformed(value, "index", lambda a: a, tf_fn=lambda e: e)
    return expr if _counts_up(value) else f"tf.math.floormod({expr}, {size_expr})"


def _counts_up(value: Value) -> bool:
    """True for an index made by arange from a non-negative start with a positive step (x[torch.arange(b), i])."""
    node = value.producer
    if node is None or not node.target.startswith("aten.arange."):
        return False
    start, step = node.args.get("start", 0), node.args.get("step", 1)
    return isinstance(start, int) and isinstance(step, int) and start >= 0 and step > 0


def _size_expr(ctx: OpContext, dim: int, index: Value) -> tuple[int | None, str]:
    """(static size or None, TF expression in the index's dtype) of source axis `dim` of `self`."""
    size = ctx.value("self").shape[dim]
    if size is not None:
        return size, str(size)
    out_type = "tf.int32" if index.dtype == "int32" else "tf.int64"
    return None, f"tf.shape({ctx.t('self')}, out_type={out_type})[{ctx.axis(dim, 'self')}]"


@converter("aten.index.Tensor", layout=AXES, rule=_index_rule, check=_check_index,
           emits=("GatherV2", "GatherNd", "Pack", "BroadcastTo", "BroadcastArgs", "Transpose", "FloorMod"))
def index(ctx: OpContext, node: Node) -> str:
    """aten::index.Tensor(Tensor self, Tensor?[] indices) -> Tensor   (advanced indexing: x[:, idx], x[i, j];
    None slots stand for a leading ':')"""
    x, src = ctx.t("self"), ctx.value("self")
    present = _present(node)
    if len(present) == 1:
        dim, value = present[0]
        size, size_expr = _size_expr(ctx, dim, value)
        return f"tf.gather({x}, {_index_expr(ctx, value, size, size_expr)}, axis={ctx.axis(dim, 'self')})"
    # several index tensors: the layout pass gave everything PyTorch order (see _index_rule)
    dims = [d for d, _ in present]
    rest = [d for d in range(src.rank) if d not in dims]
    bshape = _broadcast(present)
    assert bshape is not None
    same = len({tuple(v.shape) for _, v in present}) == 1
    target = lit(bshape)
    if not same and None in bshape:  # dynamic: the broadcast shape at run time (BroadcastArgs)
        shapes = [f"tf.constant({list(v.shape)}, tf.int64)" if v.is_weight else
                  f"tf.shape({ctx.transformed(v, 'index', lambda a: a, tf_fn=lambda e: e)}, out_type=tf.int64)"
                  for _, v in present]
        target = shapes[0]
        for other in shapes[1:]:
            target = f"tf.broadcast_dynamic_shape({target}, {other})"
        target = ctx.let(target, "bshape")
    parts = []
    for dim, value in present:
        size, size_expr = _size_expr(ctx, dim, value)
        expr = _index_expr(ctx, value, size, size_expr)
        if value.dtype != "int64":
            expr = f"tf.cast({expr}, tf.int64)"
        parts.append(expr if same else f"tf.broadcast_to({expr}, {target})")
    if dims != list(range(len(dims))):
        x = ctx.let(f"tf.transpose({x}, {dims + rest})", "moved")
    coords = ctx.let(f"tf.stack([{', '.join(parts)}], axis=-1)", "coords")
    result = f"tf.gather_nd({x}, {coords})"
    adjacent = dims == list(range(dims[0], dims[0] + len(dims)))
    if adjacent and dims[0] > 0:  # PyTorch puts the indexed dims where the (adjacent) indexed axes were
        nb, before = len(bshape), dims[0]
        order = list(range(nb, nb + before)) + list(range(nb)) + list(range(nb + before, nb + len(rest)))
        result = f"tf.transpose({ctx.let(result, 'gathered')}, {order})"
    return result


@converter("aten.index_select.default", layout=AXES, rule=same_layout, emits=("GatherV2",))
def index_select(ctx: OpContext, node: Node) -> str:
    """aten::index_select(Tensor self, int dim, Tensor index) -> Tensor"""
    idx = ctx.t("index")
    if ctx.value("index").rank == 0:
        idx = f"tf.reshape({idx}, [1])"
    return f"tf.gather({ctx.t('self')}, {idx}, axis={ctx.axis(int(ctx.arg('dim')), 'self')})"


@converter("aten.gather.default", layout=AXES, rule=same_layout, emits=("GatherNd", "Range", "Reshape", "BroadcastTo",
                                                                     "Pack", "Shape"))
def gather(ctx: OpContext, node: Node) -> str:
    """aten::gather(Tensor self, int dim, Tensor index, *, bool sparse_grad=False) -> Tensor   (a GatherNd whose
    coordinates are the index on the gathered axis and each position's own coordinate on the others; index and
    input share their layout, so it runs wherever they are stored. Not GatherV2 with batch_dims: TF.js's wasm
    kernel reads out of bounds with it)"""
    x, idx, index = ctx.t("self"), ctx.t("index"), ctx.value("index")
    rank = index.rank
    if rank == 0:
        return x
    axis = ctx.axis(int(ctx.arg("dim")), "self")
    shape = ctx.layout("index").physical_shape(index.shape)
    static = all(d is not None for d in shape)
    full = str(list(shape)) if static else ctx.let(f"tf.shape({idx}, out_type=tf.int64)", "shape")
    parts = []
    for a in range(rank):
        if a == axis:
            parts.append(idx if index.dtype == "int64" else f"tf.cast({idx}, tf.int64)")
            continue
        size = shape[a] if shape[a] is not None else f"{full}[{a}]"
        line = [1] * rank
        line[a] = -1
        parts.append(f"tf.broadcast_to(tf.reshape(tf.range({size}, dtype=tf.int64), {line}), {full})")
    coords = ctx.let(f"tf.stack([{', '.join(parts)}], axis=-1)", "coords")
    return f"tf.gather_nd({x}, {coords})"


@converter("aten.flip.default", layout=AXES, rule=same_layout, emits=("ReverseV2",))
def flip(ctx: OpContext, node: Node) -> str:
    """aten::flip(Tensor self, int[] dims) -> Tensor"""
    axes = sorted(ctx.axis(int(d), "self") for d in ctx.arg("dims", []))
    return f"tf.reverse({ctx.t('self')}, axis={axes})" if axes else ctx.t("self")


def _roll_rule(node: Node, layout: Layout) -> Layout | None:
    return layout if node.args.get("dims") or layout.is_source else None  # flattened roll: PyTorch order


def _check_roll(node: Node) -> str | None:
    src = node.args["self"]
    dims = list(node.args.get("dims") or [])
    sizes = [src.shape[int(d) % src.rank] for d in dims] if dims else list(src.shape)
    if any(s is None for s in sizes):
        return "roll along a dynamic axis"
    if any(isinstance(s, Value) for s in node.args["shifts"]):
        return "roll by a computed shift"
    return None


@converter("aten.roll.default", layout=AXES, rule=_roll_rule, check=_check_roll,
           emits=("StridedSlice", "ConcatV2", "Reshape"))
def roll(ctx: OpContext, node: Node) -> str:
    """aten::roll(Tensor self, SymInt[1] shifts, int[1] dims=[]) -> Tensor   (TF.js has no Roll: two slices and
    a concat per rolled axis)"""
    src, x = ctx.value("self"), ctx.t("self")
    shifts, dims = [int(s) for s in ctx.arg("shifts")], [int(d) for d in ctx.arg("dims", [])]
    if not dims:  # roll of the flattened tensor (PyTorch order, see _roll_rule)
        total = int(np.prod(src.shape))
        flat = ctx.let(f"tf.reshape({x}, [-1])", "flat")
        rolled = _roll_axis(ctx, flat, 0, 1, total, shifts[0], last=False)
        return f"tf.reshape({rolled}, {list(src.shape)})"
    for i, (shift, dim) in enumerate(zip(shifts, dims)):
        size = src.shape[dim % src.rank]
        assert size is not None
        x = _roll_axis(ctx, x, ctx.axis(dim, "self"), src.rank, size, shift, last=i == len(dims) - 1)
    return x


def _roll_axis(ctx: OpContext, x: str, axis: int, rank: int, size: int, shift: int, *, last: bool) -> str:
    s = shift % size if size else 0
    if s == 0:
        return x
    head, tail = [":"] * rank, [":"] * rank
    head[axis], tail[axis] = f"{size - s}:", f":{size - s}"
    expr = f"tf.concat([{x}[{', '.join(head)}], {x}[{', '.join(tail)}]], axis={axis})"
    return expr if last else ctx.let(expr, "rolled")
